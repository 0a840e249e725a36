//! PROXY protocol v1/v2 headers from a load balancer in front of a listener, parsed without I/O: how long the header is and which client it names.
//!
//! The header is parsed by the `ppp` crate (both versions, incremental: it says when more bytes
//! are needed); the v1 line is delimited here. A `LOCAL` (v2) or `UNKNOWN` (v1) header, a load
//! balancer's own health check, names no client. The `server` module reads the header off a
//! freshly accepted connection with [`parse`] and makes its source the connection's peer.

use std::net::SocketAddr;

use ppp::{v1, v2, HeaderResult, PartialResult};

/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 start.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The v2 fixed part: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// The largest header accepted: v1 is at most 107 bytes; a v2 header's TLVs from AWS NLB or
/// HAProxy take well under 1 KB.
pub const MAX_HEADER: usize = V2_FIXED + 4096;
/// The longest v1 line, CRLF included (the spec's limit).
const V1_MAX: usize = 107;

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still be on its way: read more.
    Incomplete,
    /// A complete header of `len` bytes; `source` is the client, `None` for a LOCAL/UNKNOWN one.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `buf` starts like `prefix` (as far as both go).
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// Parses the start of a connection.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let v2 = starts_like(buf, V2_SIGNATURE);
    if !v2 && !starts_like(buf, V1_PREFIX) {
        return Err(ProxyHeaderError::Missing);
    }
    if v2 && buf.len() >= V2_FIXED {
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if V2_FIXED + len > MAX_HEADER {
            return Err(ProxyHeaderError::TooLong);
        }
    }
    if !v2 {
        // The v1 line is delimited here, not by ppp: ppp's v1 parse gives different lengths
        // for one header depending on how much of what follows has arrived (found by the
        // fuzz target with stray CR/LF bytes after `PROXY UNKNOWN`).
        let Some(end) = v1_line(buf)? else {
            return Ok(Parsed::Incomplete);
        };
        let header = HeaderResult::parse(&buf[..end]);
        if header.is_incomplete() {
            // ppp calls a line with a missing field incomplete (`PROXY TCP4 x\r\n`): nothing
            // more can complete it once its CRLF has arrived.
            return Err(ProxyHeaderError::Malformed("incomplete v1 line".into()));
        }
        return resolved(header);
    }
    let header = HeaderResult::parse(buf);
    if header.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    }
    resolved(header)
}

/// A v1 header's line (PROXY protocol spec, 2.1): the bytes up to its first CRLF, at most 107
/// with the CRLF, with no other CR or LF. `Some(end)` once the CRLF is in `buf` (`end` counts
/// it), `None` while the line may still be completed.
fn v1_line(buf: &[u8]) -> Result<Option<usize>, ProxyHeaderError> {
    for (i, &b) in buf.iter().enumerate().take(V1_MAX) {
        match b {
            b'\r' if buf.get(i + 1) == Some(&b'\n') => return Ok(Some(i + 2)),
            // The LF may be in the next read.
            b'\r' if i + 1 == buf.len() => return Ok(None),
            b'\r' | b'\n' => {
                return Err(ProxyHeaderError::Malformed(
                    "a CR or LF inside the v1 line".into(),
                ))
            }
            _ => {}
        }
    }
    if buf.len() >= V1_MAX {
        Err(ProxyHeaderError::Malformed(format!(
            "no CRLF within the v1 line's {V1_MAX} bytes"
        )))
    } else {
        Ok(None)
    }
}

/// A complete header as the connection's new peer: its source (`None` for LOCAL/UNKNOWN, a Unix
/// socket or no address) and its length.
fn resolved(header: HeaderResult<'_>) -> Result<Parsed, ProxyHeaderError> {
    let inet = |ip: std::net::IpAddr, port| Some(SocketAddr::new(ip, port));
    match header {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => inet(a.source_address.into(), a.source_port),
                v1::Addresses::Tcp6(a) => inet(a.source_address.into(), a.source_port),
                v1::Addresses::Unknown => None,
            };
            Ok(Parsed::Header {
                len: h.header.len(),
                source,
            })
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => inet(a.source_address.into(), a.source_port),
                (_, v2::Addresses::IPv6(a)) => inet(a.source_address.into(), a.source_port),
                // A Unix socket or no address: nothing better than the real peer.
                (_, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
            };
            Ok(Parsed::Header {
                len: h.len(),
                source,
            })
        }
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(src: SocketAddr, dst: SocketAddr, tlv: Option<(u8, &[u8])>) -> Vec<u8> {
        let mut b = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        );
        if let Some((kind, value)) = tlv {
            b = b.write_tlv(kind, value).expect("tlv");
        }
        b.build().expect("header")
    }

    #[test]
    fn a_v1_line_ends_at_its_first_crlf_whatever_follows() {
        // The fuzz target's find: stray CR/LF bytes after `PROXY UNKNOWN` made a prefix parse
        // as a shorter header than the whole input.
        let text = b"PROXY UNKNOWN T$NKNOCP7 1T$NKNOC \n\r 1-\r\n";
        assert!(matches!(parse(text), Err(ProxyHeaderError::Malformed(_))));
        for cut in 1..text.len() {
            assert!(
                !matches!(parse(&text[..cut]), Ok(Parsed::Header { .. })),
                "{cut}"
            );
        }
        let ok = b"PROXY UNKNOWN whatever\r\n\nGET";
        assert_eq!(
            parse(ok).expect("v1"),
            Parsed::Header {
                len: 24,
                source: None
            }
        );
        assert_eq!(parse(&ok[..23]).expect("cut"), Parsed::Incomplete);
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(matches!(parse(&long), Err(ProxyHeaderError::Malformed(_))));
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(text).expect("v1"),
            Parsed::Header {
                len: 41,
                source: Some("192.0.2.7:51000".parse().expect("addr")),
            }
        );
        let text = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
        assert!(matches!(
            parse(text),
            Ok(Parsed::Header { source: Some(s), .. }) if s == "[2001:db8::7]:51000".parse().expect("addr")
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").expect("unknown"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn v2_proxy_and_local_with_what_follows() {
        let src: SocketAddr = "198.51.100.9:40000".parse().expect("addr");
        let dst: SocketAddr = "10.0.0.1:443".parse().expect("addr");
        let mut bytes = v2_header(src, dst, Some((0x05, b"unique-id")));
        let len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&bytes).expect("v2"),
            Parsed::Header {
                len,
                source: Some(src)
            }
        );
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .expect("local");
        assert!(matches!(
            parse(&local),
            Ok(Parsed::Header { source: None, .. })
        ));
    }

    #[test]
    fn partial_headers_ask_for_more_and_others_are_refused() {
        let full = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n";
        for cut in [1, 5, 6, 20, full.len() - 1] {
            assert_eq!(parse(&full[..cut]).expect("partial"), Parsed::Incomplete);
        }
        let v2 = v2_header(
            "192.0.2.7:1".parse().expect("addr"),
            "10.0.0.1:2".parse().expect("addr"),
            None,
        );
        for cut in [1, 12, 15, 16, v2.len() - 1] {
            assert_eq!(parse(&v2[..cut]).expect("partial"), Parsed::Incomplete);
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00"),
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense\r\n"),
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&long), Err(ProxyHeaderError::TooLong)));
        let endless = [b"PROXY TCP4 1.2.3.4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(parse(&endless).is_err(), "a v1 line past 107 bytes");
    }
}
