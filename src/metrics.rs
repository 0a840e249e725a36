//! Every Prometheus metric in one place, in Switchyard's own registry (not the crate's default one).
//!
//! Each metric is recorded where that is cheapest:
//! - Request path (`logging`, `fail_to_connect`): counters and histograms are resolved once per
//!   snapshot generation into index tables (`Handles`), so a request costs array lookups and a
//!   few atomic adds: no label hashing, no allocation, no lock.
//! - Scrape time ([`render`]): health, availability, weights, generation and requests in flight
//!   are read from the current snapshot, so they cost nothing per request and never go stale
//!   when a reload removes a pool or a server.
//! - Listeners ([`proxy_service`]): a wrapper around pingora's HTTP app counts open client
//!   connections, and a pre-TLS hook counts TLS handshakes that never completed.
//!
//! docs/metrics.md lists every metric, its labels and what it really counts.

use crate::limits::conn::{ConnLimits, LimitedApp};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::{PreTlsCallback, PreTlsProcess};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, Stream, UniqueID, UniqueIDType};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::{Tracer, Tracing};
use pingora_proxy::HttpProxy;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::ListenerConfig;
use crate::proxy::Proxy;
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;

/// Buckets for request and upstream durations, in seconds: 1 ms to 10 s, about 2.5x apart.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes 100..=599 get a slot each in a [`Codes`] table; anything else takes the slow path.
const FIRST_CODE: u16 = 100;
const CODE_SLOTS: usize = 500;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text exposition of every metric, for `GET /metrics`.
pub fn render(runtime: &Runtime) -> String {
    runtime.metrics.render(runtime)
}

/// What a client did wrong, as `switchyard_client_errors_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// A malformed request (400).
    BadRequest,
    /// A request line over `max_request_line` (414).
    UriTooLong,
    /// A header line or head over `max_header_line` / `max_header_size` (431).
    HeaderTooLarge,
    /// A head not complete within `client_header_timeout` (408).
    HeaderTimeout,
    /// A request body stalled past `client_body_timeout` (408).
    BodyTimeout,
    /// The client closed or reset the connection mid-request.
    Reset,
    /// Plain HTTP sent to a TLS listener (400).
    PlainHttpOnTls,
}

impl ClientError {
    pub fn label(self) -> &'static str {
        match self {
            ClientError::BadRequest => "bad_request",
            ClientError::UriTooLong => "uri_too_long",
            ClientError::HeaderTooLarge => "header_too_large",
            ClientError::HeaderTimeout => "header_timeout",
            ClientError::BodyTimeout => "body_timeout",
            ClientError::Reset => "reset",
            ClientError::PlainHttpOnTls => "plain_http_on_tls",
        }
    }
}

/// One finished request, as `logging` saw it.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    /// The snapshot the request was routed with (`None` if it never got that far).
    pub snapshot: Option<&'a Snapshot>,
    pub route: Option<usize>,
    pub pool: Option<usize>,
    /// The status written to the client; 0 when none was.
    pub status: u16,
    /// From the request header being read to the end of the response.
    pub duration: Duration,
    /// Seconds from picking the server (connect included) to its response header, last try.
    pub upstream_seconds: Option<f64>,
}

/// Every metric handle, registered in `registry`.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_response: HistogramVec,
    connect_errors: IntCounterVec,
    retries: IntCounterVec,
    ejections: IntCounterVec,
    downstream_connections: IntGaugeVec,
    downstream_opened: IntCounterVec,
    tls_handshake_errors: IntCounterVec,
    tls_handshaking: IntGaugeVec,
    requests_in_flight: IntGauge,
    server_healthy: IntGaugeVec,
    server_available: IntGaugeVec,
    pool_weight: IntGaugeVec,
    pool_weight_overridden: IntGaugeVec,
    pool_window_requests: IntGaugeVec,
    pool_window_error_ratio: GaugeVec,
    pool_window_latency: GaugeVec,
    config_generation: IntGauge,
    reloads_success: IntCounter,
    reloads_failure: IntCounter,
    last_reload_success: Gauge,
    rate_limited: IntCounterVec,
    rate_limit_keys: IntGaugeVec,
    connections_refused: IntCounterVec,
    client_errors: IntCounterVec,
    upstream_returns: IntCounterVec,
    rollout: RolloutMetrics,
    /// Requests that matched no route (route="", service="", pool="").
    unrouted: Codes,
    unrouted_duration: Histogram,
    /// Request-path handles for the newest snapshot generation seen.
    handles: ArcSwap<Handles>,
    /// Taken only to replace `handles` after a snapshot change.
    rebuilding: Mutex<()>,
    /// One scrape at a time: the scrape-time gauges are reset and refilled for each.
    scrape: Mutex<()>,
    /// The TLS listeners' handshake watches, for the in-progress gauge.
    tls_watches: Mutex<Vec<Arc<TlsWatch>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("generation", &self.handles.load().generation)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers a collector built from constant, valid definitions.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Invariant: names, labels and buckets below are constants checked by the unit tests, and
    // each is registered once in a fresh registry, so registration cannot fail.
    registry
        .register(Box::new(c.clone()))
        .expect("metric definitions are valid and unique");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition");
    register(registry, vec)
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition");
    register(registry, vec)
}

fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition");
    register(registry, vec)
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let vec = HistogramVec::new(opts, labels).expect("valid histogram definition");
    register(registry, vec)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// The registry `render` exposes; other modules (ACME) register their metrics here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "switchyard_requests_total",
            "Requests finished, by route id, service, pool (\"\" when none was chosen) and the status code sent (0 = none).",
            &["route", "service", "pool", "code"],
        );
        let request_duration = histogram_vec(
            &r,
            "switchyard_request_duration_seconds",
            "Time from the request header being read to the end of the response.",
            &["service", "pool"],
        );
        let upstream_response = histogram_vec(
            &r,
            "switchyard_upstream_response_seconds",
            "Time from picking an upstream server (connecting included) to its response header, last try only.",
            &["service", "pool"],
        );
        let connect_errors = counter_vec(
            &r,
            "switchyard_upstream_connect_errors_total",
            "Failed attempts to connect to an upstream server.",
            &["service", "pool"],
        );
        let retries = counter_vec(
            &r,
            "switchyard_upstream_retries_total",
            "Connect failures retried on another server of the pool.",
            &["service", "pool"],
        );
        let ejections = counter_vec(
            &r,
            "switchyard_upstream_ejections_total",
            "Servers ejected by passive health checks (max_fails failures in a row).",
            &["service"],
        );
        let downstream_connections = gauge_vec(
            &r,
            "switchyard_downstream_connections",
            "Open client connections past accept (plain) or the TLS handshake (TLS).",
            &["listener"],
        );
        let downstream_opened = counter_vec(
            &r,
            "switchyard_downstream_connections_opened_total",
            "Client connections opened: accepted (plain) or with a completed TLS handshake (TLS).",
            &["listener"],
        );
        let tls_handshake_errors = counter_vec(
            &r,
            "switchyard_tls_handshake_errors_total",
            "TLS connections closed before their handshake completed (failure, timeout or client gone).",
            &["listener"],
        );
        let tls_handshaking = gauge_vec(
            &r,
            "switchyard_tls_handshakes_in_progress",
            "TLS connections whose handshake has started and not yet finished.",
            &["listener"],
        );
        let requests_in_flight = register(
            &r,
            IntGauge::new(
                "switchyard_requests_in_flight",
                "Requests between their header being read and their end (what a drain waits for).",
            )
            .expect("valid gauge definition"),
        );
        let server_healthy = gauge_vec(
            &r,
            "switchyard_server_healthy",
            "1 when the active health checks find the server healthy (or it is not checked), else 0.",
            &["service", "pool", "server"],
        );
        let server_available = gauge_vec(
            &r,
            "switchyard_server_available",
            "1 when the server may take requests: healthy and not ejected by passive checks.",
            &["service", "pool", "server"],
        );
        let pool_weight = gauge_vec(
            &r,
            "switchyard_pool_weight",
            "The pool's weight in force (config file or runtime override).",
            &["service", "pool"],
        );
        let pool_weight_overridden = gauge_vec(
            &r,
            "switchyard_pool_weight_overridden",
            "1 when the pool's weight comes from a runtime override (admin API), 0 when from the config file.",
            &["service", "pool"],
        );
        let pool_window_requests = gauge_vec(
            &r,
            "switchyard_pool_window_requests",
            "Requests the pool finished in its live window (10 s by default), read at scrape time.",
            &["service", "pool"],
        );
        let pool_window_error_ratio = float_gauge_vec(
            &r,
            "switchyard_pool_window_error_ratio",
            "Share of the pool's requests in its live window that failed (5xx sent or upstream failure); 0 without requests.",
            &["service", "pool"],
        );
        let pool_window_latency = float_gauge_vec(
            &r,
            "switchyard_pool_window_latency_seconds",
            "Request duration quantiles of the pool over its live window (within about 3 %); absent without requests.",
            &["service", "pool", "quantile"],
        );
        let config_generation = register(
            &r,
            IntGauge::new(
                "switchyard_config_generation",
                "Generation of the snapshot in force; every reload or runtime change adds 1.",
            )
            .expect("valid gauge definition"),
        );
        let reloads = counter_vec(
            &r,
            "switchyard_config_reloads_total",
            "Config reloads (SIGHUP or admin API), by result.",
            &["result"],
        );
        let last_reload_success = register(
            &r,
            Gauge::new(
                "switchyard_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load (start-up or reload).",
            )
            .expect("valid gauge definition"),
        );
        last_reload_success.set(unix_now());
        let build_info = gauge_vec(
            &r,
            "switchyard_build_info",
            "Always 1; the labels say which build is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let rate_limited = counter_vec(
            &r,
            "switchyard_rate_limited_total",
            "Requests refused with 429 by a rate-limit zone.",
            &["zone"],
        );
        let rate_limit_keys = gauge_vec(
            &r,
            "switchyard_rate_limit_keys",
            "Keys a rate-limit zone holds in memory (bounded by its max_keys).",
            &["zone"],
        );
        // Fed from the connection limiter's own counters at scrape time (it only grows).
        let connections_refused = counter_vec(
            &r,
            "switchyard_connections_refused_total",
            "Client connections closed at accept by max_connections (total) or max_connections_per_ip (per_ip).",
            &["reason"],
        );
        let client_errors = counter_vec(
            &r,
            "switchyard_client_errors_total",
            "Requests and connections that failed by the client's doing, by listener and kind (bad_request, uri_too_long, header_too_large, header_timeout, body_timeout, reset, plain_http_on_tls).",
            &["listener", "kind"],
        );
        let upstream_returns = counter_vec(
            &r,
            "switchyard_upstream_returns_total",
            "Servers back in service after a passive ejection ended (fail_timeout elapsed).",
            &["service"],
        );
        Metrics {
            rollout: RolloutMetrics::new(&r),
            client_errors,
            upstream_returns,
            rate_limited,
            rate_limit_keys,
            connections_refused,
            unrouted_duration: request_duration.with_label_values(&["", ""]),
            reloads_success: reloads.with_label_values(&["success"]),
            reloads_failure: reloads.with_label_values(&["failure"]),
            registry: r,
            requests,
            request_duration,
            upstream_response,
            connect_errors,
            retries,
            ejections,
            downstream_connections,
            downstream_opened,
            tls_handshake_errors,
            tls_handshaking,
            requests_in_flight,
            server_healthy,
            server_available,
            pool_weight,
            pool_weight_overridden,
            pool_window_requests,
            pool_window_error_ratio,
            pool_window_latency,
            config_generation,
            last_reload_success,
            unrouted: Codes::default(),
            handles: ArcSwap::from_pointee(Handles::default()),
            rebuilding: Mutex::new(()),
            scrape: Mutex::new(()),
            tls_watches: Mutex::new(Vec::new()),
        }
    }

    // --------------------------------------------------------------------------------------------
    // Request path
    // --------------------------------------------------------------------------------------------

    /// Counts one finished request and observes its durations.
    pub fn record_request(&self, r: &Finished<'_>) {
        let secs = r.duration.as_secs_f64();
        let routed = r.snapshot.and_then(|snap| {
            let route_idx = r.route?;
            let route = snap.routes.get(route_idx)?;
            Some((snap, route_idx, route, snap.services.get(route.service)?))
        });
        let Some((snap, route_idx, route, service)) = routed else {
            self.count_unrouted(r.status);
            self.unrouted_duration.observe(secs);
            return;
        };
        let pool = r.pool.and_then(|p| Some((p, service.pools.get(p)?)));
        let pool_name = pool.map_or("", |(_, p)| &*p.name);
        let by_name = || {
            let code = code_label(r.status);
            self.requests
                .with_label_values(&[&*route.id, &*service.name, pool_name, &code])
        };
        let handles = self.handles_for(snap);
        let cached = handles
            .as_ref()
            .and_then(|h| Some((h.routes.get(route_idx)?, h.services.get(route.service)?)));
        let Some((route_handles, service_handles)) = cached else {
            // The request straddled a snapshot change: resolve by name (rare).
            by_name().inc();
            let labels = [&*service.name, pool_name];
            self.request_duration
                .with_label_values(&labels)
                .observe(secs);
            if let (Some(up), Some(_)) = (r.upstream_seconds, pool) {
                self.upstream_response
                    .with_label_values(&labels)
                    .observe(up);
            }
            return;
        };
        let codes = match pool {
            Some((p, _)) => route_handles.pools.get(p),
            None => route_handles.pools.last(),
        };
        match codes.and_then(|c| c.slot(r.status)) {
            Some(slot) => slot.get_or_init(by_name).inc(),
            None => by_name().inc(),
        }
        match pool.and_then(|(p, _)| service_handles.pools.get(p)) {
            Some(ph) => {
                ph.duration.observe(secs);
                if let Some(up) = r.upstream_seconds {
                    ph.upstream.observe(up);
                }
            }
            None => service_handles.no_pool_duration.observe(secs),
        }
    }

    /// Counts a failed connect to a server of `pool`, and whether it is retried elsewhere.
    pub fn record_connect_error(
        &self,
        snap: &Snapshot,
        service: usize,
        pool: usize,
        retried: bool,
    ) {
        let handles = self.handles_for(snap);
        if let Some(ph) = handles
            .as_ref()
            .and_then(|h| h.services.get(service)?.pools.get(pool))
        {
            ph.connect_errors.inc();
            if retried {
                ph.retries.inc();
            }
            return;
        }
        let Some(svc) = snap.services.get(service) else {
            return;
        };
        let Some(p) = svc.pools.get(pool) else { return };
        let labels = [&*svc.name, &*p.name];
        self.connect_errors.with_label_values(&labels).inc();
        if retried {
            self.retries.with_label_values(&labels).inc();
        }
    }

    /// Counts a passive ejection of a server of `service`.
    pub fn record_ejection(&self, snap: &Snapshot, service: usize) {
        let handles = self.handles_for(snap);
        match handles.as_ref().and_then(|h| h.services.get(service)) {
            Some(sh) => sh.ejections.inc(),
            None => {
                if let Some(svc) = snap.services.get(service) {
                    self.ejections.with_label_values(&[&*svc.name]).inc();
                }
            }
        }
    }

    /// Counts a failure the client caused (see [`ClientError`]).
    pub fn record_client_error(&self, listener: &str, kind: ClientError) {
        self.client_errors
            .with_label_values(&[listener, kind.label()])
            .inc();
    }

    /// Counts a server back in service after its passive ejection.
    pub fn record_return(&self, service: &str) {
        self.upstream_returns.with_label_values(&[service]).inc();
    }

    /// Counts a request refused by a rate-limit zone.
    pub fn record_rate_limited(&self, zone: &str) {
        self.rate_limited.with_label_values(&[zone]).inc();
    }

    /// Counts a rollout transition; a rollback or abort also by its reason.
    pub fn record_rollout_event(&self, e: &crate::rollout::Event) {
        let m = &self.rollout;
        m.events.with_label_values(&[&e.service, &e.event]).inc();
        if let Some(reason) = &e.reason {
            m.rollbacks.with_label_values(&[&e.service, reason]).inc();
        }
    }

    /// Counts a request that failed on a canary and was retried on the stable pool.
    pub fn record_shielded(&self, service: &str, canary: &str) {
        self.rollout
            .shielded
            .with_label_values(&[service, canary])
            .inc();
    }

    /// Counts a config reload (SIGHUP or admin API) by its outcome.
    pub fn record_reload(&self, success: bool) {
        if success {
            self.reloads_success.inc();
            self.last_reload_success.set(unix_now());
        } else {
            self.reloads_failure.inc();
        }
    }

    fn count_unrouted(&self, status: u16) {
        let by_name = || {
            self.requests
                .with_label_values(&["", "", "", &code_label(status)])
        };
        match self.unrouted.slot(status) {
            Some(slot) => slot.get_or_init(by_name).inc(),
            None => by_name().inc(),
        }
    }

    /// The handles for `snap`'s generation: rebuilt when `snap` is newer than the cached ones;
    /// `None` for a request still running on an older snapshot (it resolves by name instead).
    fn handles_for(&self, snap: &Snapshot) -> Option<Guard<Arc<Handles>>> {
        let current = self.handles.load();
        if current.generation == snap.generation {
            return Some(current);
        }
        if current.generation > snap.generation {
            return None;
        }
        drop(current);
        let _one_builder = self.rebuilding.lock();
        let current = self.handles.load();
        if current.generation < snap.generation {
            drop(current);
            self.handles.store(Arc::new(self.build_handles(snap)));
            let built = self.handles.load();
            return (built.generation == snap.generation).then_some(built);
        }
        (current.generation == snap.generation).then_some(current)
    }

    fn build_handles(&self, snap: &Snapshot) -> Handles {
        let services = snap
            .services
            .iter()
            .map(|s| ServiceHandles {
                pools: s
                    .pools
                    .iter()
                    .map(|p| {
                        let labels = [&*s.name, &*p.name];
                        PoolHandles {
                            duration: self.request_duration.with_label_values(&labels),
                            upstream: self.upstream_response.with_label_values(&labels),
                            connect_errors: self.connect_errors.with_label_values(&labels),
                            retries: self.retries.with_label_values(&labels),
                        }
                    })
                    .collect(),
                no_pool_duration: self.request_duration.with_label_values(&[&*s.name, ""]),
                ejections: self.ejections.with_label_values(&[&*s.name]),
            })
            .collect();
        let routes = (0..snap.routes.len())
            .map(|i| {
                let pools = snap
                    .routes
                    .get(i)
                    .and_then(|r| snap.services.get(r.service))
                    .map_or(0, |s| s.pools.len());
                // One table per pool, and the last one for "no pool chosen".
                RouteHandles {
                    pools: (0..=pools).map(|_| Codes::default()).collect(),
                }
            })
            .collect();
        Handles {
            generation: snap.generation,
            routes,
            services,
        }
    }

    // --------------------------------------------------------------------------------------------
    // Scrape time
    // --------------------------------------------------------------------------------------------

    fn render(&self, rt: &Runtime) -> String {
        let _one_scrape = self.scrape.lock();
        let snap = rt.snapshot.load();
        let overrides = rt.overrides();
        // Resolving the handles creates every (service, pool) series at 0 before its first event,
        // so rate() and increase() see the first one.
        drop(self.handles_for(&snap));
        self.requests_in_flight
            .set(i64::try_from(rt.in_flight()).unwrap_or(i64::MAX));
        self.config_generation
            .set(i64::try_from(snap.generation).unwrap_or(i64::MAX));
        self.rate_limit_keys.reset();
        for zone in rt.zones.all() {
            self.rate_limit_keys
                .with_label_values(&[zone.spec().name.as_str()])
                .set(i64::try_from(zone.keys()).unwrap_or(i64::MAX));
        }
        let (total, per_ip) = rt.connections.refused();
        for (reason, n) in [("total", total), ("per_ip", per_ip)] {
            let counter = self.connections_refused.with_label_values(&[reason]);
            counter.inc_by(n.saturating_sub(counter.get()));
        }
        // Reset and refill: pools and servers removed by a reload disappear from the output.
        self.server_healthy.reset();
        self.server_available.reset();
        self.pool_weight.reset();
        self.pool_weight_overridden.reset();
        self.pool_window_requests.reset();
        self.pool_window_error_ratio.reset();
        self.pool_window_latency.reset();
        for svc in &snap.services {
            let service_overrides = overrides.get(&*svc.name);
            for pool in &svc.pools {
                let labels = [&*svc.name, &*pool.name];
                self.pool_weight
                    .with_label_values(&labels)
                    .set(i64::from(pool.weight));
                let overridden = service_overrides.is_some_and(|o| o.contains_key(&*pool.name));
                self.pool_weight_overridden
                    .with_label_values(&labels)
                    .set(i64::from(overridden));
                if let Some(live) = rt.windows.get(&svc.name, &pool.name) {
                    let stats = live.snapshot();
                    self.pool_window_requests
                        .with_label_values(&labels)
                        .set(i64::try_from(stats.requests).unwrap_or(i64::MAX));
                    self.pool_window_error_ratio
                        .with_label_values(&labels)
                        .set(stats.error_rate);
                    for (quantile, value) in [("0.5", stats.p50), ("0.99", stats.p99)] {
                        if let Some(v) = value {
                            self.pool_window_latency
                                .with_label_values(&[&*svc.name, &*pool.name, quantile])
                                .set(v.as_secs_f64());
                        }
                    }
                }
                for server in &pool.servers {
                    let addr = server.addr.to_string();
                    let labels = [&*svc.name, &*pool.name, addr.as_str()];
                    self.server_healthy
                        .with_label_values(&labels)
                        .set(i64::from(server.state.is_healthy()));
                    self.server_available
                        .with_label_values(&labels)
                        .set(i64::from(server.state.is_available()));
                }
            }
        }
        self.rollout.refresh(rt);
        for watch in self.tls_watches.lock().iter() {
            let mut by_listener = vec![0i64; watch.listeners.entries.len()];
            for &listener in watch.pending.lock().values() {
                if let Some(n) = by_listener.get_mut(listener) {
                    *n += 1;
                }
            }
            for (entry, n) in watch.listeners.entries.iter().zip(by_listener) {
                if entry.tls {
                    self.tls_handshaking
                        .with_label_values(&[&*entry.name])
                        .set(n);
                }
            }
        }
        let families = self.registry.gather();
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            log::error!("cannot encode the metrics: {e}");
        }
        out
    }

    // --------------------------------------------------------------------------------------------
    // Listeners
    // --------------------------------------------------------------------------------------------

    /// Connection handles for each listener, by address.
    fn listener_index(&self, listeners: &[ListenerConfig]) -> ListenerIndex {
        let entries = listeners
            .iter()
            .map(|l| {
                let name: &str = &l.name;
                ListenerHandles {
                    address: l.address,
                    name: name.into(),
                    tls: l.tls,
                    open: self.downstream_connections.with_label_values(&[name]),
                    opened: self.downstream_opened.with_label_values(&[name]),
                    tls_errors: l
                        .tls
                        .then(|| self.tls_handshake_errors.with_label_values(&[name])),
                }
            })
            .collect();
        ListenerIndex {
            entries,
            unknown: OnceLock::new(),
            downstream_connections: self.downstream_connections.clone(),
            downstream_opened: self.downstream_opened.clone(),
            tls_handshake_errors: self.tls_handshake_errors.clone(),
        }
    }

    /// A handshake watch over the TLS listeners of `listeners`, counted in the in-progress gauge.
    fn tls_watch(&self, listeners: Arc<ListenerIndex>) -> Arc<TlsWatch> {
        let watch = Arc::new(TlsWatch {
            listeners,
            pending: Mutex::new(HashMap::new()),
        });
        self.tls_watches.lock().push(watch.clone());
        watch
    }
}

