//! Writes an access-log line as JSON straight into the line buffer: no serializer state, no intermediate `String`, escaping only where a byte needs it.

use std::io::Write;
use std::net::IpAddr;

use super::template::civil;
use super::Entry;

/// A field's key as it is written after the previous value: `,"name":`.
macro_rules! k {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// Appends the line (without its newline) to `out`. Field names and order are the log's public
/// format (docs/operations.md); milliseconds are rounded to 3 decimals.
pub(super) fn render(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339_millis(out, e.time);
    out.extend_from_slice(b"\",\"client_ip\":");
    match e.client_ip {
        Some(ip) => quoted_ip(out, ip),
        None => out.extend_from_slice(b"null"),
    }
    field_str(out, k!("method"), e.method);
    field_str(out, k!("host"), e.host);
    field_str(out, k!("path"), e.path);
    field_str(out, k!("uri"), e.uri);
    field_int(out, k!("status"), u64::from(e.status));
    field_int(out, k!("bytes"), e.bytes as u64);
    field_millis(out, k!("duration_ms"), Some(e.duration_ms));
    field_opt_str(out, k!("route"), e.route);
    field_opt_str(out, k!("service"), e.service);
    field_opt_str(out, k!("pool"), e.pool);
    out.extend_from_slice(b",\"upstream\":");
    match e.upstream {
        Some(a) => {
            // Addresses are digits, dots, colons and brackets: nothing to escape.
            out.push(b'"');
            match a {
                std::net::SocketAddr::V4(v4) => {
                    super::push_ip(out, IpAddr::V4(*v4.ip()));
                    out.push(b':');
                    out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
                }
                std::net::SocketAddr::V6(_) => {
                    let _ = write!(out, "{a}");
                }
            }
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    field_millis(out, k!("upstream_ms"), e.upstream_ms);
    field_str(out, k!("request_id"), e.request_id);
    field_str(out, k!("trace_id"), e.trace_id);
    field_str(out, k!("listener"), e.listener);
    field_str(out, k!("protocol"), e.protocol);
    field_opt_str(out, k!("referer"), e.referer);
    field_opt_str(out, k!("user_agent"), e.user_agent);
    field_opt_str(out, k!("forwarded_for"), e.forwarded_for);
    field_int(out, k!("request_bytes"), e.request_bytes);
    field_opt_str(out, k!("tls_version"), e.tls_version.as_deref());
    field_int(out, k!("tries"), e.tries as u64);
    field_millis(out, k!("upstream_connect_ms"), e.upstream_connect_ms);
    field_millis(out, k!("upstream_header_ms"), e.upstream_header_ms);
    field_millis(out, k!("upstream_response_ms"), e.upstream_response_ms);
    out.extend_from_slice(if e.retried {
        b",\"retried\":true"
    } else {
        b",\"retried\":false"
    });
    if let Some(error) = &e.error {
        field_str(out, k!("error"), error);
    }
    out.push(b'}');
}

/// `,"name":` written in one copy (`name` is the literal from the `k!` macro).
fn key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(key.as_bytes());
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    key(out, name);
    string(out, value);
}

fn field_opt_str(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    key(out, name);
    match value {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn field_int(out: &mut Vec<u8>, name: &str, value: u64) {
    key(out, name);
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Milliseconds rounded to 3 decimals (microseconds), as a JSON number; `null` when absent.
fn field_millis(out: &mut Vec<u8>, name: &str, ms: Option<f64>) {
    key(out, name);
    match ms {
        Some(ms) => millis(out, ms),
        None => out.extend_from_slice(b"null"),
    }
}

/// `ms` rounded to 3 decimals, as the shortest decimal that reads back as the rounded `f64`
/// (what `ryu` writes: `12.346`, `1.5`, `2.0`), from integer microseconds instead of float
/// formatting; `null` when not finite. Values ryu would write otherwise (negative, or past 10^12
/// ms) go through ryu.
fn millis(out: &mut Vec<u8>, ms: f64) {
    let rounded = (ms * 1000.0).round();
    if !rounded.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if !(0.0..1e15).contains(&rounded) {
        out.extend_from_slice(ryu::Buffer::new().format(rounded / 1000.0).as_bytes());
        return;
    }
    let micros = rounded as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = micros % 1000;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let len = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..len]);
}

/// `n` in decimal, zero-padded to `width` digits (wider when it needs more).
fn padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

fn quoted_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    super::push_ip(out, ip);
    out.push(b'"');
}

/// A JSON string: bytes copied as they are up to the next one that needs escaping; the text is
/// UTF-8 already.
fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    loop {
        let i = next_to_escape(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let mut escaped = *b"\\u0000";
                switchyard_core::hex::lower_into(&mut escaped[4..], &[b]);
                out.extend_from_slice(&escaped);
            }
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// The index of the first byte at or after `from` that a JSON string must escape, or
/// `bytes.len()`. Eight bytes are tested at a time: in each of the three tests the lowest byte
/// flagged is a true match (a borrow only flags bytes above a true match), so the lowest flag of
/// the three together is the first byte to escape.
fn next_to_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // High bit set in each byte of `w` below `n` (n <= 0x80), lowest flag exact.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w;
    let equal = |w: u64, b: u8| below(w ^ (ONES * u64::from(b)), 1);
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let flags = (below(w, 0x20) | equal(w, b'"') | equal(w, b'\\')) & HIGHS;
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map_or(bytes.len(), |p| i + p)
}

/// `"`, `\` and control characters; everything else goes into a JSON string as it is.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `2026-11-29T14:28:55.123Z` (RFC 3339, UTC, milliseconds).
fn rfc3339_millis(out: &mut Vec<u8>, t: std::time::SystemTime) {
    let (y, mo, d, h, mi, s) = civil(t);
    let millis = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    // Digits pushed one field at a time: `write!` with padding is several times the work.
    padded(out, y.max(0) as u64, 4);
    for (sep, n) in [
        (b'-', mo as u64),
        (b'-', d as u64),
        (b'T', h),
        (b':', mi),
        (b':', s),
    ] {
        out.push(sep);
        padded(out, n, 2);
    }
    out.push(b'.');
    padded(out, u64::from(millis), 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line's entry with every field set.
    fn example() -> Entry<'static> {
        Entry {
            time: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_962_535_123),
            client_ip: Some("192.0.2.7".parse().expect("ip")),
            method: "GET",
            host: "example.com",
            path: "/a?q=\"x\"",
            uri: "/a",
            status: 502,
            bytes: 123,
            duration_ms: 12.345_678,
            route: Some("r1"),
            service: None,
            pool: Some("blue"),
            upstream: Some("[::1]:8080".parse().expect("addr")),
            upstream_ms: None,
            request_id: "id-1",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            listener: "http",
            protocol: "http/1.1",
            referer: None,
            user_agent: Some("curl/8\u{7f}"),
            forwarded_for: None,
            request_bytes: 77,
            tls_version: Some("TLSv1.3".into()),
            tries: 2,
            upstream_connect_ms: Some(0.0),
            upstream_header_ms: Some(1.0005),
            upstream_response_ms: None,
            retried: true,
            error: Some("upstream said \"no\"\n".into()),
            remote_user: None,
            version: "HTTP/1.1",
        }
    }

    #[test]
    fn a_whole_line_is_one_json_object_with_every_value() {
        let e = example();
        let mut out = Vec::new();
        render(&mut out, &e);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
        assert_eq!(v["time"], "2026-11-29T14:28:55.123Z");
        assert_eq!(v["client_ip"], "192.0.2.7");
        assert_eq!(v["path"], "/a?q=\"x\"");
        assert_eq!(v["status"], 502);
        assert_eq!(v["duration_ms"], 12.346);
        assert_eq!(v["service"], serde_json::Value::Null);
        assert_eq!(v["upstream"], "[::1]:8080");
        assert_eq!(v["upstream_ms"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8\u{7f}");
        assert_eq!(v["upstream_connect_ms"], 0.0);
        assert_eq!(v["upstream_header_ms"], 1.001);
        assert_eq!(v["retried"], true);
        assert_eq!(v["error"], "upstream said \"no\"\n");
        assert_eq!(v.as_object().map(|o| o.len()), Some(29));
    }

    #[test]
    fn strings_are_escaped_as_json_wants() {
        for s in [
            "plain",
            "quote\"back\\slash",
            "ctl\u{1}\n\r\t",
            "ünïcode ✓",
            "",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn every_byte_to_escape_is_found_wherever_it_sits() {
        // Each byte that needs escaping, and neighbours that do not (space, DEL, a byte of
        // UTF-8), at every offset of a 21-byte string: in each of the eight-byte words tested
        // together, at their edges, and in the bytes after the last whole word.
        for special in ["\"", "\\", "\n", "\u{0}", "\u{1f}", " ", "\u{7f}", "é"] {
            for at in 0..21 {
                let mut s = "a".repeat(21);
                s.replace_range(at..at + 1, special);
                // A second one further on: the scan goes on after an escape.
                if at + 9 < s.len() {
                    s.replace_range(at + 9..at + 10, "\u{2}");
                }
                let mut out = Vec::new();
                string(&mut out, &s);
                let back: String = serde_json::from_slice(&out).expect("valid JSON string");
                assert_eq!(back, s, "{special:?} at {at}");
                let escapes = s.bytes().filter(|&b| needs_escape(b)).count();
                let short = s.bytes().filter(|b| b"\"\\\n\r\t".contains(b)).count();
                // Two quotes, one byte each for the rest, and 1 or 5 more for each escape.
                assert_eq!(
                    out.len(),
                    s.len() + 2 + short + 5 * (escapes - short),
                    "{special:?} at {at}: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn times_match_rfc3339_with_millis() {
        // A time with every field of two digits, one with single digits and millis under 100,
        // the epoch, and one in another century.
        for ms in [1_795_962_535_123, 1_772_330_103_007, 0, 4_102_444_800_000] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            let mut out = Vec::new();
            rfc3339_millis(&mut out, t);
            assert_eq!(
                String::from_utf8(out).expect("ASCII"),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }

    /// What the log wrote before: the value rounded to 3 decimals in `f64`, through ryu.
    fn millis_by_ryu(ms: f64) -> String {
        let rounded = (ms * 1000.0).round() / 1000.0;
        if rounded.is_finite() {
            ryu::Buffer::new().format(rounded).to_string()
        } else {
            "null".into()
        }
    }

    #[test]
    fn millis_are_written_as_ryu_writes_the_rounded_value() {
        let mut values = vec![
            0.0,
            0.0004,
            0.0005,
            0.001,
            0.01,
            0.1,
            1.0,
            1.0005,
            2.5,
            12.345_678,
            99.999_6,
            100.0,
            1_000.000_4,
            86_400_000.0,
            123_456_789.123,
            -1.5,
            1e13,
            f64::NAN,
            f64::INFINITY,
        ];
        // And a spread of durations from microseconds to hours.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let scale = 10f64.powi((x % 10) as i32 - 3);
            values.push((x >> 11) as f64 / (1u64 << 53) as f64 * scale);
        }
        for ms in values {
            let mut out = Vec::new();
            millis(&mut out, ms);
            assert_eq!(
                String::from_utf8(out).expect("ASCII"),
                millis_by_ryu(ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn upstream_addresses_are_written_as_display_writes_them() {
        for addr in [
            "10.0.0.7:8080",
            "127.0.0.1:1",
            "192.168.100.200:65535",
            "[::1]:8080",
        ] {
            let addr: std::net::SocketAddr = addr.parse().expect("an address");
            let e = Entry {
                upstream: Some(addr),
                ..example()
            };
            let mut out = Vec::new();
            render(&mut out, &e);
            let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
            assert_eq!(v["upstream"], addr.to_string());
        }
    }

    #[test]
    fn addresses_are_quoted_as_display_writes_them() {
        for ip in ["10.0.0.255", "127.0.0.1", "2001:db8::1", "::ffff:1.2.3.4"] {
            let ip: IpAddr = ip.parse().expect("an address");
            let mut out = Vec::new();
            quoted_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).expect("ASCII"), format!("\"{ip}\""));
        }
    }
}
