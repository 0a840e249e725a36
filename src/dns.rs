//! Server names kept resolved: a background service looks each name up again at its TTL (clamped to `resolve_min`..`resolve_max`) and publishes changed addresses as a new snapshot.
//!
//! Nothing here runs on the request path: requests see the addresses of the snapshot they
//! loaded. A failed lookup keeps the name's last good addresses and is retried with backoff
//! (`resolve_min`, doubling up to `resolve_max`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError, ServerSettings};
use crate::runtime::Runtime;
use crate::upstream::names::{Addresses, Answer};

/// How long answers wait for each other to be published in one snapshot.
const TICK: Duration = Duration::from_millis(100);
/// One lookup's limit (hickory retries within it).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// A resolver for `settings`: the `[server] resolvers` if any, else `/etc/resolv.conf`. No cache:
/// every lookup asks the server, as the service decides when to ask.
pub fn resolver(settings: &ServerSettings) -> Result<TokioResolver, SetupError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.resolvers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| SetupError::Resolver(e.to_string()))?
    } else {
        let servers = settings
            .resolvers
            .iter()
            .map(|addr| name_server(*addr))
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            provider,
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    builder
        .build()
        .map_err(|e| SetupError::Resolver(e.to_string()))
}

/// A name server at `addr`, over UDP with TCP for truncated answers.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Looks `name` up (A and AAAA): the answer and, for a good one, how long it is valid.
pub async fn lookup(resolver: &TokioResolver, name: &str) -> (Answer, Option<Duration>) {
    // A trailing dot: the name as written, never completed with search domains... unless it
    // has no dot at all (a Docker Compose service name), which the system's search list may
    // need to complete.
    let query = if name.contains('.') && !name.ends_with('.') {
        format!("{name}.")
    } else {
        name.to_string()
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(query.as_str())).await {
        Err(_) => (
            Answer::Failed(format!("no answer within {LOOKUP_TIMEOUT:?}")),
            None,
        ),
        Ok(Err(e)) if e.is_nx_domain() => (Answer::Failed("NXDOMAIN: no such name".into()), None),
        Ok(Err(e)) if e.is_no_records_found() => {
            (Answer::Failed("no A or AAAA record (NODATA)".into()), None)
        }
        Ok(Err(NetError::Dns(DnsError::ResponseCode(code)))) => (
            Answer::Failed(format!("{} ({code})", code_name(code))),
            None,
        ),
        Ok(Err(e)) => (Answer::Failed(e.to_string()), None),
        Ok(Ok(found)) => {
            let addrs: Vec<_> = found.iter().collect();
            if addrs.is_empty() {
                return (Answer::Failed("no A or AAAA record (NODATA)".into()), None);
            }
            let ttl = found
                .valid_until()
                .saturating_duration_since(Instant::now());
            (Answer::Found(addrs), Some(ttl))
        }
    }
}

/// The name DNS operators use for a response code: `SERVFAIL`, `REFUSED` ...
fn code_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        other => format!("rcode {}", u16::from(other)),
    }
}

/// Every server name of `config`, once, with where it is first written (line, column).
pub fn names(config: &Config) -> Vec<(Arc<str>, (usize, usize))> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for server in config
        .services
        .iter()
        .flat_map(|s| &s.pools)
        .flat_map(|p| &p.servers)
    {
        if let Some(name) = server.address.name() {
            if seen.insert(name.clone()) {
                out.push((name.clone(), server.at));
            }
        }
    }
    out
}

/// Looks up every server name of `config` at once: the table to start serving with, and a
/// warning (file:line:col) for each name that did not resolve. `serve` starts anyway; the
/// service retries those names.
pub async fn resolve_now(config: &Config) -> (Addresses, Vec<ConfigError>) {
    let mut table = Addresses::default();
    let mut warnings = Vec::new();
    let names = names(config);
    if names.is_empty() {
        return (table, warnings);
    }
    let file = config.source.display().to_string();
    let resolver = match resolver(&config.server) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            warnings.push(ConfigError {
                file,
                line: 1,
                column: 1,
                reason: format!("warning: {e}; server names cannot resolve"),
            });
            return (table, warnings);
        }
    };
    let mut lookups = JoinSet::new();
    for (name, at) in names {
        let resolver = resolver.clone();
        lookups.spawn(async move {
            let (answer, _) = lookup(&resolver, &name).await;
            (name, at, answer)
        });
    }
    while let Some(done) = lookups.join_next().await {
        let Ok((name, (line, column), answer)) = done else {
            continue;
        };
        if let Answer::Failed(why) = &answer {
            warnings.push(ConfigError {
                file: file.clone(),
                line,
                column,
                reason: format!(
                    "warning: server name \"{name}\" does not resolve ({why}); its servers take no requests until it does, and it is retried"
                ),
            });
        }
        table.apply(&name, answer, SystemTime::now());
    }
    warnings.sort_by_key(|w| (w.line, w.column));
    (table, warnings)
}

