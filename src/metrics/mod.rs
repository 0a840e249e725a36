//! Every Prometheus metric in one place, in Switchyard's own registry (not the crate's default one).
//!
//! Each metric is recorded where that is cheapest:
//! - Request path (`logging`, `fail_to_connect`): counters and histograms are resolved into
//!   index tables ([`Handles`]) when a snapshot is compiled, and the snapshot holds them, so a
//!   request costs array lookups and a few atomic adds: no label hashing, no allocation, no lock.
//! - Scrape time (`scrape::render`): health, availability, weights, generation and requests in
//!   flight are read from the current snapshot, so they cost nothing per request and never go
//!   stale when a reload removes a pool or a server.
//! - Listeners (`server::listeners`): a wrapper around pingora's HTTP app counts open client
//!   connections, and a pre-TLS hook counts TLS handshakes in progress and those never completed.
//!
//! docs/metrics.md lists every metric, its labels and what it really counts.

mod process;
mod request;
mod rollout;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use request::Codes;
pub use request::{Finished, Handles};
use rollout::RolloutMetrics;

/// Buckets for request and upstream durations, in seconds: 1 ms to 10 s, about 2.5x apart.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
];

/// Status codes 100..=599 get a slot each in a [`Codes`] table; anything else takes the slow path.
const FIRST_CODE: u16 = 100;
const CODE_SLOTS: usize = 500;

/// The content type of the `/metrics` text (`scrape::render`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    /// A connection to a `proxy_protocol` listener from a peer not in `trusted_proxies` (closed).
    ProxyProtocolUntrusted,
    /// A connection to a `proxy_protocol` listener without a valid PROXY header (closed).
    ProxyProtocolInvalid,
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
            ClientError::ProxyProtocolUntrusted => "proxy_protocol_untrusted",
            ClientError::ProxyProtocolInvalid => "proxy_protocol_invalid",
        }
    }
}

/// Every metric handle, registered in `registry`.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) request_duration: HistogramVec,
    pub(crate) upstream_response: HistogramVec,
    pub(crate) connect_errors: IntCounterVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) ejections: IntCounterVec,
    pub(crate) downstream_connections: IntGaugeVec,
    pub(crate) downstream_opened: IntCounterVec,
    pub(crate) tls_handshake_errors: IntCounterVec,
    pub(crate) tls_handshaking: IntGaugeVec,
    pub(crate) requests_in_flight: IntGauge,
    pub(crate) server_healthy: IntGaugeVec,
    pub(crate) server_available: IntGaugeVec,
    pub(crate) pool_weight: IntGaugeVec,
    pub(crate) pool_weight_overridden: IntGaugeVec,
    pub(crate) maintenance: IntGaugeVec,
    pub(crate) pool_window_requests: IntGaugeVec,
    pub(crate) pool_window_error_ratio: GaugeVec,
    pub(crate) pool_window_p50: GaugeVec,
    pub(crate) pool_window_p99: GaugeVec,
    pub(crate) config_generation: IntGauge,
    pub(crate) reloads_success: IntCounter,
    pub(crate) reloads_failure: IntCounter,
    pub(crate) last_reload_success: Gauge,
    pub(crate) rate_limited: IntCounterVec,
    pub(crate) rate_limit_keys: IntGaugeVec,
    pub(crate) connections_refused: IntCounterVec,
    pub(crate) client_errors: IntCounterVec,
    pub(crate) upstream_returns: IntCounterVec,
    pub(crate) dns_lookups: IntCounterVec,
    pub(crate) dns_addresses: IntGaugeVec,
    pub(crate) cert_file_expiry: GaugeVec,
    pub(crate) rollout: RolloutMetrics,
    /// The process's memory, CPU and descriptors (`process_*`), read at scrape time.
    pub(crate) process: process::ProcessMetrics,
    /// Requests that matched no route (route="", service="", pool="").
    pub(crate) unrouted: Codes,
    pub(crate) unrouted_duration: Histogram,
    /// One scrape at a time: the scrape-time gauges are reset and refilled for each.
    pub(crate) scrape: Mutex<()>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
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
            "Attempts retried on another server of the pool: failed connects, and the failures and answers of the route's retry policy.",
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
        let maintenance = gauge_vec(
            &r,
            "switchyard_maintenance",
            "1 while the service is in maintenance (its routes answer 503 but to allowed clients and exempt paths), 0 otherwise.",
            &["service"],
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
        // Two gauges rather than one with a `quantile` label: that label belongs to summaries
        // (`promtool check metrics` flags it on a gauge).
        let pool_window_p50 = float_gauge_vec(
            &r,
            "switchyard_pool_window_p50_seconds",
            "Median request duration of the pool over its live window (within about 3 %); absent without requests.",
            &["service", "pool"],
        );
        let pool_window_p99 = float_gauge_vec(
            &r,
            "switchyard_pool_window_p99_seconds",
            "99th percentile of the pool's request durations over its live window (within about 3 %); absent without requests.",
            &["service", "pool"],
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
            "Requests and connections that failed by the client's doing, by listener and kind (bad_request, uri_too_long, header_too_large, header_timeout, body_timeout, reset, plain_http_on_tls, proxy_protocol_untrusted, proxy_protocol_invalid).",
            &["listener", "kind"],
        );
        let upstream_returns = counter_vec(
            &r,
            "switchyard_upstream_returns_total",
            "Servers back in service after a passive ejection ended (fail_timeout elapsed).",
            &["service"],
        );
        let dns_lookups = counter_vec(
            &r,
            "switchyard_dns_lookups_total",
            "Lookups of server names by the resolver service, by name and result (ok, failed).",
            &["name", "result"],
        );
        let dns_addresses = gauge_vec(
            &r,
            "switchyard_dns_addresses",
            "Addresses each server name has now (its last good answer).",
            &["name"],
        );
        let cert_file_expiry = float_gauge_vec(
            &r,
            "switchyard_cert_file_expiry_timestamp_seconds",
            "When each [[certificates]] file's leaf expires (Unix seconds), by file and the first name it serves; ACME certificates are switchyard_cert_expiry_timestamp_seconds.",
            &["file", "name"],
        );
        Metrics {
            cert_file_expiry,
            rollout: RolloutMetrics::new(&r),
            process: process::ProcessMetrics::new(&r),
            dns_lookups,
            dns_addresses,
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
            maintenance,
            pool_window_requests,
            pool_window_error_ratio,
            pool_window_p50,
            pool_window_p99,
            config_generation,
            last_reload_success,
            unrouted: Codes::default(),
            scrape: Mutex::new(()),
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

    /// Counts one lookup of a server name.
    pub fn record_lookup(&self, name: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.dns_lookups.with_label_values(&[name, result]).inc();
    }

    /// Counts a request refused by a rate-limit zone.
    pub fn record_rate_limited(&self, zone: &str) {
        self.rate_limited.with_label_values(&[zone]).inc();
    }

    /// Counts a rollout transition; a rollback or abort also by its reason.
    pub fn record_rollout_event(&self, e: &crate::rollout::Event) {
        let m = &self.rollout;
        m.events
            .with_label_values(&[&e.service, e.event.as_str()])
            .inc();
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
            // Stamped before counted: a scrape that sees the new count sees the new time too.
            self.last_reload_success.set(unix_now());
            self.reloads_success.inc();
        } else {
            self.reloads_failure.inc();
        }
    }
}

fn code_label(status: u16) -> String {
    status.to_string()
}
