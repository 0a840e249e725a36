//! Log lines that can repeat under load are written at most once per interval per kind, with a count of those left out.

use std::collections::HashMap;
use std::fmt::Arguments;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One line of a kind per this interval; the rest are counted.
const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Kind {
    last: Instant,
    suppressed: u64,
}

/// Not config state: when each kind of line was last written.
fn kinds() -> &'static parking_lot::Mutex<HashMap<&'static str, Kind>> {
    static KINDS: OnceLock<parking_lot::Mutex<HashMap<&'static str, Kind>>> = OnceLock::new();
    KINDS.get_or_init(Default::default)
}

/// Whether a line of `kind` may be written now; `Some(n)`: yes, and `n` were left out since
/// the last one.
fn admit(kind: &'static str, now: Instant) -> Option<u64> {
    let mut kinds = kinds().lock();
    match kinds.get_mut(kind) {
        Some(k) if now.saturating_duration_since(k.last) < INTERVAL => {
            k.suppressed += 1;
            None
        }
        Some(k) => {
            k.last = now;
            Some(std::mem::take(&mut k.suppressed))
        }
        None => {
            kinds.insert(
                kind,
                Kind {
                    last: now,
                    suppressed: 0,
                },
            );
            Some(0)
        }
    }
}

/// `log::warn!` at most once per 10 s for `kind`.
pub fn warn(kind: &'static str, message: Arguments<'_>) {
    if let Some(left_out) = admit(kind, Instant::now()) {
        if left_out > 0 {
            log::warn!("{message} ({left_out} more like it in the last 10 s not logged)");
        } else {
            log::warn!("{message}");
        }
    }
}

/// `log::error!` at most once per 10 s for `kind`.
pub fn error(kind: &'static str, message: Arguments<'_>) {
    if let Some(left_out) = admit(kind, Instant::now()) {
        if left_out > 0 {
            log::error!("{message} ({left_out} more like it in the last 10 s not logged)");
        } else {
            log::error!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let t0 = Instant::now();
        assert_eq!(admit("test-kind", t0), Some(0));
        assert_eq!(admit("test-kind", t0 + Duration::from_secs(1)), None);
        assert_eq!(admit("test-kind", t0 + Duration::from_secs(2)), None);
        assert_eq!(admit("other-kind", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(admit("test-kind", t0 + INTERVAL), Some(2));
        assert_eq!(admit("test-kind", t0 + INTERVAL), None);
    }
}
