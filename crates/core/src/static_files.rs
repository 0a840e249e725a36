//! Pure decisions for serving files (static routes): which file a path names, content types, ETags, conditional requests, ranges, encodings and Cache-Control patterns.

use std::time::{SystemTime, UNIX_EPOCH};

/// Why a request path names no file that may be served (answered 404, never a fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a `.` or `..` segment")]
    DotSegment,
    #[error("a segment starting with `.` (dotfile)")]
    Dotfile,
    #[error("an encoded `/`, `\\` or NUL in a segment")]
    EncodedSeparator,
    #[error("a malformed percent-escape")]
    BadEscape,
    #[error("outside the route's prefix")]
    OutsidePrefix,
}

/// The file-system segments a request path names under a static route's root: `path` (the
/// normalised request path) with the route's `prefix` taken off when `strip` (nginx `alias`) or
/// kept (nginx `root`), each segment percent-decoded. An empty list names the root itself.
pub fn segments(path: &str, prefix: &str, strip: bool) -> Result<Vec<String>, Refused> {
    let rel = if strip && prefix != "/" {
        match path.strip_prefix(prefix) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => return Err(Refused::OutsidePrefix),
        }
    } else {
        path
    };
    let mut out = Vec::new();
    for raw in rel.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw)?;
        if seg == "." || seg == ".." {
            return Err(Refused::DotSegment);
        }
        if seg.starts_with('.') {
            return Err(Refused::Dotfile);
        }
        if seg.contains(['/', '\\', '\0']) {
            return Err(Refused::EncodedSeparator);
        }
        out.push(seg);
    }
    Ok(out)
}

/// Every `%XX` decoded; the result must be UTF-8 (file names on the web are).
fn percent_decode(s: &str) -> Result<String, Refused> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(Refused::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| Refused::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| Refused::BadEscape)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Refused::BadEscape)
}

/// The content type of a file by its extension (what nginx's `mime.types` says for the types a
/// web app serves); unknown: `application/octet-stream`.
pub fn content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) if !ext.contains('/') => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "html" | "htm" | "shtml" => "text/html",
        "css" => "text/css",
        "js" | "mjs" | "cjs" => "text/javascript",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "xml" => "text/xml",
        "rss" => "application/rss+xml",
        "atom" => "application/atom+xml",
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "ics" => "text/calendar",
        "svg" | "svgz" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "bmp" => "image/x-ms-bmp",
        "tif" | "tiff" => "image/tiff",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "m4a" => "audio/x-m4a",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "vtt" => "text/vtt",
        _ => "application/octet-stream",
    }
}

/// nginx's ETag: `"<mtime seconds hex>-<size hex>"`.
pub fn etag(modified: SystemTime, size: u64) -> String {
    format!("\"{:x}-{:x}\"", unix_seconds(modified), size)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `Last-Modified` in the IMF-fixdate form.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Whether an entity tag of `If-None-Match` / `If-Range` names `etag` (weak comparison: `W/`
/// ignored; `*` matches any).
fn etag_listed(header: &str, etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// Whether a GET/HEAD is answered 304: `If-None-Match` names the ETag, or (only when there is no
/// `If-None-Match`, RFC 9110 §13.2.2) `If-Modified-Since` is not older than the file.
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: &str,
    modified: SystemTime,
) -> bool {
    if let Some(inm) = if_none_match {
        return etag_listed(inm, etag);
    }
    if_modified_since
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .is_some_and(|since| unix_seconds(modified) <= unix_seconds(since))
}

/// What a `Range` header asks for, against a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No (usable) range: the whole representation, 200. Multiple ranges are answered this way
    /// too (allowed by RFC 9110 §14.2).
    Full,
    /// Bytes `start..=end`: 206 with `Content-Range`.
    Part { start: u64, end: u64 },
    /// No byte of the range exists: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n` (one range; anything else, or another unit, is ignored).
pub fn range(header: Option<&str>, size: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), num(first), num(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        (false, Some(start), end) if last.is_empty() || end.is_some() => {
            if start >= size {
                return Range::Unsatisfiable;
            }
            let end = end.map_or(size - 1, |e| e.min(size - 1));
            if end < start {
                // An invalid range (last < first) is ignored (RFC 9110 §14.1.1).
                Range::Full
            } else {
                Range::Part { start, end }
            }
        }
        _ => Range::Full,
    }
}

/// Whether a `Range` applies under `If-Range` (absent: yes; an ETag or a date that still
/// matches: yes; else the whole file is sent).
pub fn if_range_holds(if_range: Option<&str>, etag: &str, modified: SystemTime) -> bool {
    let Some(v) = if_range.map(str::trim) else {
        return true;
    };
    if v.starts_with('"') {
        // Strong comparison only.
        return v == etag;
    }
    if v.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(v).is_ok_and(|d| unix_seconds(d) == unix_seconds(modified))
}

/// Whether `Accept-Encoding` accepts `coding` (`br`, `gzip`): named with q > 0, or `*` with
/// q > 0 and not named with q = 0.
pub fn accepts(accept_encoding: Option<&str>, coding: &str) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").map(str::trim))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = q > 0.0;
        }
    }
    star
}

