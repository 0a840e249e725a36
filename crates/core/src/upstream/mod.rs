//! Services, pools and servers: the weighted pool pick and the in-pool balancing, both lock-free.

pub mod affinity;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::config::rollout::{PoolOverride, StickyKey};
use crate::config::{Balance, PassivePolicy, ServerAddress, ServiceConfig, Transport};
use crate::rollout::{PoolWindow, WindowSpec};

pub mod names;
pub use names::Addresses;

/// State of one upstream server that outlives snapshots (kept across reloads and weight changes).
#[derive(Debug)]
pub struct ServerState {
    /// Requests in flight to this server (least-connections input).
    pub active: AtomicUsize,
    /// The active health checks' verdict; true until checks say otherwise.
    healthy: AtomicBool,
    /// Failures in the current passive streak (0: no streak; read on every success).
    streak_len: AtomicU32,
    /// The streak itself, touched only on failures and on the first success after them.
    streak: parking_lot::Mutex<Streak>,
    /// Ejected by passive checks until this instant (ms on the process clock); 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Requests queued for a slot under `max_conns` ([`slots`]).
    slots: slots::SlotSignal,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            active: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            streak_len: AtomicU32::new(0),
            streak: parking_lot::Mutex::new(Streak::default()),
            ejected_until_ms: AtomicU64::new(0),
            slots: slots::SlotSignal::default(),
        }
    }
}

/// Failures in a row on one server since its last success.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Streak {
    /// Connects that failed: the server's doing, whoever asked.
    pub connect_failures: u32,
    /// Responses that timed out after the whole request was sent.
    pub timeouts: u32,
    /// The client of the streak's first timeout.
    timeout_client: Option<IpAddr>,
    /// Whether another client's request timed out too.
    timeouts_from_several_clients: bool,
}

impl Streak {
    /// What counts towards `max_fails`: every connect failure, and the timeouts only once
    /// requests from at least two client addresses timed out (one client hammering a slow
    /// endpoint must not eject the server for everyone).
    pub fn counted(&self) -> u32 {
        let timeouts = if self.timeouts_from_several_clients {
            self.timeouts
        } else {
            0
        };
        self.connect_failures + timeouts
    }
}

impl fmt::Display for Streak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.connect_failures > 0 {
            parts.push(format!("{} failed connects", self.connect_failures));
        }
        if self.timeouts > 0 {
            let clients = if self.timeouts_from_several_clients {
                "several clients"
            } else {
                "one client"
            };
            parts.push(format!(
                "{} response timeouts from {clients}",
                self.timeouts
            ));
        }
        f.write_str(&parts.join(" and "))
    }
}

/// A failure seen on the request path (passive health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made.
    Connect,
    /// No (complete) response within `read_timeout` after the request was sent, or the
    /// connection broke mid-response; for the request of `client`.
    Response { client: Option<IpAddr> },
}

