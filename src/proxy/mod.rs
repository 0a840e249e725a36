//! The request path: pingora's `ProxyHttp` phases, reading one snapshot per request.

mod access;
pub mod affinity;
mod compress;
mod cors;
mod ctx;
mod forward_auth;
mod forwarded;
pub mod grpc;
pub use crate::head;
mod headers;
mod limit;
mod linger;
mod log_line;
mod maintenance;
mod names;
mod observe;
mod pages;
mod peer;
pub mod pick;
pub mod plain;
mod queue;
mod redirect;
mod request_id;
pub mod respond;
pub mod retry;
mod static_files;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::protocols::http::ServerSession;
use pingora::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::acme::AcmeState;
use crate::config::{HeadLimits, RouteOptions};
use crate::metrics::ClientError;
use crate::routing;
use crate::runtime::Runtime;
use crate::upstream::Failure;
pub use ctx::{Ctx, Shield};
use respond::Refusal;

/// Servers one request may try (a route's `retry.tries` is at most this).
const MAX_TRIES: usize = crate::config::retry::MAX_TRIES as usize;

/// One listening socket, as the request path needs to know it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub tls: bool,
}

impl ListenerInfo {
    /// Whether a socket with local address `local` was accepted here.
    fn serves(&self, local: SocketAddr) -> bool {
        bound_to(self.address, local)
    }
}

/// Whether a socket with local address `local` was accepted on a listener bound to `bound`
/// (a wildcard bind matches any IP).
pub fn bound_to(bound: SocketAddr, local: SocketAddr) -> bool {
    bound.port() == local.port() && (bound.ip() == local.ip() || bound.ip().is_unspecified())
}

/// The listener a socket with local address `local` was accepted on.
fn listener_at(listeners: &[ListenerInfo], local: Option<SocketAddr>) -> Option<&ListenerInfo> {
    let local = local?;
    listeners.iter().find(|l| l.serves(local))
}

use crate::trace_context::TraceContext;
use request_id::RequestId;

/// The proxy for every listener: one pingora service, one pool of worker threads.
pub struct Proxy {
    runtime: Arc<Runtime>,
    listeners: Vec<ListenerInfo>,
    /// HTTP-01 challenge answers.
    acme: Arc<AcmeState>,
    /// The response compression module, built for the requests whose route compresses.
    compression: compress::Module,
}

impl Proxy {
    pub fn new(runtime: Arc<Runtime>, listeners: Vec<ListenerInfo>, acme: Arc<AcmeState>) -> Proxy {
        Proxy {
            runtime,
            listeners,
            acme,
            compression: compress::Module::new(),
        }
    }

    fn listener_name(&self, ctx: &Ctx) -> &str {
        self.listeners.get(ctx.listener).map_or("", |l| &l.name)
    }

    /// The listener a connection arrived on, by its local address (a wildcard bind matches any IP).
    fn listener_of(&self, session: &Session) -> Option<usize> {
        let local = session.server_addr().and_then(|a| a.as_inet())?;
        self.listeners.iter().position(|l| l.serves(*local))
    }
}

/// The request's host: the URI authority (HTTP/2), the Host header, or an absolute-form
/// target's authority (pingora makes sure the last two agree when both are present).
pub(super) fn request_host(req: &RequestHeader) -> &str {
    req.uri
        .authority()
        .map(|a| authority_host(a.as_str()))
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .or_else(|| absolute_form_authority(req))
        .unwrap_or("")
}

/// The host of a URI authority (`user@host:port`, `[v6]:port`), as `http::uri::Authority::host`
/// reads it, by bytes: that one splits with string patterns, about 400 instructions a call on
/// every h2 request (whose host is its `:authority`), and a request reads its host three times.
fn authority_host(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    let start = bytes
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(0, |at| at + 1);
    let host = &bytes[start..];
    let end = if host.first() == Some(&b'[') {
        host.iter()
            .position(|&b| b == b']')
            .map_or(host.len(), |i| i + 1)
    } else {
        host.iter().position(|&b| b == b':').unwrap_or(host.len())
    };
    // Both ends sit next to an ASCII byte, so on character boundaries.
    &authority[start..start + end]
}

