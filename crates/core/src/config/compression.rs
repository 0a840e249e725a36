//! A route's `compression = true | false | { types, min_length, level }` (nginx's `gzip_types`, `gzip_min_length`, `gzip_comp_level`) and the per-response decision.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

use super::values::{Bytes, Text};
use super::Validator;

/// Responses shorter than this (by Content-Length) are sent as they are. 256 bytes: below that
/// gzip's 18 bytes of framing and the lost window of a fresh stream eat most of the gain, while
/// the short JSON answers APIs send (a few hundred bytes) still shrink. nginx's own default is 20,
/// its documentation's example 1000; a response without Content-Length (streamed) is compressed
/// whatever its length, as in nginx.
pub const DEFAULT_MIN_LENGTH: u64 = 256;

/// The level for gzip, brotli and zstd unless `level` says otherwise (today's fixed level).
pub const DEFAULT_LEVEL: u32 = 5;

/// The types compressed unless `types` says otherwise: nginx's `text/html` and what every nginx
/// config adds to it (text, scripts, JSON, XML, SVG, uncompressed fonts). `text/event-stream` is
/// left out on purpose: a compressor holds back a stream's events.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "text/csv",
    "text/markdown",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/ld+json",
    "application/problem+json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "application/vnd.ms-fontobject",
    "image/svg+xml",
    "font/ttf",
    "font/otf",
    "font/eot",
];

/// `compression` as written: a bool, or a table whose left-out keys keep what the route inherits.
#[derive(Debug, Clone, Default)]
pub struct RawCompression {
    pub enabled: Option<bool>,
    pub types: Option<Vec<Spanned<Text>>>,
    pub min_length: Option<Spanned<Bytes>>,
    pub level: Option<Spanned<LevelSpec>>,
}

/// `level = 5` (every algorithm) or `level = { gzip = 6, br = 4, zstd = 3 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelSpec {
    pub all: Option<u32>,
    pub gzip: Option<u32>,
    pub br: Option<u32>,
    pub zstd: Option<u32>,
}

impl<'de> Deserialize<'de> for LevelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Per {
            gzip: Option<u32>,
            br: Option<u32>,
            zstd: Option<u32>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            All(u32),
            Per(Per),
        }
        match Either::deserialize(d).map_err(|_| {
            de::Error::custom("expected a level (e.g. 5) or a table { gzip, br, zstd }")
        })? {
            Either::All(n) => Ok(LevelSpec {
                all: Some(n),
                ..LevelSpec::default()
            }),
            Either::Per(p) => Ok(LevelSpec {
                all: None,
                gzip: p.gzip,
                br: p.br,
                zstd: p.zstd,
            }),
        }
    }
}

impl<'de> Deserialize<'de> for RawCompression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCompression;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a table { types, min_length, level }")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<RawCompression, E> {
                Ok(RawCompression {
                    enabled: Some(b),
                    ..RawCompression::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawCompression, A::Error> {
                let mut out = RawCompression::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "enabled" => out.enabled = Some(map.next_value()?),
                        "types" => out.types = Some(map.next_value()?),
                        "min_length" => out.min_length = Some(map.next_value()?),
                        "level" => out.level = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["enabled", "types", "min_length", "level"],
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// Compression levels per algorithm (pingora's gzip, brotli and zstd compressors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Levels {
    pub gzip: u32,
    pub br: u32,
    pub zstd: u32,
}

/// How a route with compression on compresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompressionSettings {
    /// Media types (`type/subtype`, or `type/*`), lowercase.
    pub types: Vec<String>,
    /// Responses with a Content-Length below this are not compressed.
    pub min_length: u64,
    pub level: Levels,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
            min_length: DEFAULT_MIN_LENGTH,
            level: Levels {
                gzip: DEFAULT_LEVEL,
                br: DEFAULT_LEVEL,
                zstd: DEFAULT_LEVEL,
            },
        }
    }
}

/// Whether a media type (lowercase, without parameters) is one that is never compressed:
/// images but SVG, audio, video, archives and other already-compressed data, opaque bytes, gRPC.
pub fn never_compressed(media: &str) -> bool {
    let (top, sub) = media.split_once('/').unwrap_or((media, ""));
    match top {
        "image" => sub != "svg+xml",
        "audio" | "video" => true,
        "font" => sub == "woff" || sub == "woff2",
        "application" => {
            sub == "octet-stream"
                || sub.starts_with("grpc")
                || sub.contains("zip")
                || sub.contains("compress")
                || sub.contains("zstd")
                || matches!(
                    sub,
                    "x-tar"
                        | "x-bzip"
                        | "x-bzip2"
                        | "x-xz"
                        | "x-7z-compressed"
                        | "x-rar-compressed"
                        | "vnd.rar"
                        | "java-archive"
                        | "x-lzma"
                        | "x-lz4"
                        | "pdf"
                        | "font-woff"
                )
        }
        _ => false,
    }
}