/// [`resolve_now`] from synchronous code (start-up, `check`), on a thread of its own with its own
/// small runtime, so that it works inside or outside one.
pub fn resolve_blocking(config: &Config) -> (Addresses, Vec<ConfigError>) {
    if names(config).is_empty() {
        return (Addresses::default(), Vec::new());
    }
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(resolve_now(config)))
    };
    let file = config.source.display().to_string();
    let failed = |why: String| {
        let warning = ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            reason: format!("warning: server names were not resolved: {why}"),
        };
        (Addresses::default(), vec![warning])
    };
    std::thread::scope(|scope| match scope.spawn(run).join() {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => failed("the lookup thread panicked".into()),
    })
}

/// When each name is next due, and its failures in a row (for the backoff).
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    failures: u32,
}

/// When a name is next looked up: at its TTL after a good answer, else after a backoff that
/// doubles from `min` with each failure in a row; always within `min..=max`.
fn next_lookup(ttl: Option<Duration>, failures: u32, min: Duration, max: Duration) -> Duration {
    match ttl {
        Some(ttl) => ttl.clamp(min, max),
        None => min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(max),
    }
}

/// The background service: re-resolves every server name of the snapshot in force.
pub struct NameResolver {
    runtime: Arc<Runtime>,
}

impl NameResolver {
    pub fn new(runtime: Arc<Runtime>) -> NameResolver {
        NameResolver { runtime }
    }
}

/// A lookup's outcome: the name, the answer, and for a good one how long it is valid.
type Answered = (Arc<str>, Answer, Option<Duration>);

/// The service's bookkeeping between wake-ups.
#[derive(Default)]
struct Schedule {
    /// The config the names were read from (a new one is read again).
    config: Option<Arc<Config>>,
    names: HashSet<Arc<str>>,
    /// When each name not being looked up is next due.
    due: HashMap<Arc<str>, Due>,
    /// The names being looked up, with their failures in a row so far.
    in_flight: HashMap<Arc<str>, u32>,
    /// Names whose failure was already logged (logged again once they recover and fail anew).
    failing: HashSet<Arc<str>>,
    /// The resolver, rebuilt when `[server] resolvers` changes.
    resolver: Option<(Vec<SocketAddr>, Arc<TokioResolver>)>,
}

impl Schedule {
    /// The earliest time a name not in flight is due (`None`: nothing to wait for).
    fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|d| d.at).min()
    }
}

