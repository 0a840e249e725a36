//! Rate and connection limits: zones keyed by client IP, IP + route or a header: GCRA, sliding windows, requests in progress.
//!
//! A `rate` zone has nginx's `limit_req zone=... burst=N nodelay` semantics: a key may send
//! `burst + 1` requests at once, then one more per emission interval (60 s / rate for `r/m`); a
//! request over the limit is refused at once (429), never delayed. A `window` zone allows at most
//! N requests in any period (`window.rs`); a `concurrency` zone at most N requests in progress
//! per key (nginx's `limit_conn`, `concurrency.rs`).

pub mod client_ip;
pub mod concurrency;
pub mod conn;
pub mod lease;
mod store;
pub mod window;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroU32;
use std::pin::Pin;
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

/// What a zone counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneKind {
    /// GCRA: `rate`, with `burst` more at once (nginx `limit_req ... nodelay`).
    Rate { rate: Rate, burst: u32 },
    /// At most `rate.requests` in any `rate.per` (a sliding window).
    Window { rate: Rate },
    /// At most `max` requests in progress at once (nginx `limit_conn`).
    Concurrency { max: u32 },
}

impl ZoneKind {
    /// Requests a fresh key may send at once (the RateLimit-Limit): `burst + 1`, the window's
    /// requests, or the requests in progress allowed.
    pub fn capacity(&self) -> u32 {
        match *self {
            ZoneKind::Rate { burst, .. } => burst.saturating_add(1),
            ZoneKind::Window { rate } => rate.requests,
            ZoneKind::Concurrency { max } => max,
        }
    }
}

/// The status a refusal gets unless the zone or `[limits] status` says otherwise.
pub const DEFAULT_STATUS: u16 = 429;

/// Where a zone's counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// In this process: each node counts on its own.
    #[default]
    Node,
    /// In the fleet's Redis (`[cluster] redis`): one count for every node.
    Cluster,
}

/// A zone as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneSpec {
    pub name: String,
    pub key: KeyKind,
    pub kind: ZoneKind,
    pub max_keys: usize,
    /// The refusal's status (429, or 503 as nginx and ingress-nginx send).
    pub status: u16,
    pub scope: Scope,
}

impl ZoneSpec {
    /// A `rate` zone (GCRA) refused with 429.
    pub fn rate(name: &str, key: KeyKind, rate: Rate, burst: u32, max_keys: usize) -> ZoneSpec {
        ZoneSpec {
            name: name.to_string(),
            key,
            kind: ZoneKind::Rate { rate, burst },
            max_keys,
            status: DEFAULT_STATUS,
            scope: Scope::Node,
        }
    }

    /// The local zone a `cluster` zone falls back to while Redis is out of reach on a fleet of
    /// `nodes`: its rate and burst divided among them (at least 1 request per period), so the
    /// fleet together stays near the zone's limit.
    pub fn fallback(&self, nodes: usize) -> ZoneSpec {
        let n = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
        let share = |r: Rate| Rate {
            requests: (r.requests / n).max(1),
            per: r.per,
        };
        let kind = match self.kind {
            ZoneKind::Rate { rate, burst } => ZoneKind::Rate {
                rate: share(rate),
                burst: burst / n,
            },
            ZoneKind::Window { rate } => ZoneKind::Window { rate: share(rate) },
            other => other,
        };
        ZoneSpec {
            kind,
            scope: Scope::Node,
            ..self.clone()
        }
    }
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
    /// Admitted by a zone that sends no RateLimit-* headers (a concurrency zone): the caller
    /// holds an [`Admission`] for `key` (the one to release) until the request ends.
    Admitted { key: u64 },
    Limited {
        limit: u32,
        /// When a retry may pass; `None` where no time is meaningful (requests in progress).
        retry_after: Option<Duration>,
        status: u16,
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
    /// The request `key` was admitted for has ended (concurrency zones count it down).
    fn release(&self, _key: u64) {}
    /// Takes back the request `check` just counted for `key`: another zone of the same route
    /// refused it, and nginx counts a request in its `limit_req` zones only when all pass.
    fn refund(&self, _key: u64) {}
    /// A zone counted outside the process (`scope = "cluster"`): the request path awaits
    /// [`SharedZone::check_shared`] instead of calling `check`.
    fn shared(&self) -> Option<&dyn SharedZone> {
        None
    }
}

/// A check that may wait on the network (bounded by the zone's own timeout).
pub type SharedCheck<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// A zone whose counters the fleet shares. `key` is a [`stable_key`] (the same on every node);
/// `nodes` is the fleet's live node count, which a fallback to a local limit divides the rate by.
pub trait SharedZone: Send + Sync {
    fn check_shared(&self, key: u64, nodes: usize) -> SharedCheck<'_>;
    /// Takes back a counted request (see [`Limiter::refund`]), without waiting for it.
    fn refund_shared(&self, key: u64);
}

/// A request in progress counted by a concurrency zone: dropping it (when the request's context
/// goes, whatever ended the request) counts it down.
#[derive(Debug)]
pub struct Admission {
    zone: Arc<dyn Limiter>,
    key: u64,
}

impl Admission {
    pub fn new(zone: Arc<dyn Limiter>, key: u64) -> Admission {
        Admission { zone, key }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.zone.release(self.key);
    }
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
    /// A GCRA zone; `spec.kind` must be [`ZoneKind::Rate`] (see [`new_zone`]).
    pub fn new(spec: ZoneSpec) -> LocalZone {
        let (rate, burst) = spec.gcra();
        let burst = NonZeroU32::new(burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
        let interval = rate.interval().max(Duration::from_nanos(1));
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
        let (rate, burst) = self.spec.gcra();
        let limit = burst.saturating_add(1);
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = limit.saturating_sub(remaining);
                Verdict::Allowed {
                    limit,
                    remaining,
                    reset: rate.interval() * used,
                }
            }
            Err(not_until) => Verdict::Limited {
                limit,
                retry_after: Some(not_until.wait_time_from(self.clock.now())),
                status: self.spec.status,
            },
        }
    }