/// The media type of a Content-Type value: before any `;`, trimmed, lowercase.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl CompressionSettings {
    /// Whether a response of this Content-Type, Content-Length and Content-Encoding is compressed
    /// (when the client accepts an encoding): a listed type, not a never-compressed one, long
    /// enough, not encoded already.
    pub fn compresses(
        &self,
        content_type: Option<&str>,
        content_length: Option<u64>,
        encoded: bool,
    ) -> bool {
        if encoded || content_length.is_some_and(|n| n < self.min_length) {
            return false;
        }
        let Some(media) = content_type.map(media_type) else {
            return false;
        };
        if never_compressed(&media) {
            return false;
        }
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(top) => media.split_once('/').is_some_and(|(mt, _)| mt == top),
            None => *t == media,
        })
    }
}

/// Top-level types pingora's compressor takes at all (it refuses anything else).
const COMPRESSIBLE_TOPS: &[&str] = &["text", "application", "font", "image"];

impl Validator {
    /// Applies a route's (or `[defaults]`') `compression` over what it inherits: the switch and
    /// the settings.
    pub(super) fn compression(
        &mut self,
        raw: &Spanned<RawCompression>,
        on: &mut bool,
        settings: &mut CompressionSettings,
    ) {
        let r = raw.get_ref();
        // A bare bool, or a table (on unless it says `enabled = false`).
        *on = r.enabled.unwrap_or(true);
        if let Some(types) = &r.types {
            let mut out = Vec::new();
            for t in types {
                let media = media_type(t.get_ref());
                let (top, sub) = media.split_once('/').unwrap_or((&media, ""));
                let valid = !top.is_empty()
                    && !sub.is_empty()
                    && http::HeaderValue::from_str(&media).is_ok()
                    && !media.contains([' ', ','])
                    && (sub == "*" || !sub.contains('*'));
                if !valid || media != t.get_ref().trim().to_ascii_lowercase() {
                    self.error(
                        t.span(),
                        format!(
                            "\"{}\" is not a media type (expected e.g. \"text/html\" or \"text/*\")",
                            t.get_ref()
                        ),
                    );
                } else if sub != "*" && never_compressed(&media) {
                    self.error(
                        t.span(),
                        format!("\"{media}\" is never compressed (images but SVG, audio, video, archives, octet-stream, gRPC)"),
                    );
                } else if !COMPRESSIBLE_TOPS.contains(&top) || (top == "image" && sub == "*") {
                    self.error(
                        t.span(),
                        format!("\"{media}\" cannot be compressed: only text/, application/, font/ types and image/svg+xml"),
                    );
                } else {
                    out.push(media);
                }
            }
            settings.types = out;
        }
        if let Some(m) = &r.min_length {
            settings.min_length = m.get_ref().0;
        }
        if let Some(level) = &r.level {
            let l = level.get_ref();
            let mut check = |name: &str, v: Option<u32>, max: u32, field: &mut u32| {
                if let Some(v) = v {
                    if (1..=max).contains(&v) {
                        *field = v;
                    } else {
                        self.error(
                            level.span(),
                            format!("{name} level {v} is outside 1..={max}"),
                        );
                    }
                }
            };
            // One number for every algorithm: gzip's range, which the others include.
            check("compression", l.all, 9, &mut settings.level.gzip);
            if let Some(all) = l.all.filter(|v| (1..=9).contains(v)) {
                settings.level.br = all;
                settings.level.zstd = all;
            }
            check("gzip", l.gzip, 9, &mut settings.level.gzip);
            check("br", l.br, 11, &mut settings.level.br);
            check("zstd", l.zstd, 19, &mut settings.level.zstd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_by_type_length_and_encoding() {
        let s = CompressionSettings::default();
        assert!(s.compresses(Some("text/html; charset=utf-8"), Some(5000), false));
        assert!(s.compresses(Some("Application/JSON"), None, false));
        assert!(s.compresses(Some("image/svg+xml"), Some(300), false));
        assert!(!s.compresses(Some("text/html"), Some(100), false), "short");
        assert!(
            !s.compresses(Some("text/html"), Some(5000), true),
            "encoded"
        );
        assert!(!s.compresses(None, Some(5000), false), "no type");
        for never in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "audio/ogg",
            "application/octet-stream",
            "application/zip",
            "application/gzip",
            "application/grpc",
            "application/grpc+proto",
            "font/woff2",
        ] {
            assert!(never_compressed(never), "{never}");
            assert!(!s.compresses(Some(never), Some(5000), false), "{never}");
        }
        let wild = CompressionSettings {
            types: vec!["text/*".into(), "application/*".into()],
            ..CompressionSettings::default()
        };
        assert!(wild.compresses(Some("text/x-anything"), Some(5000), false));
        assert!(!wild.compresses(Some("application/grpc"), Some(5000), false));
        assert!(!wild.compresses(Some("application/octet-stream"), Some(5000), false));
        assert!(!wild.compresses(Some("image/svg+xml"), Some(5000), false));
    }
}
