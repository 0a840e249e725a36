//! A `window` zone: at most N requests per key in any period, counted in two fixed windows weighted as a sliding one (Cloudflare's and nginx-plus's estimate).
//!
//! Each key holds the count of the current fixed window and of the one before. A request at
//! fraction `f` of the current window sees `previous * (1 - f) + current` requests in the last
//! period and passes while that is below N. The estimate is exact for a key that was quiet in the
//! previous window (a fresh key gets exactly N), and assumes the previous window's requests were
//! spread evenly otherwise: it may let through up to N-1 more or fewer than an exact log would in
//! a period that straddles two windows with very uneven traffic. 16 bytes per key, never a log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Limiter, Verdict, ZoneKind, ZoneSpec};

const SHARDS: usize = 64;

/// One key's counts: the fixed window they belong to and its predecessor's.
#[derive(Debug, Clone, Copy)]
struct Counts {
    window: u64,
    current: u32,
    previous: u32,
}

impl Counts {
    /// Moved to `window` (counts of windows further back are gone).
    fn at(self, window: u64) -> Counts {
        match window.saturating_sub(self.window) {
            0 => self,
            1 => Counts {
                window,
                current: 0,
                previous: self.current,
            },
            _ => Counts {
                window,
                current: 0,
                previous: 0,
            },
        }
    }
}

#[derive(Debug)]
pub struct WindowZone {
    spec: ZoneSpec,
    limit: u32,
    period: Duration,
    shards: Box<[Mutex<HashMap<u64, Counts>>]>,
    per_shard: usize,
    start: Instant,
}

impl WindowZone {
    pub fn new(spec: ZoneSpec) -> WindowZone {
        let (limit, period) = match spec.kind {
            ZoneKind::Window { rate } => (rate.requests, rate.per),
            _ => (1, Duration::from_secs(1)),
        };
        let per_shard = spec.max_keys.div_ceil(SHARDS).max(1);
        WindowZone {
            limit: limit.max(1),
            period: period.max(Duration::from_millis(1)),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_capacity(per_shard.min(1024))))
                .collect(),
            per_shard,
            start: Instant::now(),
            spec,
        }
    }

    /// The fixed window `now` falls in and how far into it (0..1).
    fn position(&self, now: Instant) -> (u64, f64) {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        let period = self.period.as_nanos();
        let window = (nanos / period) as u64;
        (window, (nanos % period) as f64 / period as f64)
    }

    /// The check at a given instant (the tests drive time).
    pub fn check_at(&self, key: u64, now: Instant) -> Verdict {
        let (window, f) = self.position(now);
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock();
        let fresh = Counts {
            window,
            current: 0,
            previous: 0,
        };
        let counts = map.get(&key).map_or(fresh, |c| c.at(window));
        let seen = f64::from(counts.previous) * (1.0 - f) + f64::from(counts.current);
        let limit = self.limit;
        if seen + 1.0 > f64::from(limit) {
            return Verdict::Limited {
                limit,
                retry_after: Some(self.wait(counts, f)),
                status: self.spec.status,
            };
        }
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            evict(&mut map, window, self.per_shard);
        }
        let counts = Counts {
            current: counts.current + 1,
            ..counts
        };
        map.insert(key, counts);
        let seen = seen + 1.0;
        Verdict::Allowed {
            limit,
            remaining: (f64::from(limit) - seen).max(0.0) as u32,
            // Until the current window's requests stop counting: the end of the next window.
            reset: self.period.mul_f64(2.0 - f),
        }
    }

    /// How long until one more request passes, if no other one is counted meanwhile.
    fn wait(&self, c: Counts, f: f64) -> Duration {
        let room = f64::from(self.limit) - 1.0;
        let fraction = if f64::from(c.current) <= room && c.previous > 0 {
            // Later in this window: previous * (1 - g) + current <= room.
            let g = 1.0 - (room - f64::from(c.current)) / f64::from(c.previous);
            g - f
        } else {
            // In the next window, where this one's count is the previous.
            let g = if c.current == 0 {
                0.0
            } else {
                (1.0 - room / f64::from(c.current)).max(0.0)
            };
            1.0 - f + g
        };
        self.period.mul_f64(fraction.max(0.0))
    }
}

