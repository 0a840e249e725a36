//! Access control on the request path: a route's `access` rules (403), then its basic auth (401) and forward auth; ACME HTTP-01 paths are exempt.
//!
//! The decisions are the config's ([`crate::config::access`], [`crate::htpasswd`]); this module
//! reads the request, runs slow password hashes off the async workers and writes the refusals
//! through `respond`.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora_error::Result;
use pingora_proxy::Session;
use tokio::sync::Semaphore;

use super::ctx::Ctx;
use super::forward_auth::{self, Verdict};
use super::respond;
use crate::config::access::BasicAuth;
use crate::htpasswd;

/// Slow hashes (bcrypt, SHA-crypt) checked at once on blocking threads; more wait their turn, so
/// a flood of wrong bcrypt passwords cannot take every blocking thread.
static SLOW_CHECKS: Semaphore = Semaphore::const_new(8);

/// ACME HTTP-01 challenges pass every access rule and authentication (the CA has no password and
/// its address is not known in advance).
fn exempt(ctx: &Ctx, req: &RequestHeader) -> bool {
    ctx.path(req).starts_with(crate::acme::HTTP01_PREFIX)
}

/// The route's `access` rules for the real client address; a refused client gets 403. Returns
/// whether the request was answered.
pub(super) async fn refuse_by_address(session: &mut Session, ctx: &Ctx) -> Result<bool> {
    let Some(route) = ctx.route() else {
        return Ok(false);
    };
    if route.options.access.allows(ctx.client_ip) || exempt(ctx, session.req_header()) {
        return Ok(false);
    }
    log::debug!(
        "access to {} denied for {:?} by its allow/deny rules",
        route.id,
        ctx.client_ip
    );
    respond::write_answer(session, ctx, 403, &[], None, None).await?;
    Ok(true)
}

/// The route's basic auth, then its forward auth: a refusal is answered here (401 with
/// WWW-Authenticate, the auth service's 401/403, or 500 when the auth service fails); a pass
/// keeps the auth service's chosen headers in `ctx` for the upstream request. Returns whether the
/// request was answered.
pub(super) async fn authenticate(session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let unguarded = ctx
        .route()
        .is_none_or(|r| r.options.basic_auth.is_none() && r.options.forward_auth.is_none());
    if unguarded {
        return Ok(false);
    }
    // The snapshot's own Arc, so the route's settings stay borrowed while `ctx` changes.
    let snap = ctx.snapshot.clone();
    let Some(route) = ctx.route.and_then(|i| snap.routes.get(i)) else {
        return Ok(false);
    };
    let (basic, forward) = (&route.options.basic_auth, &route.options.forward_auth);
    if exempt(ctx, session.req_header()) {
        return Ok(false);
    }
    if let Some(basic) = basic {
        if !basic_passes(session.req_header(), basic).await {
            let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", basic.realm);
            let challenge = HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
            let headers = [(WWW_AUTHENTICATE, challenge)];
            respond::write_answer(session, ctx, 401, &headers, None, None).await?;
            return Ok(true);
        }
    }
    let Some(forward) = forward else {
        return Ok(false);
    };
    match forward_auth::ask(forward, session.req_header(), ctx).await {
        Verdict::Pass(headers) => {
            ctx.auth_headers = Some((forward.response_headers.clone(), headers));
            Ok(false)
        }
        Verdict::Refuse {
            status,
            headers,
            body,
        } => {
            respond::write_answer(session, ctx, status, &headers, Some(body), None).await?;
            Ok(true)
        }
        Verdict::Fail(why) => {
            log::warn!("forward auth for {}: {why}", forward.url);
            let error = format!("auth service failed: {why}");
            respond::write_answer(session, ctx, 500, &[], None, Some(&error)).await?;
            Ok(true)
        }
    }
}

/// Whether the request's `Authorization: Basic` names a user of the file with the right password.
async fn basic_passes(req: &RequestHeader, auth: &BasicAuth) -> bool {
    let Some((user, password)) = req
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| htpasswd::basic_credentials(v.as_bytes()))
    else {
        return false;
    };
    let Some(hash) = auth.users.user(&user) else {
        log::debug!("basic auth: no user \"{user}\" in {}", auth.file.display());
        return false;
    };
    let ok = if hash.is_slow() {
        let Ok(_permit) = SLOW_CHECKS.acquire().await else {
            return false;
        };
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false)
    } else {
        hash.verify(&password)
    };
    if !ok {
        log::debug!("basic auth: wrong password for \"{user}\"");
    }
    ok
}

/// The upstream request gets the auth service's chosen headers, and never a client's header of
/// those names (a client cannot pose as a user the auth service names).
pub(super) fn apply_auth_headers(upstream: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    let Some((names, values)) = &ctx.auth_headers else {
        return Ok(());
    };
    for name in names {
        upstream.remove_header(name);
    }
    for (name, value) in values {
        upstream.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// What a pass leaves for the upstream request: the configured names and the values found.
pub(super) type AuthHeaders = (Vec<HeaderName>, Vec<(HeaderName, HeaderValue)>);
