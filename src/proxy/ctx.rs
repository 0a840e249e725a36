//! Per-request state carried across the proxy phases, with the one snapshot the request loaded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;

use super::MAX_TRIES;
use crate::config::RouteOptions;
use crate::routing::Route;
use crate::runtime::InFlight;
use crate::snapshot::Snapshot;
use crate::upstream::{ActiveGuard, Service};

/// Where a request stands with its rollout's shield (see `pick::shield_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shield {
    /// Not shielded, or the shield has been used.
    #[default]
    Off,
    /// On the canary: a failure there is retried once on pool `stable`.
    Armed { stable: usize },
    /// The canary answered 5xx and the retry on the stable pool is under way: keep it, whatever
    /// pingora's default retry policy says.
    Retrying,
}

/// What `Ctx::tried` holds past the servers tried.
const NO_SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Per-request state, carried across phases.
pub struct Ctx {
    pub(super) _in_flight: InFlight,
    /// The snapshot this request loaded in `new_ctx`: every decision reads it, nothing else.
    pub(super) snapshot: Arc<Snapshot>,
    /// Index into `Proxy::listeners`.
    pub(super) listener: usize,
    pub(super) tls: bool,
    pub(super) start: Instant,
    pub(super) route: Option<usize>,
    pub(super) pool: Option<usize>,
    pub(super) upstream: Option<SocketAddr>,
    /// The index of the server `upstream` is, in pool `pool`.
    pub(super) server: Option<usize>,
    /// The servers tried, in order: the first `tries` entries (the rest are unused).
    pub(super) tried: [SocketAddr; MAX_TRIES],
    pub(super) tries: usize,
    /// When the first attempt started (the route's `retry.timeout` counts from it).
    pub(super) first_try: Option<Instant>,
    /// The upstream's answer is a status of the route's `retry.on` and goes to another server.
    pub(super) status_retry: bool,
    pub(super) guard: Option<ActiveGuard>,
    pub(super) request_id: super::request_id::RequestId,
    /// The request's host (`super::request_host`) as a header value, read once at the start of
    /// `request_filter`: the Host field's own value when it is that (shared, not copied). `None`
    /// before, or when the request names no host.
    pub(super) host: Option<http::HeaderValue>,
    /// The client's X-Forwarded-For list as `request_filter` found it (`forwarded::apply`).
    pub(super) client_list: super::forwarded::ClientList,
    /// This hop of the request's W3C trace (`traceparent` in, ours out).
    pub(super) trace: crate::trace_context::TraceContext,
    /// The real client: the peer, or who a trusted proxy's X-Forwarded-For names.
    pub(super) client_ip: Option<IpAddr>,
    /// The socket peer: the address appended to X-Forwarded-For.
    pub(super) peer_ip: Option<IpAddr>,
    /// The most constrained zone's (limit, remaining, reset) for the RateLimit-* headers.
    pub(super) rate: Option<(u32, u32, Duration)>,
    pub(super) upstream_start: Option<Instant>,
    pub(super) upstream_ms: Option<f64>,
    /// From choosing the server to connected (0 on a reused connection), the last attempt's.
    pub(super) upstream_connect_ms: Option<f64>,
    /// The shield moved this request from its canary to the stable pool.
    pub(super) shield_retried: bool,
    /// Requests in progress counted by concurrency zones: counted down when the context drops.
    pub(super) admissions: Vec<crate::limits::Admission>,
    pub(super) body_bytes: u64,
    pub(super) shield: Shield,
    /// A new sticky id to hand the client in a cookie: (cookie name, id).
    pub(super) sticky_cookie: Option<(String, String)>,
    /// The normalised request path, when it differs from the one the client sent.
    pub(super) path: Option<String>,
    /// Why the proxy itself refused the request, for the error body: every server stayed at
    /// `max_conns` for `queue_timeout`, or the pool's server names have no address yet.
    pub(super) refusal: Option<String>,
    /// The request's Origin when the route's CORS policy allows it (`cors::allowed_origin`).
    pub(super) cors_origin: Option<http::HeaderValue>,
    /// The forward-auth service's headers for the upstream request (`access.rs`).
    pub(super) auth_headers: Option<super::access::AuthHeaders>,
}

impl Ctx {
    pub(super) fn new(snapshot: Arc<Snapshot>, in_flight: InFlight) -> Ctx {
        Ctx {
            _in_flight: in_flight,
            snapshot,
            listener: 0,
            tls: false,
            start: Instant::now(),
            route: None,
            pool: None,
            upstream: None,
            server: None,
            tried: [NO_SERVER; MAX_TRIES],
            tries: 0,
            first_try: None,
            status_retry: false,
            guard: None,
            request_id: super::request_id::RequestId::default(),
            host: None,
            client_list: super::forwarded::ClientList::LookUp,
            trace: crate::trace_context::TraceContext::default(),
            client_ip: None,
            peer_ip: None,
            rate: None,
            upstream_start: None,
            upstream_ms: None,
            upstream_connect_ms: None,
            shield_retried: false,
            admissions: Vec::new(),
            body_bytes: 0,
            shield: Shield::Off,
            sticky_cookie: None,
            path: None,
            refusal: None,
            cors_origin: None,
            auth_headers: None,
        }
    }

    /// The request's host, as `super::request_host` reads it: from `host` once
    /// `request_filter` has read it, else from the request.
    pub(super) fn host<'a>(&'a self, req: &'a RequestHeader) -> &'a str {
        match &self.host {
            // Only a value that read as text was kept.
            Some(v) => std::str::from_utf8(v.as_bytes()).unwrap_or_default(),
            None => super::request_host(req),
        }
    }

    /// The matched route, if any.
    pub(super) fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.snapshot.routes.get(i))
    }

    /// The matched route's options, or `[defaults]` when no route matched.
    pub(super) fn options(&self) -> &RouteOptions {
        self.route()
            .map_or(&self.snapshot.config.defaults, |r| &r.options)
    }

    /// The matched route's service, if any.
    pub(super) fn service(&self) -> Option<(usize, &Service)> {
        let i = self.route()?.service?;
        Some((i, self.snapshot.services.get(i)?))
    }

    /// Connected to the upstream: nginx's `$upstream_connect_time`, 0 on a reused connection.
    pub(super) fn connected(&mut self, reused: bool) {
        let elapsed = self.upstream_start.filter(|_| !reused).map(|s| s.elapsed());
        self.upstream_connect_ms = Some(elapsed.map_or(0.0, |d| d.as_secs_f64() * 1000.0));
    }

    /// The normalised path every decision uses (`crate::path`).
    pub(super) fn path<'a>(&'a self, req: &'a RequestHeader) -> &'a str {
        self.path.as_deref().unwrap_or_else(|| req.uri.path())
    }

    /// The servers tried so far (the first `tries` entries), for the next pick to skip.
    pub(super) fn tried(&self) -> &[SocketAddr] {
        &self.tried[..self.tries]
    }

    /// Forgets the servers tried (the shield moves the request to another pool).
    pub(super) fn forget_tried(&mut self) {
        self.tries = 0;
    }
}