/// Makes room in a full shard: keys with nothing in the last two windows first, then an eighth of
/// the shard, the keys with the fewest requests (a fresh count is only more lenient).
fn evict(map: &mut HashMap<u64, Counts>, window: u64, per_shard: usize) {
    map.retain(|_, c| window.saturating_sub(c.window) <= 1);
    let target = per_shard - per_shard / 8 - 1;
    if map.len() > target {
        let cut = map.len() - target;
        let mut counts: Vec<u32> = map.values().map(|c| c.current + c.previous).collect();
        let (_, nth, _) = counts.select_nth_unstable(cut - 1);
        let threshold = *nth;
        let mut to_drop = cut;
        map.retain(|_, c| {
            if to_drop > 0 && c.current + c.previous <= threshold {
                to_drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

impl Limiter for WindowZone {
    fn spec(&self) -> &ZoneSpec {
        &self.spec
    }

    fn check(&self, key: u64) -> Verdict {
        self.check_at(key, Instant::now())
    }

    fn refund(&self, key: u64) {
        let (window, _) = self.position(Instant::now());
        let mut map = self.shards[(key as usize) % SHARDS].lock();
        if let Some(c) = map.get_mut(&key) {
            // Counted in this window (a check at a window's very end counts in the last one).
            if c.window == window || c.window + 1 == window {
                c.current = c.current.saturating_sub(1);
            }
        }
    }

    fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Drops keys with nothing counted in the last two windows: they know nothing more.
    fn sweep(&self) {
        let (window, _) = self.position(Instant::now());
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|_, c| window.saturating_sub(c.window) <= 1);
            if map.capacity() > 4 * map.len().max(64) {
                map.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{KeyKind, Rate};

    fn zone(rate: &str, max_keys: usize) -> WindowZone {
        WindowZone::new(ZoneSpec {
            name: "w".into(),
            key: KeyKind::ClientIp,
            kind: ZoneKind::Window {
                rate: Rate::parse(rate).expect("rate"),
            },
            max_keys,
            status: 503,
            scope: crate::limits::Scope::Node,
        })
    }

    #[test]
    fn a_refund_gives_the_request_back() {
        let z = zone("2r/h", 64);
        assert!(matches!(z.check(7), Verdict::Allowed { .. }));
        assert!(matches!(z.check(7), Verdict::Allowed { .. }));
        assert!(matches!(z.check(7), Verdict::Limited { .. }));
        z.refund(7);
        assert!(matches!(z.check(7), Verdict::Allowed { .. }));
        assert!(matches!(z.check(7), Verdict::Limited { .. }));
        // Another key's refund takes nothing from this one.
        z.refund(8);
        assert!(matches!(z.check(7), Verdict::Limited { .. }));
    }

    #[test]
    fn exactly_n_in_a_period_then_sliding() {
        let z = zone("10r/m", 1000);
        let t0 = z.start;
        for i in 0..10 {
            let v = z.check_at(1, t0 + Duration::from_secs(i));
            assert!(matches!(v, Verdict::Allowed { .. }), "request {i}: {v:?}");
        }
        match z.check_at(1, t0 + Duration::from_secs(10)) {
            Verdict::Limited {
                limit: 10,
                retry_after: Some(wait),
                status: 503,
            } => {
                // The 10 fall out of the sliding minute from 60 s + 6 s on (1 - 9/10 of the next).
                assert!(
                    wait >= Duration::from_secs(55) && wait <= Duration::from_secs(57),
                    "{wait:?}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Another key has its own count.
        assert!(matches!(
            z.check_at(2, t0),
            Verdict::Allowed { remaining: 9, .. }
        ));
        // Half-way into the next minute, half the previous minute's 10 still count: 5 more pass.
        let mid = t0 + Duration::from_secs(90);
        let passed = (0..10)
            .filter(|_| matches!(z.check_at(1, mid), Verdict::Allowed { .. }))
            .count();
        assert_eq!(passed, 5);
        // Two windows later everything is forgotten.
        let later = t0 + Duration::from_secs(180);
        let passed = (0..20)
            .filter(|_| matches!(z.check_at(1, later), Verdict::Allowed { .. }))
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn bounded_and_swept() {
        let z = zone("5r/s", 640);
        let t0 = z.start;
        for key in 0..100_000u64 {
            z.check_at(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), t0);
        }
        assert!(z.keys() <= 640, "{}", z.keys());
        // Keys with nothing in the last two windows are swept (a 1 ms window).
        let fast = WindowZone::new(ZoneSpec {
            kind: ZoneKind::Window {
                rate: Rate {
                    requests: 5,
                    per: Duration::from_millis(1),
                },
            },
            ..z.spec.clone()
        });
        fast.check(1);
        assert_eq!(fast.keys(), 1);
        std::thread::sleep(Duration::from_millis(5));
        fast.sweep();
        assert_eq!(fast.keys(), 0);
    }
}
