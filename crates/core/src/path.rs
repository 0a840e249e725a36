//! One normalised request path for every decision, so that `/v1/./auth` and `/v1/%61uth` cannot slip past the `/v1/auth` route.
//!
//! The steps, in order (see `docs/config.md`, "Path normalisation"):
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded and the hex
//!    digits of every other escape are upper-cased (`%2f` → `%2F`, never decoded to `/`);
//! 2. dot segments are removed (RFC 3986 §5.2.4), so `..` never climbs above the root;
//! 3. repeated slashes are merged (nginx's `merge_slashes`, on unless configured off).
//!
//! A backslash (raw or `%5C`), a `..;` segment (the path-parameter trick some servlet containers
//! read as `..`) or a malformed escape is refused: the request is answered 400.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    #[error("backslash in the path")]
    Backslash,
    #[error("\"..;\" segment in the path")]
    DotDotSemicolon,
}

/// The normalised form of `path` (the path component only, without the query).
///
/// Borrows `path` when it is already normal, which is the common case. A path that does not
/// start with `/` (the asterisk form `*`, or empty) is returned as it is.
pub fn normalize(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    if is_normal(path.as_bytes(), merge_slashes)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    let mut out = remove_dot_segments(&decoded)?;
    if merge_slashes {
        out = merge_repeated_slashes(out);
    }
    // Every byte pushed is ASCII: unreserved characters, '/', '%' and upper-case hex digits are
    // the only bytes decoding can produce, and the rest were copied from a `&str`.
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// Whether `path` needs no change; errors on the refused forms. One pass, no allocation.
fn is_normal(p: &[u8], merge_slashes: bool) -> Result<bool, PathError> {
    let mut normal = true;
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                // Normal when it is an upper-case escape of a reserved character.
                let hex = (p.get(i + 1).copied(), p.get(i + 2).copied());
                let decoded = match hex {
                    (Some(h), Some(l)) if !h.is_ascii_lowercase() && !l.is_ascii_lowercase() => {
                        hex_value(h).zip(hex_value(l)).map(|(h, l)| h << 4 | l)
                    }
                    _ => None,
                };
                match decoded {
                    Some(b'\\') => return Err(PathError::Backslash),
                    Some(c) if !is_unreserved(c) => {}
                    _ => normal = false,
                }
            }
            b'/' => {
                let next = p.get(i + 1).copied();
                if merge_slashes && next == Some(b'/') {
                    normal = false;
                }
                // "/." starts a dot segment when followed by '/', end, or ".": check precisely.
                if next == Some(b'.') {
                    let rest = &p[i + 1..];
                    let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                    let seg = &rest[..seg_end];
                    if seg == b"." || seg == b".." {
                        normal = false;
                    }
                    if seg.starts_with(b"..;") {
                        return Err(PathError::DotDotSemicolon);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(normal)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: decodes escaped unreserved characters, upper-cases the hex of the other escapes.
fn decode_unreserved(p: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    p.get(i + 1).copied().and_then(hex_value),
                    p.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let c = hi << 4 | lo;
                if c == b'\\' {
                    return Err(PathError::Backslash);
                }
                if is_unreserved(c) {
                    out.push(c);
                } else {
                    out.push(b'%');
                    out.push(p[i + 1].to_ascii_uppercase());
                    out.push(p[i + 2].to_ascii_uppercase());
                }
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Step 2: RFC 3986 §5.2.4 over an absolute path, segment by segment.
fn remove_dot_segments(p: &[u8]) -> Result<Vec<u8>, PathError> {
    // Segments after the leading '/'; an empty segment is kept (it is `//`, handled in step 3).
    let mut stack: Vec<&[u8]> = Vec::new();
    let body = &p[1..];
    let segments: Vec<&[u8]> = body.split(|&c| c == b'/').collect();
    let last = segments.len() - 1;
    // A trailing "." or ".." leaves the path ending in '/', as the RFC's algorithm does.
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        if seg.starts_with(b"..;") {
            return Err(PathError::DotDotSemicolon);
        }
        match *seg {
            b"." => trailing_slash = i == last,
            b".." => {
                stack.pop();
                trailing_slash = i == last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for seg in &stack {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// Step 3: `//` and longer runs become one `/`.
fn merge_repeated_slashes(mut p: Vec<u8>) -> Vec<u8> {
    p.dedup_by(|a, b| *a == b'/' && *b == b'/');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize(p, true).expect("valid").into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e",
            "/v1/auth/login",
            "*",
            "",
        ] {
            assert!(
                matches!(normalize(p, true), Ok(Cow::Borrowed(_))),
                "{p} should be borrowed"
            );
        }
    }

    #[test]
    fn bypass_forms_reach_the_same_path() {
        for p in [
            "/v1/./auth/login",
            "//v1/auth/login",
            "/v1/%61uth/login",
            "/v1/x/../auth/login",
            "/v1//auth/login",
            "/v1/auth/./login",
            "/v1/%2e/auth/login",
            "/v1/x/%2E%2E/auth/login",
            "/./v1/auth/login",
            "/v1/auth///login",
        ] {
            assert_eq!(norm(p), "/v1/auth/login", "{p}");
        }
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/a/b/c/./../../g"), "/a/g");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/."), "/a/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/."), "/");
        assert_eq!(norm("/a/..b/c"), "/a/..b/c", "not a dot segment");
    }

    #[test]
    fn escapes_are_decoded_only_when_unreserved() {
        assert_eq!(norm("/%7euser/%41%2d"), "/~user/A-");
        assert_eq!(
            norm("/a%2fb"),
            "/a%2Fb",
            "an escaped slash is never decoded"
        );
        assert_eq!(norm("/a%2Fb/../c"), "/c", "%2F is not a separator");
        assert_eq!(norm("/%e2%82%ac"), "/%E2%82%AC");
        assert_eq!(norm("/a%20b"), "/a%20b");
    }

    #[test]
    fn merge_slashes_can_be_off() {
        assert_eq!(
            normalize("//a///b", false).expect("valid").as_ref(),
            "//a///b"
        );
        assert_eq!(
            normalize("//a/./b", false).expect("valid").as_ref(),
            "//a/b"
        );
        assert_eq!(norm("//a///b"), "/a/b");
    }

    #[test]
    fn refused_forms() {
        assert_eq!(normalize("/a\\b", true), Err(PathError::Backslash));
        assert_eq!(normalize("/a%5cb", true), Err(PathError::Backslash));
        assert_eq!(normalize("/a%5C..%5Cb", true), Err(PathError::Backslash));
        assert_eq!(normalize("/a/..;/b", true), Err(PathError::DotDotSemicolon));
        assert_eq!(normalize("/..;x/b", true), Err(PathError::DotDotSemicolon));
        assert_eq!(
            normalize("/a/%2e%2e;/b", true),
            Err(PathError::DotDotSemicolon)
        );
        assert_eq!(normalize("/a%zz", true), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4", true), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%", true), Err(PathError::BadEscape));
    }

    #[test]
    fn normalising_is_idempotent() {
        for p in [
            "/a/../b//c/%61%2f",
            "/x/%2e%2e/%2E/y",
            "///",
            "/a/b/c/./../../g",
            "/%7E/./.",
        ] {
            let once = norm(p);
            assert_eq!(norm(&once), once, "{p}");
            assert!(matches!(normalize(&once, true), Ok(Cow::Borrowed(_))));
        }
    }
}
