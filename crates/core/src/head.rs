//! The request-head checks pingora leaves to us: Host present and well-formed, and Content-Length never in list form.
//!
//! pingora already refuses duplicate Host fields, userinfo, a Host that differs from an
//! absolute-form authority, and Content-Length values that conflict or are not digits. What is
//! left (RFC 9112 §3.2, §6.3; nginx does the same): an HTTP/1.1 request needs a Host, a Host
//! must be a host name or IP literal with an optional port, and a Content-Length is one number
//! per line (`5, 5` is refused, not reconciled, since a peer may read the list differently).

use http::{header, Version};
use pingora_http::RequestHeader;

/// Why a request head is refused (all answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("invalid Host")]
    InvalidHost,
    #[error("Content-Length in list form")]
    ListContentLength,
}

/// Checks what pingora did not; `Ok` for a head that may be routed, with the body length it
/// declares (its first Content-Length, when that is a number; pingora refused differing ones).
pub fn check(req: &RequestHeader) -> Result<Option<u64>, HeadError> {
    let host = req.headers.get(header::HOST);
    match (host, req.uri.authority()) {
        (Some(h), _) if !valid_host(h.as_bytes()) => return Err(HeadError::InvalidHost),
        (None, Some(a)) if !valid_host(a.as_str().as_bytes()) => {
            return Err(HeadError::InvalidHost)
        }
        (None, _) if req.version == Version::HTTP_11 => return Err(HeadError::MissingHost),
        (None, None) if req.version == Version::HTTP_2 => return Err(HeadError::MissingHost),
        _ => {}
    }
    let lengths = req.headers.get_all(header::CONTENT_LENGTH);
    if lengths.iter().any(|v| v.as_bytes().contains(&b',')) {
        return Err(HeadError::ListContentLength);
    }
    Ok(lengths
        .iter()
        .next()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok()))
}

/// A Host value: a registered name (letters, digits, `-`, `.`, `_`, `~`; no empty label run
/// like `..`) or a bracketed IPv6 literal, then an optional `:port` of 1-5 digits.
pub fn valid_host(value: &[u8]) -> bool {
    let port = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &value[end + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        // One pass over the name (on every request): its bytes up to an optional `:`, then the
        // port. `prev` starts as a dot, so a leading dot is refused as `..` is.
        let mut prev = b'.';
        let mut port = None;
        for (i, &b) in value.iter().enumerate() {
            match b {
                b':' => {
                    port = Some(&value[i + 1..]);
                    break;
                }
                b'.' if prev == b'.' => return false,
                b'-' | b'.' | b'_' | b'~' => {}
                _ if b.is_ascii_alphanumeric() => {}
                _ => return false,
            }
            prev = b;
        }
        // An empty name: nothing, or a port alone.
        if value.first().is_none_or(|&b| b == b':') {
            return false;
        }
        port
    };
    match port {
        None => true,
        Some(p) => !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[(&str, &str)], version: Version, target: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        req.set_version(version);
        for (name, value) in raw {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com.",
            "a-b_c~d.example:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::1]",
            "localhost",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a@b",
            "a/b",
            "[::1",
            "[::1]x",
            "host:port:x",
            "host:",
            "host:123456",
            "a..b",
            ".a",
            "a\\b",
            "[]",
            "[zz::1]",
            ":80",
            "a%2fb",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn http11_needs_a_host_http10_does_not() {
        let r = head(&[], Version::HTTP_11, "/");
        assert_eq!(check(&r), Err(HeadError::MissingHost));
        let r = head(&[], Version::HTTP_10, "/");
        assert_eq!(check(&r), Ok(None));
        let r = head(&[("host", "a.example")], Version::HTTP_11, "/");
        assert_eq!(check(&r), Ok(None));
        // Absolute form does not replace the Host header in HTTP/1.1 (RFC 9112 §3.2).
        let r = head(&[], Version::HTTP_11, "http://a.example/x");
        assert_eq!(check(&r), Err(HeadError::MissingHost));
        let r = head(&[("host", "a b")], Version::HTTP_11, "/");
        assert_eq!(check(&r), Err(HeadError::InvalidHost));
    }

    #[test]
    fn content_length_lists_are_refused() {
        let r = head(
            &[("host", "a"), ("content-length", "5, 5")],
            Version::HTTP_11,
            "/",
        );
        assert_eq!(check(&r), Err(HeadError::ListContentLength));
        let r = head(
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "5"),
            ],
            Version::HTTP_11,
            "/",
        );
        assert_eq!(
            check(&r),
            Ok(Some(5)),
            "identical lines are collapsed, not refused"
        );
        // A length that is not a number declares none (pingora refuses it before this check).
        let r = head(
            &[("host", "a"), ("content-length", "five")],
            Version::HTTP_11,
            "/",
        );
        assert_eq!(check(&r), Ok(None));
    }
}
