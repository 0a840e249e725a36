//! What a request leaves behind: its pool window, its metrics, passive-health verdicts, the process log line.

use std::time::{Duration, Instant};

use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_proxy::Session;

use super::{Ctx, Proxy};
use crate::metrics::{ClientError, Finished};
use crate::rollout;
use crate::upstream::{Failure, ServerState};

impl Proxy {
    /// Records a passive-health failure of the server this request used, and ejects it when
    /// its streak reaches `max_fails` and another server can take its traffic (passive checks
    /// never remove the last one). Returns whether it was ejected; the caller counts it.
    pub(super) fn passive_failure(&self, ctx: &Ctx, state: &ServerState, failure: Failure) -> bool {
        let (Some((_, service)), Some(pool), Some(addr)) = (ctx.service(), ctx.pool, ctx.upstream)
        else {
            return false;
        };
        let Some(streak) = state.report_failure(&service.passive, failure) else {
            return false;
        };
        if !service.can_spare(pool, addr) {
            crate::lograte::warn(
                "passive-spare",
                format_args!(
                    "not ejecting {addr} of service \"{}\" after {streak}: no other server can take its traffic",
                    service.name
                ),
            );
            return false;
        }
        state.eject(&service.passive);
        log::warn!(
            "ejecting {addr} of service \"{}\" for {:?} after {streak}",
            service.name,
            service.passive.fail_timeout
        );
        true
    }

    /// The process-log line of a failed request (see `suppress_error_log`).
    pub(super) fn log_failure(&self, session: &Session, ctx: &Ctx, e: &Error) {
        let peer = ctx.peer_ip.map_or_else(String::new, |ip| ip.to_string());
        if let Some(kind) = client_error_kind(e) {
            self.count_client_error(ctx, kind);
            log::debug!(
                "request {} from {peer}: {} ({e})",
                ctx.request_id,
                kind.label()
            );
            return;
        }
        let req = session.req_header();
        let what = format_args!(
            "{} {} {} (request {}, upstream {}): {e}",
            req.method,
            ctx.host(req),
            ctx.path(req),
            ctx.request_id,
            ctx.upstream
                .map_or_else(|| "none".to_string(), |a| a.to_string()),
        );
        match e.esource() {
            ErrorSource::Upstream => crate::lograte::error("upstream-failure", what),
            // A status the proxy chose (404, 413, 503, ...) is not a failure to act on.
            _ if matches!(e.etype(), ErrorType::HTTPStatus(_)) => log::debug!("{what}"),
            _ => crate::lograte::error("proxy-failure", what),
        }
    }

    /// Counts a failure the client caused on this request's listener.
    pub(super) fn count_client_error(&self, ctx: &Ctx, kind: ClientError) {
        if ctx.snapshot.config.server.metrics {
            self.runtime
                .metrics
                .record_client_error(self.listener_name(ctx), kind);
        }
    }

    /// If this request is shielded and still on its canary: counts the failure against the
    /// canary (window and metrics) and points the request at the stable pool for one retry.
    pub(super) fn shield(&self, ctx: &mut Ctx) -> bool {
        let super::Shield::Armed { stable } = std::mem::take(&mut ctx.shield) else {
            return false;
        };
        let Some(canary) = ctx.pool else {
            return false;
        };
        let Some((_, service)) = ctx.service() else {
            return false;
        };
        let now = Instant::now();
        let pool = &service.pools[canary];
        pool.window
            .record(now, now.saturating_duration_since(ctx.start), true);
        self.runtime
            .metrics
            .record_shielded(&service.name, &pool.name);
        ctx.pool = Some(stable);
        ctx.shield_retried = true;
        ctx.forget_tried();
        ctx.upstream = None;
        ctx.server = None;
        true
    }

    /// Counts and times the finished request, unless `[server] metrics = false`.
    pub(super) fn record_request(&self, ctx: &Ctx, status: u16, duration: Duration) {
        let snap = &ctx.snapshot;
        if !snap.config.server.metrics {
            return;
        }
        self.runtime.metrics.record_request(&Finished {
            handles: &snap.handles,
            routes: &snap.routes,
            services: &snap.services,
            route: ctx.route,
            pool: ctx.pool,
            status,
            duration,
            upstream_seconds: ctx.upstream_ms.map(|ms| ms / 1000.0),
        });
    }

    /// Records the finished request in its pool's live window (whatever `[server] metrics` says:
    /// rollouts read it). A request that never got a pool is in no window.
    pub(super) fn record_window(&self, ctx: &Ctx, e: Option<&Error>, status: u16, now: Instant) {
        let (Some((_, service)), Some(pool)) = (ctx.service(), ctx.pool) else {
            return;
        };
        let upstream_failed = e.is_some_and(|e| e.esource() == &ErrorSource::Upstream);
        service.pools[pool].window.record(
            now,
            now.saturating_duration_since(ctx.start),
            rollout::is_error(status, upstream_failed),
        );
    }

    /// Counts a failed connect, its retry and the ejection it caused (same switch as above).
    pub(super) fn record_connect_error(&self, ctx: &Ctx, ejected: bool, retried: bool) {
        let snap = &ctx.snapshot;
        let Some((service, _)) = ctx.service().filter(|_| snap.config.server.metrics) else {
            return;
        };
        let metrics = &self.runtime.metrics;
        if let Some(pool) = ctx.pool {
            metrics.record_connect_error(&snap.handles, service, pool, retried);
        }
        if ejected {
            metrics.record_ejection(&snap.handles, service);
        }
    }

    /// Counts a retry on another server after a failure past the connect, or a status of the
    /// route's `retry.on` (same switch as above; a failed connect's retry is counted with it).
    pub(super) fn record_retry(&self, ctx: &Ctx) {
        let snap = &ctx.snapshot;
        let Some((service, _)) = ctx.service().filter(|_| snap.config.server.metrics) else {
            return;
        };
        if let Some(pool) = ctx.pool {
            self.runtime
                .metrics
                .record_retry(&snap.handles, service, pool);
        }
    }

    /// Counts a passive ejection caused by this request (same switch as above).
    pub(super) fn record_ejection(&self, ctx: &Ctx) {
        let snap = &ctx.snapshot;
        if let Some((service, _)) = ctx.service().filter(|_| snap.config.server.metrics) {
            self.runtime.metrics.record_ejection(&snap.handles, service);
        }
    }
}

/// What a client-caused failure of a proxied request was (`None` when it was not the client's).
pub(super) fn client_error_kind(e: &Error) -> Option<ClientError> {
    if e.esource() != &ErrorSource::Downstream {
        return None;
    }
    Some(match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => ClientError::BodyTimeout,
        ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::ConnectionClosed
        | ErrorType::H2Error => ClientError::Reset,
        _ => ClientError::BadRequest,
    })
}