#[async_trait]
impl BackgroundService for NameResolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut published = self.runtime.subscribe();
        let mut sched = Schedule::default();
        let mut lookups: JoinSet<Answered> = JoinSet::new();
        // Answers waiting to be published together, and since when the first has waited.
        let mut answers: Vec<Answered> = Vec::new();
        let mut waiting_since: Option<Instant> = None;
        loop {
            let snap = published.borrow_and_update().clone();
            let settings = &snap.config.server;
            if !sched
                .config
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &snap.config))
            {
                self.read_config(&snap.config, &mut sched);
            }
            let resolver = match &sched.resolver {
                Some((servers, r)) if *servers == settings.resolvers => r.clone(),
                _ => match resolver(settings) {
                    Ok(r) => {
                        let r = Arc::new(r);
                        sched.resolver = Some((settings.resolvers.clone(), r.clone()));
                        r
                    }
                    Err(e) => {
                        crate::lograte::error("dns-setup", format_args!("{e}"));
                        tokio::select! {
                            _ = tokio::time::sleep(settings.resolve_min) => continue,
                            _ = shutdown.changed() => return,
                        }
                    }
                },
            };
            let now = Instant::now();
            if sched.next_due().is_some_and(|at| at <= now) {
                let due: Vec<(Arc<str>, u32)> = sched
                    .due
                    .iter()
                    .filter(|(_, d)| d.at <= now)
                    .map(|(n, d)| (n.clone(), d.failures))
                    .collect();
                for (name, failures) in due {
                    sched.due.remove(&name);
                    sched.in_flight.insert(name.clone(), failures);
                    let resolver = resolver.clone();
                    lookups.spawn(async move {
                        let (answer, ttl) = lookup(&resolver, &name).await;
                        (name, answer, ttl)
                    });
                }
            }
            // Answers are published together: once every lookup under way is back, or TICK
            // after the first of them came.
            if !answers.is_empty()
                && (lookups.is_empty() || waiting_since.is_some_and(|t| t.elapsed() >= TICK))
            {
                self.apply(std::mem::take(&mut answers), settings, &mut sched);
                waiting_since = None;
            }
            let wake = match (sched.next_due(), waiting_since) {
                (Some(due), Some(w)) => Some(due.min(w + TICK)),
                (due, w) => due.or(w.map(|w| w + TICK)),
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = lookups.join_next(), if !lookups.is_empty() => {
                    answers.extend(done.and_then(Result::ok));
                    while let Some(done) = lookups.try_join_next() {
                        answers.extend(done.ok());
                    }
                    waiting_since.get_or_insert_with(Instant::now);
                }
                _ = sleep => {}
                _ = published.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl NameResolver {
    /// A new config: its names become the schedule (new ones due now), and names it no longer
    /// has are forgotten, also in the published table.
    fn read_config(&self, config: &Arc<Config>, sched: &mut Schedule) {
        let names: HashSet<Arc<str>> = names(config).into_iter().map(|(n, _)| n).collect();
        let now = Instant::now();
        sched.due.retain(|n, _| names.contains(n));
        sched.failing.retain(|n| names.contains(n));
        for name in &names {
            if !sched.in_flight.contains_key(name) {
                sched.due.entry(name.clone()).or_insert(Due {
                    at: now,
                    failures: 0,
                });
            }
        }
        if self
            .runtime
            .snapshot()
            .addresses
            .iter()
            .any(|(n, _)| !names.contains(n))
        {
            self.runtime
                .update_addresses(|a| a.retain(|n| names.contains(n)));
        }
        sched.names = names;
        sched.config = Some(config.clone());
    }

    /// Schedules the next lookup of each answered name, counts and logs the answers, and
    /// publishes the changed addresses in one snapshot (none when nothing changed).
    fn apply(&self, answers: Vec<Answered>, settings: &ServerSettings, sched: &mut Schedule) {
        let now = Instant::now();
        for (name, answer, ttl) in &answers {
            let failures = sched.in_flight.remove(name).unwrap_or(0);
            if !sched.names.contains(name) {
                continue;
            }
            let failures = match answer {
                Answer::Found(addrs) => {
                    if sched.failing.remove(name) {
                        log::info!("dns: server name \"{name}\" resolves again: {addrs:?}");
                    }
                    0
                }
                Answer::Failed(why) => {
                    if sched.failing.insert(name.clone()) {
                        log::warn!(
                            "dns: server name \"{name}\" does not resolve ({why}); keeping its last good addresses and retrying"
                        );
                    }
                    failures.saturating_add(1)
                }
            };
            let at = now + next_lookup(*ttl, failures, settings.resolve_min, settings.resolve_max);
            sched.due.insert(name.clone(), Due { at, failures });
            if settings.metrics {
                self.runtime
                    .metrics
                    .record_lookup(name, matches!(answer, Answer::Found(_)));
            }
        }
        // Most rounds confirm what is published: then the writer is not even asked.
        let published = self.runtime.snapshot().addresses.clone();
        if !answers
            .iter()
            .any(|(n, a, _)| sched.names.contains(n) && published.changes(n, a))
        {
            return;
        }
        let wall = SystemTime::now();
        self.runtime.update_addresses(|table| {
            let mut changed = false;
            for (name, answer, _) in answers {
                // A name a reload removed while its lookup ran is not brought back.
                if !sched.names.contains(&name) {
                    continue;
                }
                let before: Vec<_> = table.of(&name).to_vec();
                let shown = table.apply(&name, answer, wall);
                let after = table.of(&name);
                if before != after {
                    log::info!(
                        "dns: server name \"{name}\" now resolves to {after:?} (was {before:?})"
                    );
                }
                changed |= shown;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_answers_follow_the_ttl_within_bounds_and_failures_back_off() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let s = Duration::from_secs;
        assert_eq!(
            next_lookup(Some(s(0)), 0, min, max),
            s(1),
            "TTL 0 → resolve_min"
        );
        assert_eq!(next_lookup(Some(s(30)), 0, min, max), s(30));
        assert_eq!(
            next_lookup(Some(s(3600)), 0, min, max),
            s(60),
            "clamped to resolve_max"
        );
        assert_eq!(next_lookup(None, 1, min, max), s(1));
        assert_eq!(next_lookup(None, 2, min, max), s(2));
        assert_eq!(next_lookup(None, 4, min, max), s(8));
        assert_eq!(next_lookup(None, 10, min, max), s(60));
        assert_eq!(next_lookup(None, u32::MAX, min, max), s(60));
    }
}