fn code_label(status: u16) -> String {
    status.to_string()
}

/// Request-path handles of one snapshot generation, by the snapshot's own indexes.
#[derive(Default)]
struct Handles {
    generation: u64,
    routes: Box<[RouteHandles]>,
    services: Box<[ServiceHandles]>,
}

struct RouteHandles {
    /// `switchyard_requests_total` by pool index; the last entry is for "no pool chosen".
    pools: Box<[Codes]>,
}

struct ServiceHandles {
    pools: Box<[PoolHandles]>,
    no_pool_duration: Histogram,
    ejections: IntCounter,
}

struct PoolHandles {
    duration: Histogram,
    upstream: Histogram,
    connect_errors: IntCounter,
    retries: IntCounter,
}

/// Counters by status code for one (route, pool), resolved on first use of each code. The table
/// itself is allocated on the first request, so unused routes cost one pointer per pool.
#[derive(Default)]
struct Codes {
    slots: OnceLock<Box<[OnceLock<IntCounter>]>>,
}

impl Codes {
    fn slot(&self, status: u16) -> Option<&OnceLock<IntCounter>> {
        let i = usize::from(status.checked_sub(FIRST_CODE)?);
        if i >= CODE_SLOTS {
            return None;
        }
        let slots = self
            .slots
            .get_or_init(|| (0..CODE_SLOTS).map(|_| OnceLock::new()).collect());
        slots.get(i)
    }
}

