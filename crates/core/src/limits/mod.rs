//! Rate and connection limits: GCRA zones (governor) keyed by client IP, IP + route or a header.
//!
//! The semantics are nginx's `limit_req zone=... burst=N nodelay`: a key may send `burst + 1`
//! requests at once, then one more per emission interval (60 s / rate for `r/m`); a request over
//! the limit is refused at once (429), never delayed.

pub mod client_ip;
pub mod conn;
mod store;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

pub use store::BoundedStore;
use store::StoreHandle;

/// What a zone counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyKind {
    ClientIp,
    ClientIpRoute,
    /// A request header (lowercase name); requests without it are not counted by the zone.
    Header(String),
}

/// A request rate: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Rate {
    /// `"10r/s"`, `"100r/m"`, `"1000r/h"`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate \"{s}\" (expected e.g. \"10r/s\" or \"100r/m\")");
        let (n, unit) = s.trim().split_once("r/").ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if requests == 0 {
            return Err(format!("rate \"{s}\" must allow at least 1 request"));
        }
        Ok(Rate { requests, per })
    }

    /// Time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.requests
    }
}

/// A zone as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneSpec {
    pub name: String,
    pub key: KeyKind,
    pub rate: Rate,
    pub burst: u32,
    pub max_keys: usize,
}

/// One zone's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        /// Requests a fresh key may send at once (burst + 1).
        limit: u32,
        remaining: u32,
        /// Until the key's bucket is full again.
        reset: Duration,
    },
    Limited {
        limit: u32,
        retry_after: Duration,
    },
}

/// A rate limiter by key. Behind a trait so a shared (multi-instance) store can come later.
pub trait Limiter: Send + Sync + std::fmt::Debug {
    fn spec(&self) -> &ZoneSpec;
    /// Counts one request for `key` and says whether it may pass.
    fn check(&self, key: u64) -> Verdict;
    /// Keys held in memory.
    fn keys(&self) -> usize;
    /// Drops idle keys.
    fn sweep(&self);
}

type Gcra = RateLimiter<u64, StoreHandle, MonotonicClock, StateInformationMiddleware>;

/// An in-process zone: governor's GCRA over a [`BoundedStore`].
#[derive(Debug)]
pub struct LocalZone {
    spec: ZoneSpec,
    limiter: Gcra,
    store: Arc<BoundedStore>,
    clock: MonotonicClock,
}

impl LocalZone {
    pub fn new(spec: ZoneSpec) -> LocalZone {
        let burst = NonZeroU32::new(spec.burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
        let interval = spec.rate.interval().max(Duration::from_nanos(1));
        // with_period only fails for a zero period, which max() above rules out.
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let store = Arc::new(BoundedStore::new(spec.max_keys));
        let clock = MonotonicClock;
        LocalZone {
            limiter: RateLimiter::new(quota, StoreHandle(store.clone()), MonotonicClock),
            store,
            clock,
            spec,
        }
    }
}

impl Limiter for LocalZone {
    fn spec(&self) -> &ZoneSpec {
        &self.spec
    }

    fn check(&self, key: u64) -> Verdict {
        let limit = self.spec.burst.saturating_add(1);
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = limit.saturating_sub(remaining);
                Verdict::Allowed {
                    limit,
                    remaining,
                    reset: self.spec.rate.interval() * used,
                }
            }
            Err(not_until) => Verdict::Limited {
                limit,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    fn keys(&self) -> usize {
        self.store.len()
    }

    fn sweep(&self) {
        self.store.sweep();
    }
}

/// Zones by name, kept across reloads: a zone whose spec did not change keeps its counters.
/// Owned by the runtime's writer and used only when a snapshot is compiled.
#[derive(Debug, Default)]
pub struct ZoneRegistry {
    zones: HashMap<String, Arc<dyn Limiter>>,
    /// One seed for the process, so a key hashes the same before and after a reload.
    hasher: std::collections::hash_map::RandomState,
}

impl ZoneRegistry {
    /// The process's key hasher (a clone hashes identically): snapshots carry it to the request path.
    pub fn hasher(&self) -> std::collections::hash_map::RandomState {
        self.hasher.clone()
    }