/// A Cache-Control pattern: `*` any characters but `/`, `**` any characters, `?` one character
/// but `/`, `{a,b}` alternatives (not nested). A pattern without `/` matches the file name; one
/// with `/` (starting with it) matches the whole path under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The alternatives, expanded.
    forms: Vec<String>,
    whole_path: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("an empty pattern".into());
        }
        let whole_path = pattern.contains('/');
        if whole_path && !pattern.starts_with('/') {
            return Err(format!(
                "pattern \"{pattern}\" has a `/`: it must start with `/` (a path under the root), or name files without one"
            ));
        }
        let forms = match (pattern.find('{'), pattern.find('}')) {
            (None, None) => vec![pattern.to_string()],
            (Some(open), Some(close)) if open < close => {
                let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
                if tail.contains(['{', '}']) || head.contains('}') {
                    return Err(format!("pattern \"{pattern}\" has more than one `{{...}}`"));
                }
                pattern[open + 1..close]
                    .split(',')
                    .map(|alt| format!("{head}{alt}{tail}"))
                    .collect()
            }
            _ => return Err(format!("pattern \"{pattern}\" has an unbalanced `{{`")),
        };
        Ok(Glob { forms, whole_path })
    }

    /// Whether `path` (under the root, starting with `/`) matches.
    pub fn matches(&self, path: &str) -> bool {
        let subject = if self.whole_path {
            path
        } else {
            path.rsplit('/').next().unwrap_or(path)
        };
        self.forms
            .iter()
            .any(|f| glob_match(f.as_bytes(), subject.as_bytes()))
    }
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            (0..=s.len()).any(|i| glob_match(&p[2..], &s[i..]))
        }
        Some(b'*') => {
            let run = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
            (0..=run).any(|i| glob_match(&p[1..], &s[i..]))
        }
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob_match(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn segments_refuse_traversal_and_dotfiles() {
        assert_eq!(
            segments("/a/b.js", "/", false),
            Ok(vec!["a".into(), "b.js".into()])
        );
        assert_eq!(segments("/", "/", false), Ok(vec![]));
        assert_eq!(segments("/app/x", "/app", true), Ok(vec!["x".into()]));
        assert_eq!(segments("/app", "/app", true), Ok(vec![]));
        assert_eq!(
            segments("/app/x", "/app", false),
            Ok(vec!["app".into(), "x".into()])
        );
        assert_eq!(segments("/a%20b", "/", false), Ok(vec!["a b".into()]));
        assert_eq!(segments("/../etc", "/", false), Err(Refused::DotSegment));
        assert_eq!(
            segments("/%2e%2e/etc", "/", false),
            Err(Refused::DotSegment)
        );
        assert_eq!(
            segments("/a%2F..%2Fb", "/", false),
            Err(Refused::EncodedSeparator)
        );
        assert_eq!(
            segments("/a%2fb", "/", false),
            Err(Refused::EncodedSeparator)
        );
        assert_eq!(
            segments("/a%5cb", "/", false),
            Err(Refused::EncodedSeparator)
        );
        assert_eq!(
            segments("/a%00", "/", false),
            Err(Refused::EncodedSeparator)
        );
        assert_eq!(segments("/.env", "/", false), Err(Refused::Dotfile));
        assert_eq!(segments("/.git/config", "/", false), Err(Refused::Dotfile));
        assert_eq!(segments("/a/%2egit", "/", false), Err(Refused::Dotfile));
        assert_eq!(segments("/a%zz", "/", false), Err(Refused::BadEscape));
        assert_eq!(
            segments("/other", "/app", true),
            Err(Refused::OutsidePrefix)
        );
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html");
        assert_eq!(content_type("/a/app.MJS"), "text/javascript");
        assert_eq!(content_type("x.woff2"), "font/woff2");
        assert_eq!(content_type("x.wasm"), "application/wasm");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }

    #[test]
    fn ranges() {
        let r = |h: &str| range(Some(h), 100);
        assert_eq!(r("bytes=0-9"), Range::Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), Range::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10"), Range::Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000"), Range::Part { start: 0, end: 99 });
        assert_eq!(r("bytes=50-1000"), Range::Part { start: 50, end: 99 });
        assert_eq!(r("bytes=100-"), Range::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Range::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Range::Full);
        assert_eq!(r("bytes=9-1"), Range::Full);
        assert_eq!(r("items=0-1"), Range::Full);
        assert_eq!(r("bytes=x-1"), Range::Full);
        assert_eq!(range(None, 100), Range::Full);
        assert_eq!(range(Some("bytes=0-"), 0), Range::Unsatisfiable);
    }

    #[test]
    fn conditionals() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let tag = etag(t, 1024);
        assert_eq!(tag, "\"6553f100-400\"");
        assert!(not_modified(Some(&tag), None, &tag, t));
        assert!(not_modified(
            Some(&format!("\"x\", W/{tag}")),
            None,
            &tag,
            t
        ));
        assert!(not_modified(Some("*"), None, &tag, t));
        assert!(!not_modified(Some("\"x\""), Some(&http_date(t)), &tag, t));
        assert!(not_modified(None, Some(&http_date(t)), &tag, t));
        let earlier = http_date(t - Duration::from_secs(1));
        assert!(!not_modified(None, Some(&earlier), &tag, t));
        assert!(!not_modified(None, Some("garbage"), &tag, t));
        assert!(if_range_holds(None, &tag, t));
        assert!(if_range_holds(Some(&tag), &tag, t));
        assert!(!if_range_holds(Some("\"other\""), &tag, t));
        assert!(if_range_holds(Some(&http_date(t)), &tag, t));
        assert!(!if_range_holds(Some(&earlier), &tag, t));
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts(Some("gzip, deflate, br"), "br"));
        assert!(accepts(Some("gzip;q=0.5"), "gzip"));
        assert!(!accepts(Some("gzip;q=0"), "gzip"));
        assert!(!accepts(Some("gzip"), "br"));
        assert!(accepts(Some("*"), "br"));
        assert!(!accepts(Some("*, br;q=0"), "br"));
        assert!(!accepts(None, "gzip"));
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).expect(p);
        assert!(g("*.js").matches("/assets/app.js"));
        assert!(!g("*.js").matches("/assets/app.json"));
        assert!(g("*.{js,css}").matches("/a.css"));
        assert!(g("index.html").matches("/index.html"));
        assert!(g("index.html").matches("/docs/index.html"));
        assert!(g("/index.html").matches("/index.html"));
        assert!(!g("/index.html").matches("/docs/index.html"));
        assert!(g("/assets/**").matches("/assets/a/b/c.png"));
        assert!(!g("/assets/*").matches("/assets/a/b.png"));
        assert!(g("app.????.js").matches("/app.1a2b.js"));
        assert!(Glob::new("assets/*.js").is_err());
        assert!(Glob::new("*.{js").is_err());
        assert!(Glob::new("").is_err());
    }
}