// ------------------------------------------------------------------------------------------------
// Listener hooks: open connections and failed TLS handshakes
// ------------------------------------------------------------------------------------------------

/// The HTTP proxy service for every listener, with client connections and TLS handshakes
/// counted per listener.
///
/// Use it in place of `pingora_proxy::http_proxy_service_with_name`: it builds the same app and
/// wraps it in an [`ObservedApp`]; when a listener has TLS it also sets the pre-TLS hook that
/// counts failed handshakes. Add the endpoints afterwards as usual; if another pre-TLS callback
/// is needed, chain it with [`TlsWatch::hook`] (a service has one), or the count stops.
pub fn proxy_service(
    conf: &Arc<ServerConf>,
    metrics: &Metrics,
    proxy: Proxy,
    listeners: &[ListenerConfig],
    connections: Arc<ConnLimits>,
    pre_tls: Option<PreTlsCallback>,
    h2_idle_timeout: Duration,
) -> Service<ObservedApp<LimitedApp<HttpProxy<Proxy>>>> {
    let index = Arc::new(metrics.listener_index(listeners));
    let watch = listeners
        .iter()
        .any(|l| l.tls)
        .then(|| metrics.tls_watch(index.clone()));
    // Connection caps sit inside: a refused connection was still opened (and its TLS handshake
    // completed), so it counts there and never as a handshake error.
    let mut http = pingora_proxy::http_proxy(conf, proxy);
    // An idle h2 connection (no stream open) is closed like an idle HTTP/1 keep-alive one.
    let mut options = pingora_core::apps::HttpServerOptions::default();
    // ("0s", keep-alive off for HTTP/1, leaves h2 connections without an idle limit.)
    options.h2_idle_timeout = (!h2_idle_timeout.is_zero()).then_some(h2_idle_timeout);
    http.server_options = Some(options);
    let limited = LimitedApp::new(http, connections);
    let app = ObservedApp::new(limited, index, watch.clone());
    let mut svc = Service::new("proxy".to_string(), app);
    if let Some(watch) = watch {
        // Applies to every TLS endpoint added afterwards.
        svc.endpoints()
            .set_pre_tls_callback(TlsWatch::hook(&watch, pre_tls));
    }
    svc
}

