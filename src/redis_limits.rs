//! The fleet's Redis for `scope = "cluster"` zones: one count per key for every node, and a bounded local share of the limit while Redis is slow or down.
//!
//! Each check is one `EVALSHA` of a Lua script (atomic in Redis, on Redis's clock) over a
//! multiplexed connection of the worker thread's own: concurrent requests pipeline on it. A zone
//! large enough asks for a lease of a key's requests instead of one (`limits::lease`: a batch taken
//! at once and spent locally, within 5 % of the zone's capacity each way), so most of its requests
//! cost no round trip; an expired lease's unspent requests go back. A check waits at most
//! `[cluster] redis_timeout`; a timeout or an error marks Redis down, and while it is down no
//! request waits on it at all: the zone answers from a local limiter of `rate / nodes` (and
//! `burst / nodes`), counted in `switchyard_limit_fallback_total{zone}` and logged at most once per
//! 10 s. A probe (`PING` every second, reconnecting as needed) marks it up again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Script};
use arc_swap::{ArcSwap, ArcSwapOption};

use crate::api::RedisView;
use crate::config::ClusterConfig;
use crate::limits::lease::{self, Held, Leases};
use crate::limits::{new_zone, Limiter, SharedCheck, SharedZone, Verdict, ZoneKind, ZoneSpec};
use crate::lograte;

/// How often the probe pings Redis (and tries to reconnect while it is down).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The longest a (re)connection or a script load may take; off the request path.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// GCRA with nginx's `limit_req ... burst=B nodelay`: `burst + 1` at once, then one per interval.
/// KEYS[1]: the key. ARGV: the emission interval (µs), the burst, the requests wanted (1, or a
/// lease's batch), the requests given back first (an expired lease's unspent ones). The key holds
/// the theoretical arrival time (µs, Redis's clock) and expires when the bucket is full again.
/// Returns {granted (≥ 1), remaining, reset µs} or {0, retry after µs}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) - back * interval
if tat < now then tat = now end
local tolerance = interval * burst
if tat - now > tolerance then
  if back > 0 then
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  end
  return {0, tat - tolerance - now}
end
local k = math.min(want, math.floor((tolerance - (tat - now)) / interval) + 1)
local new = tat + k * interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000))
return {k, math.floor(((burst + 1) * interval - (new - now)) / interval), new - now}
"#;

/// The same two fixed windows weighted as a sliding one as the local `window` zone
/// (`limits/window.rs`), in a hash {w, c, p}: the window number, its count, the previous one's.
/// KEYS[1]: the key. ARGV: the period (µs), the limit, the requests wanted, the requests given
/// back first (to the window they were counted in).
/// Returns {granted (≥ 1), remaining, reset µs} or {0, retry after µs}.
const WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local w = math.floor(now / period)
local f = (now % period) / period
local v = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local kw = tonumber(v[1])
local c = tonumber(v[2]) or 0
local p = tonumber(v[3]) or 0
if kw == nil or w - kw > 1 then c = 0; p = 0
elseif w - kw == 1 then p = c; c = 0 end
if back > 0 and kw == w then c = math.max(0, c - back)
elseif back > 0 and kw == w - 1 then p = math.max(0, p - back) end
local seen = p * (1 - f) + c
local free = math.floor(limit - seen)
if free < 1 then
  if back > 0 then
    redis.call('HSET', KEYS[1], 'w', w, 'c', c, 'p', p)
    redis.call('PEXPIRE', KEYS[1], math.ceil(2 * period / 1000))
  end
  local room = limit - 1
  local wait
  if c <= room and p > 0 then
    wait = (1 - (room - c) / p) - f
  else
    local g = 0
    if c > 0 then g = math.max(0, 1 - room / c) end
    wait = 1 - f + g
  end
  return {0, math.floor(math.max(wait, 0) * period)}
end
local k = math.min(want, free)
redis.call('HSET', KEYS[1], 'w', w, 'c', c + k, 'p', p)
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * period / 1000))
return {k, math.floor(math.max(limit - seen - k, 0)), math.floor((2 - f) * period)}
"#;

/// Takes back requests counted for keys: another zone of the route refused the request, or a
/// lease expired unspent. KEYS: the keys. ARGV[1]: "rate" (ARGV[2]: the interval, µs) or
/// "window"; ARGV[2 + i]: how many for KEYS[i].
const REFUND: &str = r#"
local interval = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[2 + i])
  if ARGV[1] == 'rate' then
    local tat = tonumber(redis.call('GET', key))
    if tat then redis.call('SET', key, string.format('%d', tat - n * interval), 'KEEPTTL') end
  else
    local c = tonumber(redis.call('HGET', key, 'c'))
    if c and c > 0 then redis.call('HSET', key, 'c', math.max(0, c - n)) end
  end