/// Milliseconds since the process started: a cheap monotonic clock for ejection deadlines.
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl ServerState {
    /// Whether requests may go here: healthy by active checks and not ejected by passive ones.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    /// Sets the active-check verdict; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// A request reached the server: the passive failure streak ends.
    pub fn report_success(&self) {
        if self.streak_len.load(Ordering::Relaxed) != 0 {
            *self.streak.lock() = Streak::default();
            self.streak_len.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure. Returns the streak when it now counts `policy.max_fails` failures: the
    /// caller decides whether the server may be spared ([`Service::can_spare`]) and calls
    /// [`ServerState::eject`]; the streak starts over either way.
    pub fn report_failure(&self, policy: &PassivePolicy, failure: Failure) -> Option<Streak> {
        if policy.max_fails == 0 {
            return None;
        }
        let mut streak = self.streak.lock();
        match failure {
            Failure::Connect => streak.connect_failures += 1,
            Failure::Response { client } => {
                streak.timeouts += 1;
                match (streak.timeout_client, client) {
                    (None, c) => streak.timeout_client = c.or(streak.timeout_client),
                    (Some(first), Some(c)) if first != c => {
                        streak.timeouts_from_several_clients = true
                    }
                    _ => {}
                }
                if streak.timeout_client.is_none() {
                    // A client without an address (not expected) cannot be told apart.
                    streak.timeouts_from_several_clients = true;
                }
            }
        }
        self.streak_len.fetch_add(1, Ordering::Relaxed);
        if streak.counted() < policy.max_fails {
            return None;
        }
        let full = std::mem::take(&mut *streak);
        self.streak_len.store(0, Ordering::Relaxed);
        Some(full)
    }

    /// Takes the server out of rotation for `policy.fail_timeout`.
    pub fn eject(&self, policy: &PassivePolicy) {
        let until = clock_ms() + policy.fail_timeout.as_millis() as u64;
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
    }

    /// Once, when a passive ejection has run out: clears it and returns true (the health
    /// service logs and counts the return).
    pub fn take_return(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0
            && clock_ms() >= until
            && self
                .ejected_until_ms
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// What outlives snapshots, by name: server states by address, pool windows by (service, pool).
/// Owned by the runtime's writer (no lock of its own) and used only when compiling a snapshot.
#[derive(Debug, Default)]
pub struct ServerRegistry {
    states: HashMap<SocketAddr, Arc<ServerState>>,
    /// The states the snapshot being compiled uses: addresses a name no longer resolves to
    /// lose theirs at [`ServerRegistry::commit`] (requests still on them keep their `Arc`).
    next_states: HashMap<SocketAddr, Arc<ServerState>>,
    windows: HashMap<(Arc<str>, Arc<str>), Arc<PoolWindow>>,
    /// The windows the snapshot being compiled uses; [`ServerRegistry::commit`] keeps only them.
    next_windows: HashMap<(Arc<str>, Arc<str>), Arc<PoolWindow>>,
    /// The key of affinity cookie values for services without a `secret` (the runtime sets the
    /// one it keeps in the state directory).
    pub affinity_key: affinity::AffinityKey,
}

impl ServerRegistry {
    /// The state for `addr`, created on first use.
    pub fn state(&mut self, addr: SocketAddr) -> Arc<ServerState> {
        if let Some(state) = self.next_states.get(&addr) {
            // Another pool of this compile has the address: one server, one state.
            return state.clone();
        }
        let state = self.states.get(&addr).cloned().unwrap_or_default();
        self.next_states.insert(addr, state.clone());
        state
    }

    /// The live window of `pool` of `service`: kept while its shape (`spec`) stays the same,
    /// fresh when the pool is new or its shape changed.
    fn window(&mut self, service: &Arc<str>, pool: &Arc<str>, spec: WindowSpec) -> Arc<PoolWindow> {
        let key = (service.clone(), pool.clone());
        let window = self
            .windows
            .get(&key)
            .filter(|w| w.spec() == spec)
            .cloned()
            .unwrap_or_else(|| Arc::new(PoolWindow::new(spec)));
        self.next_windows.insert(key, window.clone());
        window
    }

    /// Ends a compile: pools the new snapshot no longer has lose their windows.
    pub fn commit(&mut self) {
        self.windows = std::mem::take(&mut self.next_windows);
        self.states = std::mem::take(&mut self.next_states);
    }
}

/// Decrements a server's in-flight count when the request is done with it.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ServerState>);

impl ActiveGuard {
    pub fn state(&self) -> &ServerState {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.slots.freed();
    }
}

#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub weight: u32,
    pub state: Arc<ServerState>,
    /// The host as the config names it: the DNS name of a named server (for SNI and `Host`),
    /// else the IP address.
    pub host: Arc<str>,
    /// Whether `host` is a DNS name (this server is one of its addresses).
    pub named: bool,
    /// Takes requests only while no other server of the pool can.
    pub backup: bool,
}

impl Server {
    pub fn acquire(&self) -> ActiveGuard {
        self.state.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.state.clone())
    }
}

/// Picks an index by weight: cumulative sums built once, a binary search per pick.
#[derive(Debug, Clone)]
pub struct WeightedIndex {
    cumulative: Vec<u64>,
}

impl WeightedIndex {
    /// `None` when every weight is 0.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Option<Self> {
        let mut total = 0u64;
        let cumulative: Vec<u64> = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        (total > 0).then_some(WeightedIndex { cumulative })
    }

    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The index owning point `x` in `[0, total)`; a zero weight owns no point, so is never returned.
    pub fn index_of(&self, x: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= x)
    }

    pub fn pick(&self) -> usize {
        self.index_of(fastrand::u64(0..self.total()))
    }
}