/// Per-listener connection handles, found by a connection's local address.
pub struct ListenerIndex {
    entries: Vec<ListenerHandles>,
    /// For a connection that matches no listener (not expected: every socket has its address).
    unknown: OnceLock<ListenerHandles>,
    downstream_connections: IntGaugeVec,
    downstream_opened: IntCounterVec,
    tls_handshake_errors: IntCounterVec,
}

struct ListenerHandles {
    address: SocketAddr,
    name: Arc<str>,
    tls: bool,
    open: IntGauge,
    opened: IntCounter,
    /// TLS listeners only.
    tls_errors: Option<IntCounter>,
}

/// Index of `ListenerIndex::unknown` in the places that store an index.
const UNKNOWN_LISTENER: usize = usize::MAX;

impl ListenerIndex {
    /// The listener bound to `local` (a wildcard bind matches any IP), as an index.
    fn find(&self, local: Option<SocketAddr>) -> usize {
        local
            .and_then(|local| {
                self.entries.iter().position(|l| {
                    l.address.port() == local.port()
                        && (l.address.ip() == local.ip() || l.address.ip().is_unspecified())
                })
            })
            .unwrap_or(UNKNOWN_LISTENER)
    }

    fn get(&self, index: usize) -> &ListenerHandles {
        self.entries.get(index).unwrap_or_else(|| {
            self.unknown.get_or_init(|| ListenerHandles {
                address: SocketAddr::from(([0, 0, 0, 0], 0)),
                name: "".into(),
                tls: false,
                open: self.downstream_connections.with_label_values(&[""]),
                opened: self.downstream_opened.with_label_values(&[""]),
                tls_errors: Some(self.tls_handshake_errors.with_label_values(&[""])),
            })
        })
    }
}

/// The local address pingora recorded for a socket at accept.
fn local_addr(digest: Option<Arc<SocketDigest>>) -> Option<SocketAddr> {
    digest?.local_addr()?.as_inet().copied()
}

/// Pingora's app with client connections counted per listener.
///
/// pingora calls `process_new` once per connection, after accept or after a completed TLS
/// handshake, and the HTTP app returns only when the connection closes (it loops over
/// keep-alive requests and h2 streams itself), so the gauge is exact for HTTP apps.
pub struct ObservedApp<A> {
    inner: Arc<A>,
    listeners: Arc<ListenerIndex>,
    tls: Option<Arc<TlsWatch>>,
}

impl<A> ObservedApp<A> {
    fn new(app: A, listeners: Arc<ListenerIndex>, tls: Option<Arc<TlsWatch>>) -> ObservedApp<A> {
        ObservedApp {
            inner: Arc::new(app),
            listeners,
            tls,
        }
    }
}

/// Decrements the gauge when the connection ends, also when its task is cancelled.
struct OpenConnection<'a>(&'a IntGauge);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ObservedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if let Some(watch) = &self.tls {
            watch.completed(session.id());
        }
        let index = self.listeners.find(local_addr(session.get_socket_digest()));
        let listener = self.listeners.get(index);
        listener.opened.inc();
        listener.open.inc();
        let _open = OpenConnection(&listener.open);
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }

    fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout()
    }
}

/// TLS handshakes that started and have not finished yet, by socket.
///
/// The pre-TLS hook runs after accept, before the handshake, on every TLS connection: it notes
/// the socket's fd (and listener) here and attaches a [`Tracer`] that pingora calls when the TCP
/// stream is dropped. A completed handshake reaches [`ObservedApp::process_new`], which takes the
/// fd out; a stream dropped while its fd is still here never completed its handshake: one
/// error. The fd cannot be reused meanwhile, since the tracer runs before the socket is closed.
pub struct TlsWatch {
    listeners: Arc<ListenerIndex>,
    /// fd → listener index.
    pending: Mutex<HashMap<UniqueIDType, usize>>,
}

impl fmt::Debug for TlsWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWatch")
            .field("pending", &self.pending.lock().len())
            .finish_non_exhaustive()
    }
}

impl TlsWatch {
    /// The pre-TLS callback that starts the watch, then runs `inner` (another pre-TLS
    /// callback, e.g. one answering TLS-ALPN-01 challenges) if given.
    pub fn hook(watch: &Arc<TlsWatch>, inner: Option<PreTlsCallback>) -> PreTlsCallback {
        Arc::new(TlsHook {
            watch: watch.clone(),
            inner,
        })
    }

    fn started(self: &Arc<Self>, stream: &mut L4Stream) {
        let fd = stream.id();
        let listener = self.listeners.find(local_addr(stream.get_socket_digest()));
        self.pending.lock().insert(fd, listener);
        stream.tracer = Some(Tracer(Box::new(HandshakeTracer {
            fd,
            watch: self.clone(),
        })));
    }

    fn completed(&self, fd: UniqueIDType) {
        self.pending.lock().remove(&fd);
    }

    fn closed(&self, fd: UniqueIDType) {
        let unfinished = self.pending.lock().remove(&fd);
        let listener = unfinished.map(|l| self.listeners.get(l));
        if let Some(errors) = listener.and_then(|l| l.tls_errors.as_ref()) {
            errors.inc();
        }
    }
}

struct TlsHook {
    watch: Arc<TlsWatch>,
    inner: Option<PreTlsCallback>,
}

#[async_trait]
impl PreTlsProcess for TlsHook {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        self.watch.started(stream);
        match &self.inner {
            Some(inner) => {
                let result = inner.process(stream).await;
                if result.is_err() {
                    // The inner hook took the connection over (an ACME TLS-ALPN-01 challenge
                    // answered): not a client handshake that failed.
                    self.watch.completed(stream.id());
                }
                result
            }
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
struct HandshakeTracer {
    fd: UniqueIDType,
    watch: Arc<TlsWatch>,
}

impl fmt::Debug for HandshakeTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeTracer")
            .field("fd", &self.fd)
            .finish()
    }
}

impl Tracing for HandshakeTracer {
    fn on_connected(&self) {}

