//! Switchyard's redirects: a plain listener's redirect to HTTPS (any host, routed or not), a route's `redirect_https`, and a route's `redirect = { to, code }`.

use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession as Session;
use pingora_error::Result;

use super::ctx::Ctx;
use super::headers::Live;
use super::respond;
use crate::routing::{self, Route};
use crate::snapshot::ListenerPolicy;

/// Redirects every request on a plain listener with `redirect_https` (whether a route matches
/// or not). `Ok(true)` when answered.
pub(super) async fn listener(session: &mut Session, ctx: &Ctx, listener: &str) -> Result<bool> {
    let snap = ctx.snapshot.clone();
    let Some(policy) = snap
        .listener(listener)
        .filter(|l| l.redirect_https && !ctx.tls)
    else {
        return Ok(false);
    };
    answer_https(session, ctx, policy).await
}

/// A route's own redirect: `redirect_https` on a plain listener (with the listener's
/// `redirect_code`), else its `redirect`. `Ok(true)` when answered.
pub(super) async fn route(
    session: &mut Session,
    ctx: &Ctx,
    listener: &str,
    route: &Route,
) -> Result<bool> {
    let snap = ctx.snapshot.clone();
    if route.options.redirect_https && !ctx.tls {
        if let Some(policy) = snap.listener(listener) {
            return answer_https(session, ctx, policy).await;
        }
    }
    let Some(redirect) = &route.redirect else {
        return Ok(false);
    };
    let location = redirect
        .to
        .render_string(&Live::new(ctx, session.req_header()).vars());
    respond::write_redirect_with(session, ctx, redirect.code, &location).await?;
    Ok(true)
}

async fn answer_https(session: &mut Session, ctx: &Ctx, policy: &ListenerPolicy) -> Result<bool> {
    let req = session.req_header();
    let host = routing::normalize_host(ctx.host(req));
    let location = https_location(&host, policy.https_port, req);
    respond::write_redirect_with(session, ctx, policy.redirect_code, &location).await?;
    Ok(true)
}

/// `https://host[:port]/path?query` for a redirect.
fn https_location(host: &str, port: u16, req: &RequestHeader) -> String {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    }
}
