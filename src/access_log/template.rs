//! Renders an access-log line from a compiled template (`config::log_format`), with nginx's meaning for nginx's variables.
//!
//! Times of nginx variables are seconds with 3 decimals (`$request_time` = `0.012`); an empty
//! or absent value is `-`; values are escaped as nginx's default `escape=default` does (`"`,
//! `\`, control and non-ASCII bytes as `\xHH`). `$time_local` is in UTC (`+0000`).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Entry;
use crate::config::log_format::{LogVar, Piece};

/// Appends the line (without its newline) to `out`.
pub(super) fn render(out: &mut Vec<u8>, pieces: &[Piece], e: &Entry<'_>) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Var(v) => var(out, *v, e),
        }
    }
}

fn var(out: &mut Vec<u8>, v: LogVar, e: &Entry<'_>) {
    // Writes into a Vec cannot fail.
    let _ = value(out, v, e);
}

fn value(out: &mut Vec<u8>, v: LogVar, e: &Entry<'_>) -> std::io::Result<()> {
    match v {
        LogVar::RemoteAddr => display(out, e.client_ip.as_ref()),
        LogVar::RemoteUser => escaped(out, e.remote_user.as_deref()),
        LogVar::TimeLocal => time_local(out, e.time),
        LogVar::TimeIso8601 => time_iso8601(out, e.time),
        LogVar::Request => {
            escaped(out, Some(e.method))?;
            out.push(b' ');
            escaped(out, Some(e.path))?;
            write!(out, " {}", e.version)
        }
        LogVar::RequestMethod => escaped(out, Some(e.method)),
        LogVar::RequestUri => escaped(out, Some(e.path)),
        LogVar::Uri => escaped(out, Some(e.uri)),
        LogVar::Host => escaped(out, Some(e.host)),
        LogVar::Status => write!(out, "{}", e.status),
        LogVar::BodyBytesSent => write!(out, "{}", e.bytes),
        LogVar::RequestLength => write!(out, "{}", e.request_bytes),
        LogVar::HttpReferer => escaped(out, e.referer),
        LogVar::HttpUserAgent => escaped(out, e.user_agent),
        LogVar::HttpXForwardedFor => escaped(out, e.forwarded_for),
        LogVar::RequestTime => seconds(out, Some(e.duration_ms)),
        LogVar::UpstreamConnectTime => seconds(out, e.upstream_connect_ms),
        LogVar::UpstreamHeaderTime => seconds(out, e.upstream_header_ms),
        LogVar::UpstreamResponseTime => seconds(out, e.upstream_response_ms),
        LogVar::UpstreamAddr => display(out, e.upstream.as_ref()),
        LogVar::RequestId => escaped(out, Some(e.request_id)),
        LogVar::TraceId => escaped(out, Some(e.trace_id)),
        LogVar::Pool => escaped(out, e.pool),
        LogVar::Tries => write!(out, "{}", e.tries),
    }
}

/// A value as nginx writes it: `-` when empty, escaped otherwise.
/// An address as text (nothing in it needs escaping), or `-`.
fn display(out: &mut Vec<u8>, value: Option<&impl std::fmt::Display>) -> std::io::Result<()> {
    match value {
        Some(v) => write!(out, "{v}"),
        None => {
            out.push(b'-');
            Ok(())
        }
    }
}

fn escaped(out: &mut Vec<u8>, value: Option<&str>) -> std::io::Result<()> {
    match value.filter(|v| !v.is_empty()) {
        None => out.push(b'-'),
        Some(v) => {
            for &b in v.as_bytes() {
                if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                    write!(out, "\\x{b:02X}")?;
                } else {
                    out.push(b);
                }
            }
        }
    }
    Ok(())
}

/// Milliseconds written as nginx's seconds with 3 decimals; `-` when absent.
fn seconds(out: &mut Vec<u8>, ms: Option<f64>) -> std::io::Result<()> {
    match ms {
        Some(ms) => write!(out, "{:.3}", ms / 1000.0),
        None => {
            out.push(b'-');
            Ok(())
        }
    }
}

/// (year, month, day, hour, minute, second) in UTC.
pub(super) fn civil(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// nginx's `$time_local`: `29/Nov/2026:14:28:55 +0000`.
fn time_local(out: &mut Vec<u8>, t: SystemTime) -> std::io::Result<()> {
    let (y, mo, d, h, mi, s) = civil(t);
    let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    write!(out, "{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000")
}

/// nginx's `$time_iso8601`: `2026-11-29T14:28:55+00:00`.
fn time_iso8601(out: &mut Vec<u8>, t: SystemTime) -> std::io::Result<()> {
    let (y, mo, d, h, mi, s) = civil(t);
    write!(out, "{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_as_nginx_writes_them() {
        // 2026-11-29T14:28:55Z, and a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_962_535);
        let mut out = Vec::new();
        time_local(&mut out, t).expect("write");
        out.push(b' ');
        time_iso8601(&mut out, t).expect("write");
        out.push(b' ');
        time_iso8601(&mut out, UNIX_EPOCH + Duration::from_secs(951_782_400)).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "29/Nov/2026:14:28:55 +0000 2026-11-29T14:28:55+00:00 2000-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn escapes_like_nginx() {
        let mut out = Vec::new();
        escaped(&mut out, Some("a \"b\"\\é\n")).expect("write");
        escaped(&mut out, Some("")).expect("write");
        seconds(&mut out, Some(12.3456)).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "a \\x22b\\x22\\x5C\\xC3\\xA9\\x0A-0.012"
        );
    }
}