    fn on_disconnected(&self) {
        self.watch.closed(self.fd);
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

/// Rollout series: transitions and shielded requests counted as they happen, the state of each
/// service's latest rollout read at scrape time.
struct RolloutMetrics {
    events: IntCounterVec,
    rollbacks: IntCounterVec,
    shielded: IntCounterVec,
    state: IntGaugeVec,
    canary_weight: IntGaugeVec,
    step: IntGaugeVec,
}

impl RolloutMetrics {
    fn new(r: &Registry) -> RolloutMetrics {
        RolloutMetrics {
            events: counter_vec(
                r,
                "switchyard_rollout_events_total",
                "Rollout transitions by event (started, step, held, paused, resumed, promoted, rolled_back, aborted, restarted).",
                &["service", "event"],
            ),
            rollbacks: counter_vec(
                r,
                "switchyard_rollout_rollbacks_total",
                "Rollouts ended without promotion, by reason: error_rate, latency (automatic), operator (abort), forced (weight change), config (reload).",
                &["service", "reason"],
            ),
            shielded: counter_vec(
                r,
                "switchyard_rollout_shielded_requests_total",
                "Idempotent requests that failed on the canary (connect error or 5xx) and were retried on the stable pool.",
                &["service", "canary"],
            ),
            state: gauge_vec(
                r,
                "switchyard_rollout_state",
                "State of the service's latest rollout: 1 progressing, 2 paused, 3 promoted, 4 rolled back, 5 aborted.",
                &["service", "kind"],
            ),
            canary_weight: gauge_vec(
                r,
                "switchyard_rollout_canary_weight",
                "Percent of traffic the latest rollout gives its canary (0 once rolled back or aborted, 100 once promoted).",
                &["service", "canary"],
            ),
            step: gauge_vec(
                r,
                "switchyard_rollout_step",
                "1-based step of the service's latest rollout.",
                &["service"],
            ),
        }
    }

    fn refresh(&self, rt: &Runtime) {
        self.state.reset();
        self.canary_weight.reset();
        self.step.reset();
        rt.with_rollouts(|book| {
            for (service, history) in &book.services {
                let Some(r) = &history.current else { continue };
                let kind = match r.kind {
                    crate::rollout::Kind::Rollout => "rollout",
                    crate::rollout::Kind::Switch => "switch",
                };
                self.state
                    .with_label_values(&[service.as_str(), kind])
                    .set(r.state.code());
                self.canary_weight
                    .with_label_values(&[service.as_str(), r.canary.as_str()])
                    .set(i64::from(r.canary_weight()));
                self.step
                    .with_label_values(&[service.as_str()])
                    .set(i64::try_from(r.step + 1).unwrap_or(i64::MAX));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use pingora_core::listeners::tls::TlsSettings;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::access_log::AccessLog;
    use crate::config::AccessLogTarget;
    use crate::runtime::ChangeError;

    const CONFIG: &str = r#"
[server]
metrics = true

[[listeners]]
name = "http"
address = "127.0.0.1:1"

[[routes]]
host = "api.test"
service = "api"

[services.api.pools.blue]
weight = 90
servers = ["127.0.0.1:2", "127.0.0.1:3"]

[services.api.pools.green]
weight = 10
servers = ["127.0.0.1:4"]
"#;

    fn runtime(config: &str, path: &Path) -> Arc<Runtime> {
        let config = crate::config::parse(config, path).expect("test config is valid");
        let fallback = crate::tls::self_signed(&["switchyard.invalid"]).expect("self-signed");
        let log = AccessLog::open(&AccessLogTarget::Off).expect("access log off");
        Runtime::new(config, path.into(), fallback, log, None).expect("runtime")
    }

    /// One sample of the text exposition: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the text format's sample lines (label values here never hold `"`, `,` or `\`).
    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().expect("numeric value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}').expect("closing brace");
                        let labels = body
                            .split(',')
                            .filter(|kv| !kv.is_empty())
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').expect("label=value");
                                (k.to_string(), v.trim_matches('"').to_string())
                            })
                            .collect();
                        (name, labels)
                    }
                    None => (series, BTreeMap::new()),
                };
                (name.to_string(), labels, value)
            })
            .collect()
    }

