//! Active health checks: a background service that probes every server of every checked service.
//!
//! The first probe of a server decides its state at once; after that it takes `unhealthy_threshold`
//! failures in a row to take it out and `healthy_threshold` successes in a row to bring it back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod probe;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::task::JoinSet;

use crate::config::{HealthCheck, Transport};
use crate::runtime::Runtime;
use crate::upstream::ServerState;
pub use probe::{probe, Endpoint, ProbeError};

/// How often the checker looks for probes that are due.
const TICK: Duration = Duration::from_millis(100);

/// Consecutive outcomes of one server's probes.
#[derive(Debug, Default)]
struct Streak {
    probed: bool,
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Records one outcome; returns the new health verdict when it should change.
    fn record(&mut self, ok: bool, currently_healthy: bool, check: &HealthCheck) -> Option<bool> {
        let first = !self.probed;
        self.probed = true;
        if ok {
            self.successes += 1;
            self.failures = 0;
            let back = first || self.successes >= check.healthy_threshold;
            (!currently_healthy && back).then_some(true)
        } else {
            self.failures += 1;
            self.successes = 0;
            let out = first || self.failures >= check.unhealthy_threshold;
            (currently_healthy && out).then_some(false)
        }
    }
}

pub struct HealthChecker {
    runtime: Arc<Runtime>,
}

impl HealthChecker {
    pub fn new(runtime: Arc<Runtime>) -> HealthChecker {
        HealthChecker { runtime }
    }
}

