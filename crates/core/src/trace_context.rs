//! W3C trace context (`traceparent`): a client's trace is kept and continued with a span of ours per hop.

/// One request's place in a trace: the trace, our span for this hop, the caller's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceContext {
    pub trace_id: u128,
    /// Our span: what the upstream sees as its parent, and what an exported span is called.
    pub span_id: u64,
    /// The client's span (its `traceparent`'s parent id), when it sent one.
    pub parent_id: Option<u64>,
    /// The trace flags as received (bit 0: sampled); `01` for a trace we start.
    pub flags: u8,
}

impl TraceContext {
    /// Continues the client's trace when `traceparent` is valid, or starts one.
    pub fn from_header(traceparent: Option<&[u8]>) -> TraceContext {
        let span_id = nonzero_u64();
        match traceparent.and_then(parse) {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_id: Some(parent_id),
                flags,
            },
            None => TraceContext {
                trace_id: nonzero_u128(),
                span_id,
                parent_id: None,
                flags: 1,
            },
        }
    }

    /// The `traceparent` value for the upstream: same trace, our span as the parent.
    pub fn header_value(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex_into(&mut out[3..35], self.trace_id);
        hex_into(&mut out[36..52], u128::from(self.span_id));
        hex_into(&mut out[53..55], u128::from(self.flags));
        out
    }

    /// 32 lowercase hex digits, as the access log and trace back ends write it.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0; 32];
        hex_into(&mut out, self.trace_id);
        out
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (a later version may append fields after a `-`). All-zero
/// ids and version `ff` are invalid; uppercase hex is invalid (W3C Trace Context, level 1, §3.2).
fn parse(value: &[u8]) -> Option<(u128, u64, u8)> {
    let value = trim(value);
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = u8::try_from(hex(&value[0..2])?).ok()?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex(&value[3..35])?;
    let parent_id = u64::try_from(hex(&value[36..52])?).ok()?;
    let flags = u8::try_from(hex(&value[53..55])?).ok()?;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// Lowercase hex digits only.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(v))
    })
}

/// The low `out.len() / 2` bytes of `value` as lowercase hex (`out.len()` is even).
fn hex_into(out: &mut [u8], value: u128) {
    let bytes = value.to_be_bytes();
    crate::hex::lower_into(out, &bytes[bytes.len() - out.len() / 2..]);
}

fn nonzero_u128() -> u128 {
    fastrand::u128(1..)
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_client_trace_is_continued_with_a_new_span() {
        let t = TraceContext::from_header(Some(CLIENT));
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id, Some(0x00f067aa0ba902b7));
        assert_eq!(t.flags, 1);
        assert_ne!(t.span_id, 0x00f067aa0ba902b7);
        let out = t.header_value();
        let out = std::str::from_utf8(&out).expect("ASCII");
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert_eq!(&out[36..52], format!("{:016x}", t.span_id));
        assert_eq!(
            std::str::from_utf8(&t.trace_id_hex()).expect("ASCII"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn flags_are_kept_as_received() {
        let t = TraceContext::from_header(Some(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ));
        assert_eq!(t.flags, 0);
        assert!(t.header_value().ends_with(b"-00"));
    }

    #[test]
    fn invalid_values_start_a_new_trace() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"garbage",
            b"",
        ] {
            let t = TraceContext::from_header(Some(bad));
            assert_eq!(t.parent_id, None, "{}", String::from_utf8_lossy(bad));
            assert_ne!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
            assert_eq!(t.flags, 1);
        }
    }

    #[test]
    fn a_later_version_with_more_fields_is_read() {
        let t = TraceContext::from_header(Some(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        ));
        assert_eq!(t.parent_id, Some(0x00f067aa0ba902b7));
    }

    #[test]
    fn a_new_trace_has_nonzero_ids() {
        let t = TraceContext::from_header(None);
        assert_ne!(t.trace_id, 0);
        assert_ne!(t.span_id, 0);
        assert_eq!(t.parent_id, None);
        let v = t.header_value();
        assert!(parse(&v).is_some(), "{}", String::from_utf8_lossy(&v));
    }
}
