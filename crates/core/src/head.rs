//! The request-head checks pingora leaves to us: Host present and well-formed, and Content-Length never in list form.
//!
//! pingora already refuses duplicate Host fields, userinfo, a Host that differs from an
//! absolute-form authority, and Content-Length values that conflict or are not digits. What is
//! left (RFC 9112 §3.2, §6.3; nginx does the same): an HTTP/1.1 request needs a Host, a Host
//! must be a host name or IP literal with an optional port, and a Content-Length is one number
//! per line (`5, 5` is refused, not reconciled, since a peer may read the list differently).

use http::{header, HeaderName, HeaderValue, Version};
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

/// The fields [`check`] reads: found by [`HeadFields::of`], or noted by a caller's own walk over
/// the request's fields ([`HeadFields::note`]) that looks them up no more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadFields<'a> {
    /// The first Host field.
    pub host: Option<&'a HeaderValue>,
    /// The first Content-Length field.
    pub content_length: Option<&'a HeaderValue>,
    /// Whether a Content-Length field holds a list (a comma).
    pub length_list: bool,
}

impl<'a> HeadFields<'a> {
    /// The fields of `req`, looked up by name.
    pub fn of(req: &'a RequestHeader) -> HeadFields<'a> {
        let lengths = req.headers.get_all(header::CONTENT_LENGTH);
        HeadFields {
            host: req.headers.get(header::HOST),
            content_length: lengths.iter().next(),
            length_list: lengths.iter().any(|v| v.as_bytes().contains(&b',')),
        }
    }

    /// Notes one of a request's fields, met in the map's order; `false` for a name `check`
    /// does not read.
    pub fn note(&mut self, name: &HeaderName, value: &'a HeaderValue) -> bool {
        if name == header::HOST {
            self.host.get_or_insert(value);
        } else if name == header::CONTENT_LENGTH {
            self.content_length.get_or_insert(value);
            self.length_list |= value.as_bytes().contains(&b',');
        } else {
            return false;
        }
        true
    }
}

/// Checks what pingora did not; `Ok` for a head that may be routed, with the body length it
/// declares (its first Content-Length, when that is a number; pingora refused differing ones).
pub fn check(req: &RequestHeader) -> Result<Option<u64>, HeadError> {
    check_fields(req, &HeadFields::of(req))
}

/// [`check`], with the fields it reads already found (`fields`, of `req`).
pub fn check_fields(req: &RequestHeader, fields: &HeadFields) -> Result<Option<u64>, HeadError> {
    match (fields.host, req.uri.authority()) {
        (Some(h), _) if !valid_host(h.as_bytes()) => return Err(HeadError::InvalidHost),
        (None, Some(a)) if !valid_host(a.as_str().as_bytes()) => {
            return Err(HeadError::InvalidHost)
        }
        (None, _) if req.version == Version::HTTP_11 => return Err(HeadError::MissingHost),
        (None, None) if req.version == Version::HTTP_2 => return Err(HeadError::MissingHost),
        _ => {}
    }
    if fields.length_list {
        return Err(HeadError::ListContentLength);
    }
    Ok(fields
        .content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok()))
}