/// A stable 64-bit hash of a sticky key (FNV-1a, then a SplitMix64 finish so that similar keys
/// land far apart): the same key maps to the same point in every process and version.
pub fn sticky_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub weight: u32,
    pub servers: Vec<Server>,
    /// The pool's live window of requests, errors and latencies (rollouts judge it); the same
    /// window across snapshots while the pool and its shape stay.
    pub window: Arc<PoolWindow>,
    /// How its servers are reached (protocol, TLS with its client config built at load).
    pub transport: Transport,
    /// Round robin order honouring server weights, interleaved (a, b, a, c, a, b ...): the
    /// servers that are not backups.
    schedule: Vec<u32>,
    /// The same for the backup servers, used only when no other server is available.
    backup_schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Pool {
    /// Like [`Pool::pick`] among servers that passive checks ejected but active checks find
    /// healthy: when every server of the pool has failed, all are tried again (nginx).
    pub fn pick_ejected(&self, exclude: &[SocketAddr]) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.servers.len();
        (0..n).map(|k| (start + k) % n).find(|&i| {
            let s = &self.servers[i];
            s.state.is_healthy() && !exclude.contains(&s.addr)
        })
    }

    /// Picks a server not in `exclude`, or `None` when every server is excluded. Backup
    /// servers are picked only when no other server is available.
    pub fn pick(&self, balance: Balance, exclude: &[SocketAddr]) -> Option<usize> {
        self.pick_among(balance, exclude, false)
            .or_else(|| self.pick_among(balance, exclude, true))
    }

    fn pick_among(&self, balance: Balance, exclude: &[SocketAddr], backup: bool) -> Option<usize> {
        let usable = |i: usize| {
            let s = &self.servers[i];
            s.backup == backup && s.state.is_available() && !exclude.contains(&s.addr)
        };
        match balance {
            Balance::RoundRobin => {
                let schedule = if backup {
                    &self.backup_schedule
                } else {
                    &self.schedule
                };
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let len = schedule.len();
                (0..len)
                    .map(|k| schedule[(start + k) % len] as usize)
                    .find(|&i| usable(i))
            }
            Balance::LeastConn => {
                // Fewest in flight per unit of weight; ties rotate so idle pools still spread.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let n = self.servers.len();
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| usable(i))
                    .min_by(|&a, &b| {
                        let load = |i: usize| {
                            let s = &self.servers[i];
                            (s.state.active.load(Ordering::Relaxed) as u64 + 1) * 1_000_000
                                / u64::from(s.weight)
                        };
                        load(a).cmp(&load(b))
                    })
            }
        }
    }
}

/// Smooth weighted round robin order for one cycle (nginx's algorithm, computed once).
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / g.max(1))).collect();
    let total: i64 = weights.iter().sum();
    // Bound the table: past 4096 entries, proportions are kept by scaling down.
    if total > 4096 {
        let scaled: Vec<u32> = weights
            .iter()
            // A zero weight (a server left out of this schedule) stays out.
            .map(|&w| {
                if w == 0 {
                    0
                } else {
                    (w * 4096 / total).max(1) as u32
                }
            })
            .collect();
        return smooth_schedule(&scaled);
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub balance: Balance,
    pub passive: PassivePolicy,
    pub pools: Vec<Pool>,
    picker: Option<WeightedIndex>,
    /// Pick the pool by a hash of the client rather than at random.
    pub sticky: Option<StickyKey>,
    /// A header/cookie naming the pool (testers).
    pub pool_override: Option<PoolOverride>,
    /// Set while a rollout with shielding is active: where a failed canary request is retried.
    pub shield: Option<Shield>,
    /// Keep each client on one server of its pool (`[services.NAME.affinity]`).
    pub affinity: Option<affinity::Affinity>,
    /// Keep-alive and `max_conns` towards the servers ([`slots`]).
    pub upstream: crate::config::UpstreamConn,
}

/// During a rollout: an idempotent request that failed on `canary` is retried once on `stable`.
#[derive(Debug, Clone)]
pub struct Shield {
    pub canary: usize,
    pub stable: usize,
    pub methods: Vec<http::Method>,
}