struct Target {
    service: Arc<str>,
    addr: SocketAddr,
    /// The server's name (SNI, Host) and its pool's transport.
    name: Arc<str>,
    transport: Transport,
    state: Arc<ServerState>,
    check: HealthCheck,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut streaks: HashMap<(Arc<str>, SocketAddr), Streak> = HashMap::new();
        let mut due: HashMap<(Arc<str>, Arc<str>), Instant> = HashMap::new();
        // The check each pool was last probed with: a changed one starts over.
        let mut checks: HashMap<(Arc<str>, Arc<str>), HealthCheck> = HashMap::new();
        // The newest published snapshot each round (no load of the swap: the runtime announces
        // each new generation on this watch).
        let published = self.runtime.subscribe();
        loop {
            let snap = published.borrow().clone();
            let now = Instant::now();
            let mut targets = Vec::new();
            let mut checked: HashSet<SocketAddr> = HashSet::new();
            let mut unchecked = Vec::new();
            let mut seen_pools = HashSet::new();
            for (svc, cfg) in snap.services.iter().zip(&snap.config.services) {
                for (pool, pool_cfg) in svc.pools.iter().zip(&cfg.pools) {
                    // A pool's own check wins over the service's.
                    let Some(check) = pool_cfg.health.as_ref().or(cfg.health.as_ref()) else {
                        unchecked.extend(pool.servers.iter().map(|s| (svc.name.clone(), s)));
                        continue;
                    };
                    let key = (svc.name.clone(), pool.name.clone());
                    seen_pools.insert(key.clone());
                    checked.extend(pool.servers.iter().map(|s| s.addr));
                    if checks.get(&key) != Some(check) {
                        // New or changed (a reload): the next probe decides each verdict anew.
                        checks.insert(key.clone(), check.clone());
                        due.insert(key.clone(), now);
                        for server in &pool.servers {
                            streaks.remove(&(svc.name.clone(), server.addr));
                        }
                    }
                    let next = due.entry(key).or_insert(now);
                    if *next > now {
                        continue;
                    }
                    *next = now + check.interval;
                    for server in &pool.servers {
                        targets.push(Target {
                            service: svc.name.clone(),
                            addr: server.addr,
                            name: server.host.clone(),
                            transport: pool.transport.clone(),
                            state: server.state.clone(),
                            check: check.clone(),
                        });
                    }
                }
            }
            checks.retain(|k, _| seen_pools.contains(k));
            due.retain(|k, _| seen_pools.contains(k));
            // No check (any more): up. An address another service checks keeps that verdict.
            for (service, server) in unchecked {
                if !checked.contains(&server.addr) && server.state.set_healthy(true) {
                    streaks.remove(&(service.clone(), server.addr));
                    log::info!(
                        "health: {} of service \"{service}\" has no active check any more: healthy",
                        server.addr
                    );
                }
            }
            self.note_returns(&snap);
            let mut probes = JoinSet::new();
            for t in targets {
                probes.spawn(async move {
                    let to = Endpoint {
                        addr: t.addr,
                        name: &t.name,
                        transport: &t.transport,
                    };
                    let result = probe(&to, &t.check).await;
                    (t, result)
                });
            }
            while let Some(done) = probes.join_next().await {
                let Ok((t, result)) = done else { continue };
                let streak = streaks.entry((t.service.clone(), t.addr)).or_default();
                if let Some(healthy) = streak.record(result.is_ok(), t.state.is_healthy(), &t.check)
                {
                    t.state.set_healthy(healthy);
                    let (server, service) = (t.addr, &*t.service);
                    match &result {
                        Ok(status) => tracing::info!(
                            target: "switchyard::health",
                            event = "healthy",
                            %server,
                            service,
                            status,
                            "health: {server} of service \"{service}\" is healthy again (status {status})"
                        ),
                        Err(e) => tracing::warn!(
                            target: "switchyard::health",
                            event = "unhealthy",
                            %server,
                            service,
                            error = %e,
                            "health: {server} of service \"{service}\" is unhealthy: {e}"
                        ),
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl HealthChecker {
    /// Logs and counts each server whose passive ejection has run out.
    fn note_returns(&self, snap: &crate::snapshot::Snapshot) {
        for svc in &snap.services {
            for server in svc.pools.iter().flat_map(|p| &p.servers) {
                if server.state.take_return() {
                    tracing::info!(
                        target: "switchyard::health",
                        event = "returned",
                        server = %server.addr,
                        service = &*svc.name,
                        "{} of service \"{}\" returns after its passive ejection ({:?})",
                        server.addr,
                        svc.name,
                        svc.passive.fail_timeout
                    );
                    if snap.config.server.metrics {
                        self.runtime.metrics.record_return(&svc.name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            host: None,
            expect_status: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    #[test]
    fn first_probe_decides_then_thresholds_apply() {
        let c = check(2, 3);
        let mut s = Streak::default();
        assert_eq!(
            s.record(false, true, &c),
            Some(false),
            "first failure takes it out"
        );
        assert_eq!(s.record(true, false, &c), None);
        assert_eq!(
            s.record(true, false, &c),
            Some(true),
            "two successes bring it back"
        );
        assert_eq!(s.record(false, true, &c), None);
        assert_eq!(s.record(false, true, &c), None);
        assert_eq!(
            s.record(true, true, &c),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(s.record(false, true, &c), None);
        assert_eq!(s.record(false, true, &c), None);
        assert_eq!(s.record(false, true, &c), Some(false));
    }

    #[test]
    fn parses_status_lines() {
        use probe::parse_status;
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1"), None);
    }

    #[tokio::test]
    async fn probes_a_real_backend() {
        let backend = echo::Backend::spawn("h").expect("backend");
        let mut c = check(1, 1);
        c.path = "/status/204".into();
        let to = Endpoint::plain(backend.addr, "127.0.0.1");
        assert_eq!(probe(&to, &c).await.expect("healthy"), 204);
        c.path = "/status/503".into();
        assert!(matches!(probe(&to, &c).await, Err(ProbeError::Status(503))));
        c.expect_status = Some(503);
        assert_eq!(probe(&to, &c).await.expect("expected 503"), 503);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        assert!(matches!(
            probe(&Endpoint::plain(addr, "127.0.0.1"), &c).await,
            Err(ProbeError::Connect(_))
        ));
    }
}