/// The class of each byte in a Host's registered name ([`valid_host`]): a name byte (a letter, a
/// digit, `-`, `_`, `~`), a dot, the colon before the port, or 0 (refused).
const NAME_BYTE: u8 = 1;
const DOT: u8 = 2;
const COLON: u8 = 3;
static HOST_NAME_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = match byte {
            b'-' | b'_' | b'~' => NAME_BYTE,
            _ if byte.is_ascii_alphanumeric() => NAME_BYTE,
            b'.' => DOT,
            b':' => COLON,
            _ => 0,
        };
        b += 1;
    }
    table
};

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
        // One pass over the name (on every request), each byte's class from a table: its bytes
        // up to an optional `:`, then the port. It starts as after a dot, so a leading dot is
        // refused as `..` is.
        let mut after_dot = true;
        let mut port = None;
        for (i, &b) in value.iter().enumerate() {
            match HOST_NAME_CLASS[usize::from(b)] {
                NAME_BYTE => after_dot = false,
                DOT if !after_dot => after_dot = true,
                COLON => {
                    port = Some(&value[i + 1..]);
                    break;
                }
                _ => return false,
            }
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

    /// Every name of up to four bytes from an alphabet of each class (and of bytes refused)
    /// against the rule written another way: a name is non-empty, starts with no dot, has no
    /// `..` and only name bytes and dots; a port after the first colon is 1-5 digits.
    #[test]
    fn names_follow_the_rule_at_every_byte() {
        let alphabet = b"aZ09-._~:[] @%\\\x7f\x80";
        let rule = |host: &[u8]| -> bool {
            let (name, port) = match host.iter().position(|&b| b == b':') {
                Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
                None => (host, None),
            };
            let name_ok = !name.is_empty()
                && name[0] != b'.'
                && !name.windows(2).any(|w| w == b"..")
                && name
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            let port_ok = port
                .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
            name_ok && port_ok
        };
        let mut host = Vec::new();
        let mut checked = 0;
        for len in 0..=4u32 {
            for mut n in 0..alphabet.len().pow(len) {
                host.clear();
                for _ in 0..len {
                    host.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                if host.first() == Some(&b'[') {
                    continue; // an IPv6 literal: its own branch, `hosts` above
                }
                assert_eq!(valid_host(&host), rule(&host), "{:?}", host.escape_ascii());
                checked += 1;
            }
        }
        assert!(checked > 40_000);
        // Every byte value once, alone and as the second byte of a name.
        for b in 0..=255u8 {
            assert_eq!(valid_host(&[b]), rule(&[b]) && b != b'[', "{b:#x}");
            assert_eq!(valid_host(&[b'a', b]), rule(&[b'a', b]), "{b:#x}");
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

    #[test]
    fn fields_noted_in_a_walk_are_the_ones_looked_up() {
        let heads = [
            head(&[], Version::HTTP_11, "/"),
            head(&[("host", "a.example")], Version::HTTP_11, "/"),
            head(
                &[("Host", "a.example"), ("host", "b.example")],
                Version::HTTP_11,
                "/",
            ),
            head(
                &[
                    ("accept", "*/*"),
                    ("content-length", "5"),
                    ("host", "a"),
                    ("Content-Length", "5, 5"),
                ],
                Version::HTTP_11,
                "/",
            ),
            head(
                &[
                    ("content-length", "7, 7"),
                    ("host", "a"),
                    ("content-length", "7"),
                ],
                Version::HTTP_11,
                "/",
            ),
            head(
                &[("content-length", "five"), ("x-a", "b")],
                Version::HTTP_10,
                "/",
            ),
            head(
                &[("host", "a b"), ("content-length", "3")],
                Version::HTTP_11,
                "/",
            ),
        ];
        for req in &heads {
            let mut noted = HeadFields::default();
            let mut others = 0;
            for (name, value) in req.headers.iter() {
                if !noted.note(name, value) {
                    others += 1;
                }
            }
            let looked_up = HeadFields::of(req);
            assert_eq!(noted, looked_up, "{:?}", req.headers);
            // The very values the map holds, the first of each name.
            assert!(noted
                .host
                .zip(looked_up.host)
                .is_none_or(|(a, b)| std::ptr::eq(a, b)));
            assert_eq!(check_fields(req, &noted), check(req), "{:?}", req.headers);
            let read = req.headers.len() - others;
            assert_eq!(
                read,
                req.headers.get_all(header::HOST).iter().count()
                    + req.headers.get_all(header::CONTENT_LENGTH).iter().count()
            );
        }
        // The list is found in any Content-Length field, not only the first.
        assert_eq!(check(&heads[3]), Err(HeadError::ListContentLength));
        assert_eq!(check(&heads[4]), Err(HeadError::ListContentLength));
    }
}