    fn keys(&self) -> usize {
        self.store.len()
    }

    fn refund(&self, key: u64) {
        let (rate, _) = self.spec.gcra();
        self.store.refund(key, rate.interval().as_nanos() as u64);
    }

    fn sweep(&self) {
        self.store.sweep();
    }
}

impl ZoneSpec {
    /// The GCRA parameters (a non-rate zone never reaches a [`LocalZone`]).
    fn gcra(&self) -> (Rate, u32) {
        match self.kind {
            ZoneKind::Rate { rate, burst } => (rate, burst),
            ZoneKind::Window { rate } => (rate, 0),
            ZoneKind::Concurrency { max } => (
                Rate {
                    requests: max.max(1),
                    per: Duration::from_secs(1),
                },
                0,
            ),
        }
    }
}

/// The in-process limiter for a spec, by its kind.
pub fn new_zone(spec: ZoneSpec) -> Arc<dyn Limiter> {
    match spec.kind {
        ZoneKind::Rate { .. } => Arc::new(LocalZone::new(spec)),
        ZoneKind::Window { .. } => Arc::new(window::WindowZone::new(spec)),
        ZoneKind::Concurrency { .. } => Arc::new(concurrency::ConcurrencyZone::new(spec)),
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
        self.resolve_with(specs, new_zone)
    }

    /// [`Self::resolve`], with new zones made by `make` (a fleet's shared zones).
    pub fn resolve_with(
        &mut self,
        specs: &[ZoneSpec],
        make: impl Fn(ZoneSpec) -> Arc<dyn Limiter>,
    ) -> HashMap<String, Arc<dyn Limiter>> {
        let mut next = HashMap::new();
        for spec in specs {
            let zone = match self.zones.get(&spec.name) {
                Some(z) if z.spec() == spec => z.clone(),
                _ => make(spec.clone()),
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

/// Hashes a shared zone's key material to the same value on every node and in every build
/// (FNV-1a over the bytes given, in order; `key_hash`'s seed is random per process).
pub fn stable_key(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv1a::default();
    for p in parts {
        h.write(p);
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h.write_u8(0xff);
    }
    h.finish()
}

/// FNV-1a, 64 bits: fixed constants, so its values never change.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(rate: &str, burst: u32) -> LocalZone {
        LocalZone::new(ZoneSpec::rate(
            "z",
            KeyKind::ClientIp,
            Rate::parse(rate).expect("rate"),
            burst,
            1000,
        ))
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
            Verdict::Limited {
                limit,
                retry_after: Some(retry_after),
                status: 429,
            } => {
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
    fn stable_keys_are_fixed_and_separate_their_parts() {
        // FNV-1a's published value for "a", then our 0xff separator: the same in every build.
        assert_eq!(stable_key(&[b"ab", b"c"]), stable_key(&[b"ab", b"c"]));
        assert_ne!(stable_key(&[b"ab", b"c"]), stable_key(&[b"a", b"bc"]));
        let mut h = Fnv1a::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_fallback_divides_the_rate_and_burst_among_the_nodes() {
        let spec = ZoneSpec {
            scope: Scope::Cluster,
            ..ZoneSpec::rate(
                "z",
                KeyKind::ClientIp,
                Rate::parse("100r/m").expect("rate"),
                99,
                1000,
            )
        };
        let f = spec.fallback(3);
        assert_eq!(f.scope, Scope::Node);
        assert_eq!(
            f.kind,
            ZoneKind::Rate {
                rate: Rate::parse("33r/m").expect("rate"),
                burst: 33
            }
        );
        // Never below one request per period.
        let tiny = ZoneSpec::rate(
            "z",
            KeyKind::ClientIp,
            Rate::parse("2r/m").expect("rate"),
            0,
            1000,
        );
        assert_eq!(
            tiny.fallback(5).kind,
            ZoneKind::Rate {
                rate: Rate::parse("1r/m").expect("rate"),
                burst: 0
            }
        );
        assert_eq!(spec.fallback(0), spec.fallback(1));
    }

    #[test]
    fn registry_keeps_unchanged_zones() {
        let mut reg = ZoneRegistry::default();
        let spec = ZoneSpec::rate(
            "a",
            KeyKind::ClientIp,
            Rate::parse("1r/m").expect("rate"),
            0,
            10,
        );
        let first = reg.resolve(std::slice::from_ref(&spec));
        assert!(matches!(first["a"].check(1), Verdict::Allowed { .. }));
        let again = reg.resolve(std::slice::from_ref(&spec));
        assert!(
            matches!(again["a"].check(1), Verdict::Limited { .. }),
            "counter kept"
        );
        let changed = ZoneSpec {
            kind: ZoneKind::Rate {
                rate: Rate::parse("1r/m").expect("rate"),
                burst: 5,
            },
            ..spec
        };
        let fresh = reg.resolve(&[changed]);
        assert!(
            matches!(fresh["a"].check(1), Verdict::Allowed { .. }),
            "new spec, new counters"
        );
    }
}