impl Service {
    /// Compiles a service, a named server becoming one server per address `addresses` holds
    /// for it; call [`ServerRegistry::commit`] once every service of the snapshot is built.
    pub fn build(
        cfg: &ServiceConfig,
        registry: &mut ServerRegistry,
        addresses: &Addresses,
    ) -> Service {
        let name: Arc<str> = cfg.name.as_str().into();
        let pools: Vec<Pool> = cfg
            .pools
            .iter()
            .map(|p| {
                let mut servers: Vec<Server> = Vec::new();
                for s in &p.servers {
                    let (host, named, addrs): (Arc<str>, bool, Vec<SocketAddr>) = match &s.address {
                        ServerAddress::Ip(a) => (a.ip().to_string().into(), false, vec![*a]),
                        ServerAddress::Name { host, port } => (
                            host.clone(),
                            true,
                            addresses
                                .of(host)
                                .iter()
                                .map(|ip| SocketAddr::new(*ip, *port))
                                .collect(),
                        ),
                    };
                    for addr in addrs {
                        // Two entries reaching one address (a name and an IP, or two names):
                        // one server, as its state is one.
                        if servers.iter().any(|s| s.addr == addr) {
                            continue;
                        }
                        servers.push(Server {
                            addr,
                            weight: s.weight,
                            state: registry.state(addr),
                            host: host.clone(),
                            named,
                            backup: s.backup,
                        });
                    }
                }
                let schedule_of = |backup: bool| {
                    let weights: Vec<u32> = servers
                        .iter()
                        .map(|s| if s.backup == backup { s.weight } else { 0 })
                        .collect();
                    smooth_schedule(&weights)
                };
                let pool: Arc<str> = p.name.as_str().into();
                Pool {
                    window: registry.window(&name, &pool, cfg.rollout.window),
                    name: pool,
                    weight: p.weight,
                    transport: p.transport.clone(),
                    schedule: schedule_of(false),
                    backup_schedule: schedule_of(true),
                    servers,
                    next: AtomicUsize::new(fastrand::usize(..1024)),
                }
            })
            .collect();
        let picker = WeightedIndex::new(pools.iter().map(|p| p.weight));
        let affinity = cfg
            .affinity
            .as_ref()
            .map(|a| affinity::Affinity::build(a, &name, &pools, &registry.affinity_key));
        Service {
            name,
            balance: cfg.balance,
            passive: cfg.passive.clone(),
            pools,
            picker,
            sticky: cfg.sticky.clone(),
            pool_override: cfg.pool_override.clone(),
            shield: None,
            affinity,
            upstream: cfg.upstream,
        }
    }

    /// Picks a pool by the current weights; `None` only if every weight is 0.
    pub fn pick_pool(&self) -> Option<usize> {
        self.picker.as_ref().map(WeightedIndex::pick)
    }

    /// The pool owning the point `hash` maps to: pools own consecutive ranges of the hash space
    /// in config order, sized by weight. When weight moves from one pool to its neighbour only the
    /// hashes at the boundary change owner, all in the same direction: as a canary's weight rises,
    /// clients only move from stable to canary, never back.
    pub fn pick_pool_by(&self, hash: u64) -> Option<usize> {
        let picker = self.picker.as_ref()?;
        let x = (u128::from(hash) * u128::from(picker.total())) >> 64;
        // x < total, as hash < 2^64.
        Some(picker.index_of(x as u64))
    }

    /// When the picked pool has no available server: another pool with weight above 0 that has
    /// one, by weight. Pools at weight 0 never get traffic, not even as a fallback.
    pub fn fallback_pool(&self, failed: usize) -> Option<usize> {
        let weights = self.pools.iter().enumerate().map(|(i, p)| {
            let usable = i != failed && p.servers.iter().any(|s| s.state.is_available());
            if usable {
                p.weight
            } else {
                0
            }
        });
        WeightedIndex::new(weights).map(|w| w.pick())
    }

    /// Whether `server` of `pool` may be ejected: another server could take its traffic (one
    /// of the pool, or one of another pool with weight above 0 that would take the pool's
    /// traffic as a fallback). Passive ejection never removes the last one.
    pub fn can_spare(&self, pool: usize, server: SocketAddr) -> bool {
        let in_pool = self.pools[pool]
            .servers
            .iter()
            .any(|s| s.addr != server && s.state.is_available());
        in_pool
            || self.pools.iter().enumerate().any(|(i, p)| {
                i != pool
                    && p.weight > 0
                    && p.servers
                        .iter()
                        .any(|s| s.addr != server && s.state.is_available())
            })
    }

    /// Servers of a pool that may take requests now.
    pub fn available_servers(&self, pool: usize) -> usize {
        self.pools[pool]
            .servers
            .iter()
            .filter(|s| s.state.is_available())
            .count()
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| &*p.name == name)
    }
}

pub mod slots;
#[cfg(test)]
mod tests;