    /// The zones for a config: unchanged ones reused, changed or new ones fresh, removed ones gone.
    pub fn resolve(&mut self, specs: &[ZoneSpec]) -> HashMap<String, Arc<dyn Limiter>> {
        let mut next = HashMap::new();
        for spec in specs {
            let zone = match self.zones.get(&spec.name) {
                Some(z) if z.spec() == spec => z.clone(),
                _ => Arc::new(LocalZone::new(spec.clone())) as Arc<dyn Limiter>,
            };
            next.insert(spec.name.clone(), zone);
        }
        self.zones = next.clone();
        next
    }
}

/// Hashes a zone key: 8 bytes per key in the store, whatever the key material.
pub fn key_hash(hasher: &impl BuildHasher, parts: impl Hash) -> u64 {
    hasher.hash_one(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(rate: &str, burst: u32) -> LocalZone {
        LocalZone::new(ZoneSpec {
            name: "z".into(),
            key: KeyKind::ClientIp,
            rate: Rate::parse(rate).expect("rate"),
            burst,
            max_keys: 1000,
        })
    }

    #[test]
    fn parses_rates() {
        assert_eq!(
            Rate::parse("100r/m").expect("r/m").interval(),
            Duration::from_millis(600)
        );
        assert_eq!(
            Rate::parse("10r/s").expect("r/s").interval(),
            Duration::from_millis(100)
        );
        assert!(Rate::parse("0r/s").is_err());
        assert!(Rate::parse("10/s").is_err());
        assert!(Rate::parse("10r/d").is_err());
    }

    #[test]
    fn nginx_burst_nodelay_semantics() {
        // limit_req rate=100r/m burst=20 nodelay: 21 at once, the 22nd refused.
        let z = zone("100r/m", 20);
        for i in 0..21 {
            assert!(matches!(z.check(7), Verdict::Allowed { .. }), "request {i}");
        }
        match z.check(7) {
            Verdict::Limited { limit, retry_after } => {
                assert_eq!(limit, 21);
                assert!(retry_after <= Duration::from_millis(600), "{retry_after:?}");
                assert!(retry_after > Duration::from_millis(500), "{retry_after:?}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Another key has its own bucket.
        assert!(matches!(z.check(8), Verdict::Allowed { remaining: 20, .. }));
    }

    #[test]
    fn one_more_after_the_emission_interval() {
        // A 500 ms interval: wide margins against a descheduled test thread on a loaded machine.
        let z = zone("2r/s", 1);
        assert!(matches!(z.check(1), Verdict::Allowed { .. }));
        assert!(matches!(z.check(1), Verdict::Allowed { .. }));
        assert!(matches!(z.check(1), Verdict::Limited { .. }));
        std::thread::sleep(Duration::from_millis(600));
        assert!(matches!(z.check(1), Verdict::Allowed { .. }));
        assert!(matches!(z.check(1), Verdict::Limited { .. }));
    }

    #[test]
    fn registry_keeps_unchanged_zones() {
        let mut reg = ZoneRegistry::default();
        let spec = ZoneSpec {
            name: "a".into(),
            key: KeyKind::ClientIp,
            rate: Rate::parse("1r/m").expect("rate"),
            burst: 0,
            max_keys: 10,
        };
        let first = reg.resolve(std::slice::from_ref(&spec));
        assert!(matches!(first["a"].check(1), Verdict::Allowed { .. }));
        let again = reg.resolve(std::slice::from_ref(&spec));
        assert!(
            matches!(again["a"].check(1), Verdict::Limited { .. }),
            "counter kept"
        );
        let changed = ZoneSpec { burst: 5, ..spec };
        let fresh = reg.resolve(&[changed]);
        assert!(
            matches!(fresh["a"].check(1), Verdict::Allowed { .. }),
            "new spec, new counters"
        );
    }
}