end
return #KEYS
"#;

/// Upper bounds (µs) of the shared-check duration histogram.
const BUCKETS_US: [u64; 10] = [
    500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A worker thread's own connection to Redis, and the epoch it belongs to.
struct LocalConn {
    epoch: u64,
    conn: Option<MultiplexedConnection>,
    connecting: bool,
}

thread_local! {
    /// The request path's connection on this thread: pingora runs each worker thread as a
    /// runtime of its own, and a connection made there has its driver task there too, so a check
    /// wakes no other thread (the probe's connection lives on the background services' thread).
    static LOCAL: std::cell::RefCell<LocalConn> = const {
        std::cell::RefCell::new(LocalConn {
            epoch: 0,
            conn: None,
            connecting: false,
        })
    };
}

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid redis URL: {0}")]
    Url(String),
    #[error("{0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis TLS files: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// This node's link to the fleet's Redis: the connection, its health, the scripts and the
/// fallback counts. One per process, built from `[cluster]` at start.
pub struct RedisLimits {
    client: Client,
    /// Where it is, without credentials (for views and logs).
    address: String,
    /// The probe's connection (and the request path's until a worker thread has its own).
    conn: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    /// Counts outages: worker threads' connections made before the latest one are dropped.
    epoch: AtomicU64,
    reason: parking_lot::Mutex<String>,
    timeout: Duration,
    /// `PREFIX/limits/`: every zone's keys live under it.
    key_prefix: String,
    gcra: Script,
    window: Script,
    refund: Script,
    /// Requests decided by a zone's local fallback, by zone (kept across reloads).
    fallbacks: parking_lot::Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    timeouts: AtomicU64,
    errors: AtomicU64,
    /// Shared checks by duration (cumulative at render), and their sum in µs.
    durations: [AtomicU64; BUCKETS_US.len() + 1],
    duration_sum_us: AtomicU64,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("address", &self.address)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// The link for `[cluster] redis` (none configured: `None`). Connects later, in [`Self::run`].
    pub fn new(cfg: &ClusterConfig) -> Result<Option<Arc<RedisLimits>>, RedisError> {
        let Some(url) = &cfg.redis else {
            return Ok(None);
        };
        // The error may quote the URL, password included: say only what kind it is.
        let bad_url = |e: ::redis::RedisError| RedisError::Url(format!("{:?}", e.kind()));
        let client = if cfg.redis_ca.is_some() || cfg.redis_cert.is_some() {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| RedisError::Tls(format!("{}: {e}", p.display())))
            };
            let client_tls = match (&cfg.redis_cert, &cfg.redis_key) {
                (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                _ => None,
            };
            let certs = ::redis::TlsCertificates {
                client_tls,
                root_cert: cfg.redis_ca.as_deref().map(read).transpose()?,
            };
            Client::build_with_tls(url.expose().as_str(), certs).map_err(bad_url)?
        } else {
            Client::open(url.expose().as_str()).map_err(bad_url)?
        };
        let address = match client.get_connection_info().addr() {
            ::redis::ConnectionAddr::Tcp(h, p) => format!("redis://{h}:{p}"),
            ::redis::ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}"),
            other => other.to_string(),
        };
        Ok(Some(Arc::new(RedisLimits {
            client,
            address,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            epoch: AtomicU64::new(1),
            reason: parking_lot::Mutex::new("not connected yet".into()),
            timeout: cfg.redis_timeout,
            key_prefix: format!("{}/limits/", cfg.prefix),
            gcra: Script::new(GCRA),
            window: Script::new(WINDOW),
            refund: Script::new(REFUND),
            fallbacks: Default::default(),
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            durations: Default::default(),
            duration_sum_us: AtomicU64::new(0),
        })))
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The zone for a `scope = "cluster"` spec.
    pub fn zone(self: &Arc<Self>, spec: ZoneSpec) -> Arc<dyn Limiter> {
        let counter = self
            .fallbacks
            .lock()
            .entry(spec.name.clone())
            .or_default()
            .clone();
        let fallback = Fallback {
            nodes: 1,
            zone: new_zone(spec.fallback(1)),
        };
        Arc::new(ClusterZone {
            key_prefix: format!("{}{}/", self.key_prefix, spec.name),
            leases: Leases::new(spec.max_keys),
            spec,
            redis: self.clone(),
            fallback: ArcSwap::from_pointee(fallback),
            fallbacks: counter,
        })
    }

    /// The connection a check uses while Redis is up: this worker thread's own, or the probe's
    /// until this thread has one.
    fn usable(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        let here = LOCAL.with_borrow(|l| l.conn.clone().filter(|_| l.epoch == epoch));
        if here.is_some() {
            return here;
        }
        self.connect_here(epoch);
        self.conn.load().as_deref().cloned()
    }

    /// Starts connecting this worker thread's own connection (once per epoch; a failure leaves
    /// the thread on the probe's connection until the next outage ends).
    fn connect_here(self: &Arc<Self>, epoch: u64) {
        let start = LOCAL.with_borrow_mut(|l| {
            if l.epoch != epoch {
                *l = LocalConn {
                    epoch,
                    conn: None,
                    connecting: false,
                };
            }
            !std::mem::replace(&mut l.connecting, true)
        });
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !start {
            return;
        }
        let redis = self.clone();
        // Spawned here, so the connection's driver runs on this thread's runtime too.
        runtime.spawn(async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(None);
            if let Ok(conn) = redis
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                LOCAL.with_borrow_mut(|l| {
                    if l.epoch == epoch {
                        l.conn = Some(conn);
                    }
                });
            }
        });
    }

    /// A request found Redis slow or failing: no request waits on it until the probe says so.
    fn mark_down(&self, why: &RedisError) {
        match why {
            RedisError::Timeout(_) => self.timeouts.fetch_add(1, Ordering::Relaxed),
            _ => self.errors.fetch_add(1, Ordering::Relaxed),
        };
        if self.up.swap(false, Ordering::Relaxed) {
            self.epoch.fetch_add(1, Ordering::Relaxed);
            *self.reason.lock() = why.to_string();
            log::warn!(
                "Redis at {} is out of reach ({why}): cluster zones fall back to local limits until it answers again",
                self.address
            );
        }
    }

    fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.durations[i].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Connects, pings every [`PROBE_EVERY`] and marks Redis up or down, until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.probe().await,
                _ = &mut stop => return,
            }
        }
    }

    /// One probe: (re)connect if needed, PING within the request timeout; on the way up, load
    /// the scripts (a restarted Redis has forgotten them) before any request uses it.
    async fn probe(&self) {
        let result = async {
            let conn = match self.conn.load_full() {
                Some(c) => (*c).clone(),
                None => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(None);
                    let c = self
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    self.conn.store(Some(Arc::new(c.clone())));
                    c
                }
            };
            let mut ping = conn.clone();
            bounded(self.timeout, async {
                ::redis::cmd("PING")
                    .query_async::<String>(&mut ping)
                    .await
                    .map_err(RedisError::from)
            })
            .await?;
            if !self.is_up() {
                let mut load = conn.clone();
                bounded(CONNECT_TIMEOUT, async {
                    for s in [&self.gcra, &self.window, &self.refund] {
                        s.prepare_invoke().load_async(&mut load).await?;
                    }
                    Ok(())
                })
                .await?;
            }
            Ok::<(), RedisError>(())
        }
        .await;
        match result {
            Ok(()) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "Redis at {} answers: cluster zones count there again",
                        self.address
                    );
                    self.reason.lock().clear();
                }
            }
            Err(e) => {
                // Fresh connections next time: a stalled one may hold answers nobody awaits.
                self.conn.store(None);
                if self.up.swap(false, Ordering::Relaxed) {
                    self.epoch.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "Redis at {} is out of reach ({e}): cluster zones fall back to local limits",
                        self.address
                    );
                }
                *self.reason.lock() = e.to_string();
            }
        }
    }

    /// What `GET /v1/cluster` shows.
    pub fn view(&self) -> RedisView {
        let up = self.is_up();
        RedisView {
            address: self.address.clone(),
            state: if up { "up" } else { "down" }.into(),
            reason: (!up).then(|| self.reason.lock().clone()),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            fallbacks: self
                .fallbacks
                .lock()
                .iter()
                .map(|(zone, n)| (zone.clone(), n.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// The Redis gauges and counters for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP switchyard_redis_up Whether this node counts its cluster zones in Redis (0: they fall back to local limits).\n\
             # TYPE switchyard_redis_up gauge\n\
             switchyard_redis_up {}\n\
             # HELP switchyard_redis_failures_total Shared checks that found Redis slow (timeout) or failing (error).\n\
             # TYPE switchyard_redis_failures_total counter\n\
             switchyard_redis_failures_total{{reason=\"timeout\"}} {}\n\
             switchyard_redis_failures_total{{reason=\"error\"}} {}\n\
             # HELP switchyard_limit_fallback_total Requests a cluster zone decided with its local fallback (rate / nodes) while Redis was out of reach.\n\
             # TYPE switchyard_limit_fallback_total counter\n",
            u8::from(self.is_up()),
            self.timeouts.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        );
        for (zone, n) in self.fallbacks.lock().iter() {
            let _ = writeln!(
                out,
                "switchyard_limit_fallback_total{{zone=\"{}\"}} {}",
                escape_label(zone),
                n.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP switchyard_limit_shared_check_seconds How long cluster zones' checks took (Redis round trip, or the timeout and the fallback).\n\
             # TYPE switchyard_limit_shared_check_seconds histogram\n"
        );
        let mut total = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            total += self.durations[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "switchyard_limit_shared_check_seconds_bucket{{le=\"{}\"}} {total}",
                *bound as f64 / 1e6
            );
        }
        total += self.durations[BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = write!(
            out,
            "switchyard_limit_shared_check_seconds_bucket{{le=\"+Inf\"}} {total}\n\
             switchyard_limit_shared_check_seconds_sum {}\n\
             switchyard_limit_shared_check_seconds_count {total}\n",
            self.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// `fut`, or [`RedisError::Timeout`] past `limit`.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(RedisError::Timeout(limit)))
}

/// A zone's local limit for a fleet of `nodes`, rebuilt when the count changes.
#[derive(Debug)]
struct Fallback {
    nodes: usize,
    zone: Arc<dyn Limiter>,
}

/// A `scope = "cluster"` zone: counted in Redis, or by its local fallback while Redis is out of
/// reach.
pub struct ClusterZone {
    spec: ZoneSpec,
    redis: Arc<RedisLimits>,
    /// `PREFIX/limits/ZONE/`.
    key_prefix: String,
    fallback: ArcSwap<Fallback>,
    fallbacks: Arc<AtomicU64>,
    /// Requests taken from Redis ahead, by key (zones large enough to lease: `limits::lease`).
    leases: Leases,
}

impl std::fmt::Debug for ClusterZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterZone")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl ClusterZone {
    /// The fallback for a fleet of `nodes` (a new one, with fresh counts, when the count changed).
    fn fallback(&self, nodes: usize) -> Arc<dyn Limiter> {
        let nodes = nodes.max(1);
        let current = self.fallback.load();
        if current.nodes == nodes {
            return current.zone.clone();
        }
        let zone = new_zone(self.spec.fallback(nodes));
        self.fallback.store(Arc::new(Fallback {
            nodes,
            zone: zone.clone(),
        }));
        zone
    }

    fn redis_key(&self, key: u64) -> String {
        format!("{}{key:016x}", self.key_prefix)
    }

    /// One script call asking for `want` requests (giving `back` first): the verdict as Redis
    /// counted it, and how many it granted (0 when refused).
    async fn eval(
        &self,
        mut conn: MultiplexedConnection,
        key: u64,
        want: u32,
        back: u32,
    ) -> Result<(Verdict, u32), RedisError> {
        let mut call = match self.spec.kind {
            ZoneKind::Rate { rate, burst } => {
                let mut call = self.redis.gcra.key(self.redis_key(key));
                call.arg(micros(rate.interval())).arg(burst);
                call
            }
            ZoneKind::Window { rate } => {
                let mut call = self.redis.window.key(self.redis_key(key));
                call.arg(micros(rate.per)).arg(rate.requests);
                call
            }
            // Refused by the config's validation; counted locally should one ever get here.
            ZoneKind::Concurrency { .. } => return Ok((self.fallback(1).check(key), 1)),
        };
        let reply: Vec<i64> = call.arg(want).arg(back).invoke_async(&mut conn).await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        let granted = u32::try_from(at(0)).unwrap_or(0);
        let limit = self.spec.kind.capacity();
        Ok(if granted > 0 {
            (
                Verdict::Allowed {
                    limit,
                    remaining: u32::try_from(at(1)).unwrap_or(u32::MAX),
                    reset: Duration::from_micros(at(2)),
                },
                granted,
            )
        } else {
            (
                Verdict::Limited {
                    limit,
                    retry_after: Some(Duration::from_micros(at(1))),
                    status: self.spec.status,
                },
                0,
            )
        })
    }

    /// Tells Redis, off the request path, that `counts` requests (by key) were not used.
    fn give_back(&self, conn: MultiplexedConnection, counts: &[(u64, u32)]) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let interval = match self.spec.kind {
            ZoneKind::Rate { rate, .. } => Some(micros(rate.interval())),
            _ => None,
        };
        for chunk in counts.chunks(1000) {
            let keys: Vec<(String, u32)> = chunk
                .iter()
                .map(|(k, n)| (self.redis_key(*k), *n))
                .collect();
            let (redis, mut conn) = (self.redis.clone(), conn.clone());
            runtime.spawn(async move {
                let mut call = redis.refund.prepare_invoke();
                match interval {
                    Some(us) => call.arg("rate").arg(us),
                    None => call.arg("window").arg(0),
                };
                for (key, n) in &keys {
                    call.key(key).arg(*n);
                }
                let _ =
                    tokio::time::timeout(redis.timeout, call.invoke_async::<i64>(&mut conn)).await;
            });
        }
    }

    /// Counts the request locally (Redis out of reach).
    fn fall_back(&self, key: u64, nodes: usize) -> Verdict {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        let zone = self.fallback(nodes);
        lograte::warn(
            "redis-fallback",
            format_args!(
                "Redis at {} is out of reach: cluster zone \"{}\" counts on this node alone, at 1/{} of its limit",
                self.redis.address,
                self.spec.name,
                nodes.max(1)
            ),
        );
        zone.check(key)
    }
}

/// A label value as the Prometheus text format writes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Limiter for ClusterZone {
    fn spec(&self) -> &ZoneSpec {
        &self.spec
    }

    /// The local fallback's verdict (the request path calls [`SharedZone::check_shared`]).
    fn check(&self, key: u64) -> Verdict {
        let nodes = self.fallback.load().nodes;
        self.fall_back(key, nodes)
    }

    fn keys(&self) -> usize {
        self.fallback.load().zone.keys()
    }

    /// Also gives back to Redis the unspent requests of leases that expired since.
    fn sweep(&self) {
        self.fallback.load().zone.sweep();
        let unspent = self.leases.expire(Instant::now());
        if let Some(conn) = self.redis.conn.load_full().filter(|_| !unspent.is_empty()) {
            self.give_back((*conn).clone(), &unspent);
        }
    }

    fn refund(&self, key: u64) {
        self.fallback.load().zone.refund(key);
    }

    fn shared(&self) -> Option<&dyn SharedZone> {
        Some(self)
    }
}

impl SharedZone for ClusterZone {
    /// A live lease answers at once; otherwise one script call asks for a lease's batch (or
    /// one request where the zone is too small to lease) and keeps what the request did not use.
    fn check_shared(&self, key: u64, nodes: usize) -> SharedCheck<'_> {
        Box::pin(async move {
            let plan = lease::plan(self.spec.kind, nodes);
            let now = Instant::now();
            let (mut back, mut used) = (0, 0);
            if plan.is_some() {
                match self.leases.spend(key, now) {
                    Held::Spent { remaining, reset } => {
                        return Verdict::Allowed {
                            limit: self.spec.kind.capacity(),
                            remaining,
                            reset,
                        }
                    }
                    Held::Ask { unspent, used: u } => (back, used) = (unspent, u),
                }
            }
            let Some(conn) = self.redis.usable() else {
                return self.fall_back(key, nodes);
            };
            let want = match plan {
                Some(p) if self.leases.has_room(key) => p.want(used),
                _ => 1,
            };
            let keep = conn.clone();
            let (verdict, granted) =
                match bounded(self.redis.timeout, self.eval(conn, key, want, back)).await {
                    Ok(v) => v,
                    Err(e) => {
                        self.redis.mark_down(&e);
                        (self.fall_back(key, nodes), 0)
                    }
                };
            self.redis.observe(now.elapsed());
            match (verdict, plan) {
                (
                    Verdict::Allowed {
                        remaining, reset, ..
                    },
                    Some(p),
                ) if granted > 0 => {
                    let kept = self
                        .leases
                        .keep(key, granted, remaining, reset, p.lifetime, now);
                    match kept {
                        Err(left) if left > 0 => self.give_back(keep, &[(key, left)]),
                        _ => {}
                    }
                    Verdict::Allowed {
                        limit: self.spec.kind.capacity(),
                        remaining: remaining.saturating_add(granted - 1),
                        reset,
                    }
                }
                _ => verdict,
            }
        })
    }

    fn refund_shared(&self, key: u64) {
        if self.leases.give_back(key, Instant::now()) {
            return;
        }
        let Some(conn) = self.redis.usable() else {
            self.fallback.load().zone.refund(key);
            return;
        };
        self.give_back(conn, &[(key, 1)]);
    }
}