/// The authority of an HTTP/1 absolute-form target (`GET http://host/path`), which pingora
/// keeps in the raw target rather than in `uri`.
fn absolute_form_authority(req: &RequestHeader) -> Option<&str> {
    pingora::protocols::http::authority::raw_target_authority(req.raw_path())
        .authority()
        .and_then(|a| std::str::from_utf8(a).ok())
}

impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        // The request's one snapshot load: every phase reads `ctx.snapshot`.
        Ctx::new(self.runtime.snapshot(), self.runtime.begin_request())
    }

    fn init_downstream_h1_connection(&self, session: &mut ServerSession) {
        // The first request of a connection is read before any route is known: `[defaults]`.
        // (The body and keep-alive timeouts are set in `request_filter`, once the route is known.)
        // Per connection, before its first request (and so before `new_ctx`).
        let snap = self.runtime.snapshot();
        session.set_header_timeout(Some(snap.config.defaults.client_header_timeout));
        session.set_head_limits(head_limits(&snap.config.limits.head));
        session.set_keep_header_case(snap.config.server.preserve_header_case);
        // Pipelined requests are answered in order (RFC 9112 §9.3.2) instead of dropped.
        session.set_pipelining_enabled(true);
    }

    fn downstream_h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        // The decoded header list is bounded like an HTTP/1 head (`max_header_size`).
        let total = self.runtime.snapshot().config.limits.head.total;
        let mut options = pingora::protocols::http::v2::server::default_h2_options();
        options.max_header_list_size(u32::try_from(total).unwrap_or(u32::MAX));
        Some(options)
    }

    fn downstream_handshake_timeout(&self) -> Duration {
        self.runtime
            .snapshot()
            .config
            .defaults
            .client_header_timeout
    }

    async fn request_head_error(&self, session: &mut ServerSession, e: &Error, status: u16) {
        let kind = match status {
            414 => ClientError::UriTooLong,
            431 => ClientError::HeaderTooLarge,
            408 => ClientError::HeaderTimeout,
            0 => ClientError::Reset,
            _ => ClientError::BadRequest,
        };
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or_else(String::new, |a| a.ip().to_string());
        log::debug!("cannot read a request head from {peer}: {e}; answering {status}");
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let listener = listener_at(&self.listeners, local).map_or("", |l| &l.name);
        // Only on a head that could not be read (there is no request, so no context).
        if self.runtime.snapshot().config.server.metrics {
            self.runtime.metrics.record_client_error(listener, kind);
        }
        if status != 0 {
            let id = RequestId::new();
            if let Err(write) = respond::write_bare_error(session, status, &id).await {
                log::debug!("could not send {status} to the client: {write}");
            }
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        // pingora would log every failed request at ERROR. `logging` does it instead: the
        // client's failures (resets, timeouts, bad requests) at debug, counted; the upstream's
        // and our own at ERROR, at most one line per 10 s per kind (a dead upstream under load
        // must not flood the log), each request still in the access log.
        true
    }

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // None for every session (pingora's default adds a compression module turned off):
        // `request_filter` builds the compression module for a route that compresses.
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = ctx.snapshot.clone();
        // What was answered is read back for its status only (the log, metrics, retries): an
        // h2 session need not copy every response header it sends to keep it (vendor patch 34).
        session.set_keep_response_fields(false);
        if let Some(i) = self.listener_of(session) {
            ctx.tls = self.listeners[i].tls;
            ctx.listener = i;
        }
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let fields = names::RequestFields::of(req);
        let trusted = &snap.config.limits.trusted_proxies;
        ctx.client_ip = ctx.peer_ip.map(|peer| {
            let xff = fields.forwarded_for.and_then(|v| v.to_str().ok());
            trusted.client_ip(peer, xff)
        });
        ctx.request_id = RequestId::from_field(fields.request_id);
        ctx.host = forwarded::host_value(req, fields.head.host);
        ctx.client_list = forwarded::ClientList::of(&fields);
        ctx.trace = TraceContext::from_header(fields.traceparent.map(http::HeaderValue::as_bytes));
        // What pingora's parser let through but we refuse (Host, list-form Content-Length), and
        // the normalised path every later decision uses.
        let checked = head::check_fields(req, &fields.head)
            .map_err(|e| e.to_string())
            .and_then(|declared| {
                crate::path::normalize(req.uri.path(), snap.config.server.merge_slashes)
                    .map(|p| match p {
                        std::borrow::Cow::Owned(p) => Some(p),
                        std::borrow::Cow::Borrowed(_) => None,
                    })
                    .map(|p| (declared, p))
                    .map_err(|e| e.to_string())
            });
        let (declared, path) = match checked {
            Ok(path) => path,
            Err(why) => {
                log::debug!(
                    "bad request from {}: {why}",
                    ctx.peer_ip.map_or_else(String::new, |ip| ip.to_string())
                );
                self.count_client_error(ctx, ClientError::BadRequest);
                headers::capture(ctx, session.req_header());
                respond::write_error(session, ctx, Refusal::BadRequest.status()).await?;
                return Ok(true);
            }
        };
        ctx.path = path;
        let req = session.req_header();
        // ACME HTTP-01 challenges: answered before routing, redirects and rate limits.
        if ctx.path(req).starts_with(crate::acme::HTTP01_PREFIX) {
            if let Some(key_auth) = self.acme.http01_response(ctx.path(req)) {
                respond::write_acme_challenge(session, &key_auth, &ctx.request_id).await?;
                return Ok(true);
            }
        }
        ctx.route = snap
            .routes
            .lookup(&routing::normalize_host(ctx.host(req)), ctx.path(req));
        // Timeouts for this request's body and the connection's next request: the route's, or
        // `[defaults]` when no route matched.
        let route = ctx.route.and_then(|i| snap.routes.get(i));
        let options = route.map_or(&snap.config.defaults, |r| &r.options);
        apply_connection_timeouts(session, options);
        headers::capture(ctx, session.req_header());
        // A listener that redirects to HTTPS does so for every host, routed or not.
        if redirect::listener(session, ctx, self.listener_name(ctx)).await? {
            return Ok(true);
        }
        let Some(route) = route else {
            respond::write_error(session, ctx, Refusal::NoRoute.status()).await?;
            return Ok(true);
        };
        if redirect::route(session, ctx, self.listener_name(ctx), route).await? {
            return Ok(true);
        }

        if maintenance::refused(session, ctx, route).await? {
            return Ok(true);
        }
        if access::refuse_by_address(session, ctx).await? {
            return Ok(true);
        }

        // A CORS preflight is answered here and never reaches the upstream.
        if cors::preflight(session, ctx).await? {
            return Ok(true);
        }

        let req = session.req_header();
        if let Some(refused) = self.check_zones(&snap, route, req, ctx).await {
            respond::write_rate_limited(session, ctx, refused).await?;
            return Ok(true);
        }

        if declared.is_some_and(|n| n > route.options.max_body_size) {
            respond::write_error(session, ctx, Refusal::BodyTooLarge.status()).await?;
            linger::discard_body(session, route.options.max_body_size).await;
            return Ok(true);
        }
        if access::authenticate(session, ctx).await? {
            return Ok(true);
        }

        // gRPC frames its messages and compresses them itself (grpc-encoding): never touched.
        let grpc = grpc::is_grpc(session);
        compress::request(session, &self.compression, &route.options, grpc);
        if let Some(site) = &route.static_files {
            static_files::serve(session, ctx, site).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let limit = ctx.route().map_or(u64::MAX, |r| r.options.max_body_size);
            if ctx.body_bytes > limit {
                return Err(Refusal::BodyTooLarge.into_error("request body over max_body_size"));
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let snap = ctx.snapshot.clone();
        let route = ctx
            .route
            .and_then(|i| snap.routes.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        let service_idx = route.service.ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "a route that answers itself has no service",
            )
        })?;
        let service = &snap.services[service_idx];
        let pool_idx = match ctx.pool {
            Some(p) => p,
            None => {
                let req = session.req_header();
                let choice = pick::choose_pool(service, req, ctx.client_ip)
                    .ok_or_else(|| Refusal::NoServer.into_error("every pool has weight 0"))?;
                if let Some(stable) = pick::shield_for(service, &choice, &req.method) {
                    ctx.shield = Shield::Armed { stable };
                }
                ctx.sticky_cookie = choice.new_cookie;
                choice.pool
            }
        };
        let tried = ctx.tried();
        let claimed = affinity::claim(service, pool_idx, tried, session.req_header());
        let (picked, guard) = match queue::pick_with_slot(service, pool_idx, tried, claimed).await {
            queue::Slot::Got(choice, guard) => (Some(choice), Some(guard)),
            queue::Slot::NoServer => (None, None),
            queue::Slot::TimedOut { max_conns, waited } => {
                ctx.pool = Some(pool_idx);
                ctx.refusal = Some(queue::QUEUE_TIMEOUT_REASON.to_string());
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    format!("every server at max_conns = {max_conns} for {waited:?}"),
                ));
            }
        };
        if picked.is_some_and(|p| p.pool != pool_idx) {
            // The whole pool is down and another pool takes the request: no shield there.
            ctx.shield = Shield::Off;
        }
        ctx.pool = Some(picked.map_or(pool_idx, |p| p.pool));
        let Some(pick::ServerChoice { pool, server }) = picked else {
            return Err(if ctx.tries == 0 {
                ctx.refusal = pick::unresolved(&snap, service_idx, pool_idx);
                Refusal::NoServer.into_error("no healthy server in any weighted pool")
            } else {
                Error::explain(
                    ErrorType::ConnectError,
                    "every server of the pool failed to connect",
                )
                .into_up()
            });
        };
        ctx.server = Some(server);
        let server = &service.pools[pool].servers[server];
        if ctx.tries < MAX_TRIES {
            ctx.tried[ctx.tries] = server.addr;
            ctx.tries += 1;
        }
        // One reading of the clock for both.
        let now = Instant::now();
        ctx.first_try.get_or_insert(now);
        ctx.guard = guard;
        ctx.upstream = Some(server.addr);
        ctx.upstream_start = Some(now);

        let transport = &service.pools[pool].transport;
        let mut peer = peer::build(server, transport, &route.options);
        peer.options.idle_timeout = Some(service.upstream.keepalive_timeout);
        peer.options.idle_limit = snap.idle_limits.get(service_idx).cloned().flatten();
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let ejected = ctx
            .guard
            .take()
            .is_some_and(|guard| self.passive_failure(ctx, guard.state(), Failure::Connect));
        // Connecting never sent the request, so another server is safe for every method: the
        // stable pool when the request is shielded, else another server of the same pool when
        // the route's retry policy allows. The failure is counted on the pool that failed,
        // before a shield moves the request.
        let shielded = matches!(ctx.shield, Shield::Armed { .. });
        let retried = shielded || retry::decide(session, ctx, retry::Cause::Connect);
        self.record_connect_error(ctx, ejected, retried);
        e.set_retry(retried);
        if shielded {
            self.shield(ctx);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.connected(reused);
        Ok(())
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Ctx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // Retries are counted (switchyard_upstream_retries_total, and a shield retry in
        // switchyard_rollout_shielded_requests_total), not logged per request: a dead server
        // under load would write a line per request. Its ejection is logged.
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.shield == Shield::Retrying {
            ctx.shield = Shield::Off;
            // A shield retry: the method was allowed by the service's shield_methods; only a
            // request body too large to replay stops it.
            if session.as_ref().retry_buffer_truncated() {
                e.set_retry(false);
            }
        } else if !std::mem::take(&mut ctx.status_retry) {
            // (A status of `retry.on` was decided on in upstream_response_filter.)
            let retried = self.retry_failure(session, ctx, &e, client_reused);
            e.set_retry(retried);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        // Room for every header added below at once. The map read from the client has room for
        // 8 added fields (vendor patch 27), so this costs a comparison; a route that sets more
        // grows the map once here, not at each insert (each growth rehashes every field).
        upstream.reserve_headers(forwarded::ADDED + 1 + route.options.request_headers.set.len());
        forwarded::apply(
            upstream,
            &ctx.client_list,
            ctx.host.clone(),
            ctx.peer_ip,
            ctx.client_ip,
            ctx.tls,
            &ctx.request_id,
        )?;
        // The upstream continues the trace under our span (the client's tracestate passes as is).
        let traceparent = ctx.trace.header_value();
        upstream.insert_header(
            names::TRACEPARENT,
            http::HeaderValue::from_bytes(&traceparent)
                .map(names::never_indexed)
                .map_err(|_| {
                    pingora_error::Error::explain(
                        pingora_error::ErrorType::InternalError,
                        "traceparent",
                    )
                })?,
        )?;
        access::apply_auth_headers(upstream, ctx)?;
        // The route's own request headers, after ours so that it may replace them.
        headers::apply_request(
            ctx,
            session.req_header(),
            upstream,
            &route.options.request_headers,
        )?;

        // The upstream gets the normalised path (unless the route asks for the original), with
        // the route's prefix stripped, in origin form: an absolute-form target's authority
        // becomes the Host header.
        let original = upstream.uri.path();
        let mut path: std::borrow::Cow<'_, str> = match &ctx.path {
            Some(normal) if !route.options.forward_original_path => normal.as_str().into(),
            _ => original.into(),
        };
        if route.strip_prefix && &*route.prefix != "/" {
            path = routing::strip(&route.prefix, &path).into();
        }
        let authority = absolute_form_authority(upstream).map(str::to_string);
        if path != original || authority.is_some() {
            let target = match upstream.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            let uri = target
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InternalError, "rewriting path", e))?;
            upstream.set_uri(uri);
        }
        if let Some(authority) = authority {
            upstream.insert_header(header::HOST, authority)?;
        }
        // Identical Content-Length lines (pingora refused differing ones) go on as one.
        if upstream
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .count()
            > 1
        {
            if let Some(cl) = upstream.headers.get(header::CONTENT_LENGTH).cloned() {
                upstream.insert_header(header::CONTENT_LENGTH, cl)?;
            }
        }
        if !route.options.websocket && upstream.headers.contains_key(header::UPGRADE) {
            upstream.remove_header(&header::UPGRADE);
            upstream.remove_header(&header::CONNECTION);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(guard) = &ctx.guard {
            guard.state().report_success();
        }
        if upstream.status.is_server_error() && self.shield(ctx) {
            ctx.guard = None;
            ctx.shield = Shield::Retrying;
            let mut e = Error::explain(
                ErrorType::HTTPStatus(upstream.status.as_u16()),
                "the canary answered 5xx; retrying on the stable pool",
            );
            e.set_retry(true);
            return Err(e.into_up());
        }
        match self.retry_status(session, ctx, upstream.status.as_u16()) {
            Some(retry) => Err(retry),
            None => Ok(()),
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(route) = ctx.route() {
            // Room for the headers added here at once: the route's, CORS's few, the request id
            // and the rate. The map read from the upstream has room for 8 (vendor patch 27); a
            // route that adds more grows it once here, not at each insert.
            resp.reserve_headers(route.options.response_headers.len() + 8);
            compress::response(session, &route.options, resp);
            headers::apply_response(ctx, session.req_header(), resp, &route.options)?;
            if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
                // An upgraded connection (a websocket) is timed like the upstream, both ways:
                // client_body_timeout no longer applies.
                session.set_read_timeout(Some(route.options.read_timeout));
            }
        }
        resp.insert_header(names::X_REQUEST_ID, ctx.request_id.header())?;
        if let Some(cookie) = affinity::answer_cookie(session.req_header(), ctx) {
            resp.append_header(header::SET_COOKIE, cookie)?;
        }
        if let Some((name, id)) = ctx.sticky_cookie.take() {
            let secure = if ctx.tls { "; Secure" } else { "" };
            resp.append_header(
                header::SET_COOKIE,
                format!(
                    "{name}={id}; Path=/; Max-Age={STICKY_MAX_AGE}; HttpOnly; SameSite=Lax{secure}"
                ),
            )?;
        }
        if let Some((limit, remaining, reset)) = ctx.rate {
            resp.insert_header(names::RATELIMIT_LIMIT, limit)?;
            resp.insert_header(
                names::RATELIMIT_REMAINING,
                names::never_indexed(remaining.into()),
            )?;
            resp.insert_header(
                names::RATELIMIT_RESET,
                names::never_indexed(respond::whole_seconds(reset).into()),
            )?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let status = respond::status_for(e);
        if status > 0 {
            if ctx.request_id.is_empty() {
                ctx.request_id = RequestId::of(session.req_header());
            }
            let reason = ctx.refusal.as_deref();
            let written = respond::write_error_with(session, ctx, status, reason);
            if let Err(write) = written.await {
                log::debug!("could not send {status} to the client: {write}");
            } else if status == Refusal::BodyTooLarge.status() {
                linger::discard_body(session, ctx.route().map_or(0, |r| r.options.max_body_size))
                    .await;
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let (Some(guard), Some(e)) = (ctx.guard.take(), e) {
            // A timeout or broken connection after connecting (the request was sent whole:
            // the upstream timer starts only then) counts against the server, as nginx's
            // max_fails does; connect errors were counted in fail_to_connect already. A status
            // the proxy chose (a shielded canary 5xx) is not a transport failure.
            let upstream_failure = e.esource() == &ErrorSource::Upstream
                && !matches!(e.etype(), ErrorType::HTTPStatus(_));
            let failure = Failure::Response {
                client: ctx.client_ip,
            };
            if upstream_failure && self.passive_failure(ctx, guard.state(), failure) {
                self.record_ejection(ctx);
            }
        }
        if let Some(e) = e {
            self.log_failure(session, ctx, e);
        }
        // Read once, for the window, the metrics and the log alike.
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let now = Instant::now();
        let duration = now.saturating_duration_since(ctx.start);
        self.record_window(ctx, e, status, now);
        self.record_request(ctx, status, duration);
        self.write_access_log(session, ctx, e, status, duration);
        if ctx.snapshot.config.tracing.otlp_endpoint.is_some() {
            self.runtime
                .spans
                .push(self.span_record(session, ctx, e, status, duration));
        }
    }
}

/// The route's client timeouts on the downstream session: the body read timeout for this
/// request, the header and keep-alive timeouts for the connection's next one.
fn apply_connection_timeouts(session: &mut ServerSession, o: &RouteOptions) {
    session.set_read_timeout(Some(o.client_body_timeout));
    session.set_header_timeout(Some(o.client_header_timeout));
    // Off (Connection: close, HTTP/1.0 without keep-alive) stays off. The Connection field is
    // not looked up again: nothing has changed it since pingora read it (no module, no hook of
    // ours before this one writes the request).
    session.adjust_keepalive(o.keepalive_seconds());
}

/// pingora's form of `[limits]` head sizes.
fn head_limits(h: &HeadLimits) -> pingora::protocols::http::v1::server::RequestHeadLimits {
    pingora::protocols::http::v1::server::RequestHeadLimits {
        request_line: h.request_line,
        header_line: h.header_line,
        total: h.total,
    }
}

/// How long a sticky id cookie lives: 30 days.
const STICKY_MAX_AGE: u64 = 30 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::authority_host;

    #[test]
    fn authority_host_reads_hosts_as_the_http_crate_does() {
        for a in [
            "example.com",
            "example.com:8443",
            "user:pw@example.com:8443",
            "a@b@example.com",
            "[::1]",
            "[::1]:443",
            "u@[fe80::1%25eth0]:80",
            "127.0.0.1:80",
            "xn--bcher-kva.example",
        ] {
            let parsed: http::uri::Authority = a.parse().expect("an authority");
            assert_eq!(authority_host(a), parsed.host(), "{a}");
        }
        assert_eq!(authority_host(""), "");
        assert_eq!(authority_host("[::1"), "[::1");
    }
}