    /// The value of the one sample named `name` whose labels include `want`.
    fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = samples(text)
            .into_iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .collect();
        assert!(found.len() <= 1, "{name} {want:?} matches {found:?}");
        found.first().copied()
    }

    fn finished(snap: &Snapshot, pool: Option<usize>, status: u16) -> Finished<'_> {
        Finished {
            snapshot: Some(snap),
            route: Some(0),
            pool,
            status,
            duration: Duration::from_millis(3),
            upstream_seconds: pool.map(|_| 0.002),
        }
    }

    #[test]
    fn names_types_and_units_follow_the_conventions() {
        let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
        let text = render(&rt);
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split(' ').skip(2);
            let name = parts.next().expect("name");
            let kind = parts.next().expect("type");
            types.insert(name.to_string(), kind.to_string());
        }
        for (name, kind) in &types {
            assert!(name.starts_with("switchyard_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
            if kind == "histogram" {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
        for name in [
            "switchyard_build_info",
            "switchyard_request_duration_seconds",
            "switchyard_upstream_response_seconds",
            "switchyard_upstream_connect_errors_total",
            "switchyard_upstream_retries_total",
            "switchyard_upstream_ejections_total",
            "switchyard_config_generation",
            "switchyard_config_reloads_total",
            "switchyard_config_last_reload_success_timestamp_seconds",
            "switchyard_requests_in_flight",
            "switchyard_server_healthy",
            "switchyard_server_available",
            "switchyard_pool_weight",
            "switchyard_pool_weight_overridden",
        ] {
            assert!(types.contains_key(name), "{name} missing from:\n{text}");
        }
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            value(&text, "switchyard_build_info", &[("version", version)]),
            Some(1.0)
        );
        // Both outcomes exist from the start, so increase(...{result="failure"}) works at once.
        for result in ["success", "failure"] {
            let v = value(
                &text,
                "switchyard_config_reloads_total",
                &[("result", result)],
            );
            assert_eq!(v, Some(0.0), "{result}");
        }
    }

    #[test]
    fn requests_are_counted_by_route_service_pool_and_code() {
        let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
        let snap = rt.snapshot.load_full();
        let m = &rt.metrics;
        m.record_request(&finished(&snap, Some(0), 200));
        m.record_request(&finished(&snap, Some(0), 200));
        m.record_request(&finished(&snap, Some(1), 502));
        m.record_request(&finished(&snap, None, 413));
        m.record_request(&finished(&snap, Some(0), 0));
        // Outside 100..=599: no slot, resolved by name.
        m.record_request(&finished(&snap, Some(0), 999));
        m.record_request(&Finished {
            route: None,
            pool: None,
            status: 404,
            ..finished(&snap, None, 404)
        });
        m.record_request(&Finished {
            snapshot: None,
            ..finished(&snap, None, 404)
        });
        let text = render(&rt);
        let req = |route: &str, service: &str, pool: &str, code: &str| {
            value(
                &text,
                "switchyard_requests_total",
                &[
                    ("route", route),
                    ("service", service),
                    ("pool", pool),
                    ("code", code),
                ],
            )
        };
        assert_eq!(req("api.test/", "api", "blue", "200"), Some(2.0), "{text}");
        assert_eq!(req("api.test/", "api", "green", "502"), Some(1.0));
        assert_eq!(req("api.test/", "api", "", "413"), Some(1.0));
        assert_eq!(req("api.test/", "api", "blue", "0"), Some(1.0));
        assert_eq!(req("api.test/", "api", "blue", "999"), Some(1.0));
        assert_eq!(req("", "", "", "404"), Some(2.0));
        let count = |service: &str, pool: &str| {
            value(
                &text,
                "switchyard_request_duration_seconds_count",
                &[("service", service), ("pool", pool)],
            )
        };
        assert_eq!(count("api", "blue"), Some(4.0));
        assert_eq!(count("api", "green"), Some(1.0));
        assert_eq!(count("api", ""), Some(1.0));
        assert_eq!(count("", ""), Some(2.0));
        let bucket = value(
            &text,
            "switchyard_request_duration_seconds_bucket",
            &[("service", "api"), ("pool", "blue"), ("le", "0.005")],
        );
        assert_eq!(bucket, Some(4.0), "3 ms falls in the 5 ms bucket");
        let upstream = value(
            &text,
            "switchyard_upstream_response_seconds_count",
            &[("service", "api"), ("pool", "green")],
        );
        assert_eq!(upstream, Some(1.0));
    }

    #[test]
    fn counts_survive_snapshot_changes_and_old_snapshots_still_count() {
        let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
        let old = rt.snapshot.load_full();
        rt.metrics.record_request(&finished(&old, Some(0), 200));
        rt.change(|_, book| {
            book.overrides
                .entry("api".into())
                .or_default()
                .insert("green".into(), 50);
            Ok::<_, ChangeError>(((), Vec::new()))
        })
        .expect("override applies");
        let new = rt.snapshot.load_full();
        assert!(new.generation > old.generation);
        rt.metrics.record_request(&finished(&new, Some(0), 200));
        // A request that started before the change finishes after it: resolved by name.
        rt.metrics.record_request(&finished(&old, Some(0), 200));
        rt.metrics.record_connect_error(&old, 0, 1, true);
        rt.metrics.record_connect_error(&new, 0, 1, false);
        rt.metrics.record_ejection(&new, 0);
        let text = render(&rt);
        let labels = [("service", "api"), ("pool", "blue"), ("code", "200")];
        assert_eq!(
            value(&text, "switchyard_requests_total", &labels),
            Some(3.0)
        );
        let green = [("service", "api"), ("pool", "green")];
        let errors = value(&text, "switchyard_upstream_connect_errors_total", &green);
        assert_eq!(errors, Some(2.0));
        assert_eq!(
            value(&text, "switchyard_upstream_retries_total", &green),
            Some(1.0)
        );
        let ejections = value(
            &text,
            "switchyard_upstream_ejections_total",
            &[("service", "api")],
        );
        assert_eq!(ejections, Some(1.0));
        let generation = value(&text, "switchyard_config_generation", &[]);
        assert_eq!(generation, Some(new.generation as f64));
        let weight = |pool| value(&text, "switchyard_pool_weight", &[("pool", pool)]);
        assert_eq!((weight("blue"), weight("green")), (Some(90.0), Some(50.0)));
        let overridden = |pool| {
            value(
                &text,
                "switchyard_pool_weight_overridden",
                &[("pool", pool)],
            )
        };
        assert_eq!(
            (overridden("blue"), overridden("green")),
            (Some(0.0), Some(1.0))
        );
    }

    #[test]
    fn server_health_and_availability_are_read_at_scrape_time() {
        let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
        let snap = rt.snapshot.load_full();
        let blue = &snap.services[0].pools[0];
        blue.servers[0].state.set_healthy(false);
        let policy = crate::config::PassivePolicy {
            max_fails: 1,
            fail_timeout: Duration::from_secs(60),
        };
        assert!(blue.servers[1]
            .state
            .report_failure(&policy, crate::upstream::Failure::Connect)
            .is_some());
        blue.servers[1].state.eject(&policy);
        let text = render(&rt);
        let server = |metric: &str, addr: &str| {
            value(
                &text,
                metric,
                &[("service", "api"), ("pool", "blue"), ("server", addr)],
            )
        };
        assert_eq!(
            server("switchyard_server_healthy", "127.0.0.1:2"),
            Some(0.0)
        );
        assert_eq!(
            server("switchyard_server_available", "127.0.0.1:2"),
            Some(0.0)
        );
        assert_eq!(
            server("switchyard_server_healthy", "127.0.0.1:3"),
            Some(1.0)
        );
        assert_eq!(
            server("switchyard_server_available", "127.0.0.1:3"),
            Some(0.0),
            "ejected"
        );
        let green = [
            ("service", "api"),
            ("pool", "green"),
            ("server", "127.0.0.1:4"),
        ];
        assert_eq!(
            value(&text, "switchyard_server_available", &green),
            Some(1.0)
        );
        let _in_flight = rt.begin_request();
        let text = render(&rt);
        assert_eq!(
            value(&text, "switchyard_requests_in_flight", &[]),
            Some(1.0)
        );
    }

    #[test]
    fn reload_outcomes_are_counted_and_removed_pools_disappear() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, CONFIG).expect("write config");
        let rt = runtime(CONFIG, &path);
        let before = value(
            &render(&rt),
            "switchyard_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .expect("timestamp");
        assert!(before > 1.6e9, "a Unix time: {before}");
        std::fs::write(&path, "this is not toml [").expect("write bad config");
        assert!(rt.reload().is_err());
        let without_green = CONFIG.replace(
            "[services.api.pools.green]\nweight = 10\nservers = [\"127.0.0.1:4\"]\n",
            "",
        );
        assert_ne!(without_green, CONFIG);
        std::fs::write(&path, &without_green).expect("write config");
        rt.reload().expect("reload");
        rt.reload().expect("reload");
        let text = render(&rt);
        let reloads = |result| {
            value(
                &text,
                "switchyard_config_reloads_total",
                &[("result", result)],
            )
        };
        assert_eq!(
            (reloads("success"), reloads("failure")),
            (Some(2.0), Some(1.0))
        );
        let after = value(
            &text,
            "switchyard_config_last_reload_success_timestamp_seconds",
            &[],
        );
        assert!(after.expect("timestamp") >= before);
        assert_eq!(
            value(&text, "switchyard_pool_weight", &[("pool", "green")]),
            None
        );
        let gone = [("pool", "green"), ("server", "127.0.0.1:4")];
        assert_eq!(value(&text, "switchyard_server_healthy", &gone), None);
    }

    #[test]
    fn metrics_switch_parses_and_defaults_to_on() {
        let path = Path::new("t.toml");
        let on = crate::config::parse(CONFIG, path).expect("valid");
        assert!(on.server.metrics);
        let default = crate::config::parse(&CONFIG.replace("metrics = true\n", ""), path);
        assert!(default.expect("valid").server.metrics);
        let off = crate::config::parse(&CONFIG.replace("metrics = true", "metrics = false"), path);
        assert!(!off.expect("valid").server.metrics);
    }

    /// Reads 4 bytes, answers "pong", and reports the open-connection gauge it saw meanwhile.
    struct Pong {
        open: IntGauge,
        seen: Arc<Mutex<Option<i64>>>,
    }

    #[async_trait]
    impl ServerApp for Pong {
        async fn process_new(
            self: &Arc<Self>,
            mut session: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            let mut ping = [0u8; 4];
            session.read_exact(&mut ping).await.ok()?;
            *self.seen.lock() = Some(self.open.get());
            session.write_all(b"pong").await.ok()?;
            session.flush().await.ok()?;
            None
        }
    }

    fn tls_client() -> pingora_rustls::TlsConnector {
        let mut roots = pingora_rustls::RootCertStore::empty();
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/test-ca.crt");
        pingora_rustls::load_ca_file_into_store(ca, &mut roots).expect("test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        pingora_rustls::TlsConnector::from(Arc::new(config))
    }

    fn listener(name: &str, address: SocketAddr, tls: bool) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address,
            tls,
            h2: false,
            redirect_https: false,
            https_port: 443,
        }
    }

    /// An accepted socket as pingora's listener hands it over: with its socket digest.
    async fn accept(listener: &tokio::net::TcpListener) -> L4Stream {
        use std::os::fd::AsRawFd;
        let (tcp, _) = listener.accept().await.expect("accept");
        let fd = tcp.as_raw_fd();
        let mut l4 = L4Stream::from(tcp);
        l4.set_socket_digest(SocketDigest::from_raw_fd(fd));
        l4
    }

    #[tokio::test]
    async fn tls_hooks_count_failed_handshakes_and_open_connections() {
        let metrics = Metrics::new();
        let tls_socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let plain_socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tls_addr = tls_socket.local_addr().expect("local addr");
        let plain_addr = plain_socket.local_addr().expect("local addr");
        // The plain listener binds the wildcard address, as `0.0.0.0:80` would.
        let wildcard = SocketAddr::from(([0, 0, 0, 0], plain_addr.port()));
        let index = Arc::new(metrics.listener_index(&[
            listener("http", wildcard, false),
            listener("https", tls_addr, true),
        ]));
        let watch = metrics.tls_watch(index.clone());
        let hook = TlsWatch::hook(&watch, None);
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");
        let acceptor = TlsSettings::intermediate(
            &format!("{certs}/localhost.crt"),
            &format!("{certs}/localhost.key"),
        )
        .expect("TLS settings")
        .build();
        // `metrics` renders with any runtime: only its own listener gauges are looked at.
        let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
        let errors = |name: &str| {
            let text = metrics.render(&rt);
            value(
                &text,
                "switchyard_tls_handshake_errors_total",
                &[("listener", name)],
            )
        };
        let in_progress = || {
            let text = metrics.render(&rt);
            value(
                &text,
                "switchyard_tls_handshakes_in_progress",
                &[("listener", "https")],
            )
        };
        assert_eq!(in_progress(), Some(0.0));

        // Plain HTTP sent to a TLS listener: the handshake fails.
        let plain = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(tls_addr)
                .await
                .expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let mut l4 = accept(&tls_socket).await;
        hook.process(&mut l4).await.expect("hook");
        assert_eq!(in_progress(), Some(1.0));
        assert!(acceptor.tls_handshake(l4).await.is_err());
        assert_eq!(errors("https"), Some(1.0));
        assert_eq!(errors("http"), None, "no such series on a plain listener");
        assert_eq!(in_progress(), Some(0.0));
        plain.await.expect("plain client");

        // A client that connects and goes away before its ClientHello counts too.
        let gone = tokio::net::TcpStream::connect(tls_addr)
            .await
            .expect("connect");
        let mut l4 = accept(&tls_socket).await;
        drop(gone);
        hook.process(&mut l4).await.expect("hook");
        assert!(acceptor.tls_handshake(l4).await.is_err());
        assert_eq!(errors("https"), Some(2.0));

        // A completed handshake is not an error, and its connection is counted while open.
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(tls_addr)
                .await
                .expect("connect");
            let name = pingora_rustls::ServerName::try_from("localhost").expect("name");
            let mut tls = tls_client().connect(name, tcp).await.expect("handshake");
            tls.write_all(b"ping").await.expect("write");
            let mut pong = [0u8; 4];
            tls.read_exact(&mut pong).await.expect("read");
            pong
        });
        let mut l4 = accept(&tls_socket).await;
        hook.process(&mut l4).await.expect("hook");
        let tls = acceptor.tls_handshake(l4).await.expect("handshake");
        let open = |name: &str| metrics.downstream_connections.with_label_values(&[name]);
        let seen = Arc::new(Mutex::new(None));
        let app = Arc::new(ObservedApp::new(
            Pong {
                open: open("https"),
                seen: seen.clone(),
            },
            index.clone(),
            Some(watch.clone()),
        ));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        assert!(app.process_new(Box::new(tls), &shutdown).await.is_none());
        assert_eq!(&client.await.expect("client"), b"pong");
        assert_eq!(*seen.lock(), Some(1), "counted while open");
        assert_eq!(open("https").get(), 0, "not after close");
        let opened = |name: &str| metrics.downstream_opened.with_label_values(&[name]).get();
        assert_eq!(opened("https"), 1);
        assert_eq!(
            errors("https"),
            Some(2.0),
            "a completed handshake is no error"
        );
        assert!(watch.pending.lock().is_empty());

        // A plain connection on the wildcard-bound listener is counted there.
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(plain_addr)
                .await
                .expect("connect");
            s.write_all(b"ping").await.expect("write");
            let mut pong = [0u8; 4];
            s.read_exact(&mut pong).await.expect("read");
            pong
        });
        let l4 = accept(&plain_socket).await;
        let seen = Arc::new(Mutex::new(None));
        let app = Arc::new(ObservedApp::new(
            Pong {
                open: open("http"),
                seen: seen.clone(),
            },
            index,
            Some(watch.clone()),
        ));
        assert!(app.process_new(Box::new(l4), &shutdown).await.is_none());
        assert_eq!(&client.await.expect("client"), b"pong");
        assert_eq!(*seen.lock(), Some(1));
        assert_eq!((opened("http"), open("http").get()), (1, 0));
        assert_eq!((opened("https"), errors("https")), (1, Some(2.0)));
    }
}
