//! CORS at the edge: preflights answered without the upstream, and the CORS headers on every answer to an allowed origin (the upstream's and Switchyard's own).

use http::header::{self, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession as Session;
use pingora_error::Result;

use super::ctx::Ctx;
use super::respond;
use crate::config::cors::{Allowed, CorsPolicy, Preflight};
use crate::config::RouteOptions;

const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";

/// The request's Origin when `options` have a CORS policy that allows it.
pub(super) fn allowed_origin(options: &RouteOptions, req: &RequestHeader) -> Option<HeaderValue> {
    let policy = options.cors.as_ref()?;
    let origin = req.headers.get(header::ORIGIN)?;
    policy
        .allows_origin(origin.to_str().ok()?)
        .then(|| origin.clone())
}

/// Answers a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) on a route
/// with a CORS policy: 204 with the CORS headers, or 403 without them for an origin or a method
/// the policy does not allow. Never reaches the upstream. `Ok(true)` when answered.
pub(super) async fn preflight(session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let snap = ctx.snapshot.clone();
    let Some(policy) = ctx
        .route
        .and_then(|i| snap.routes.get(i))
        .and_then(|r| r.options.cors.as_ref())
    else {
        return Ok(false);
    };
    let req = session.req_header();
    if req.method != http::Method::OPTIONS {
        return Ok(false);
    }
    let (Some(origin), Some(method)) = (
        req.headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        req.headers.get(REQUEST_METHOD),
    ) else {
        return Ok(false);
    };
    let refused = match policy.preflight(origin, method.to_str().unwrap_or("")) {
        Preflight::Allowed => None,
        Preflight::OriginRefused => Some("CORS preflight refused: origin not allowed"),
        Preflight::MethodRefused => Some("CORS preflight refused: method not allowed"),
    };
    if let Some(why) = refused {
        ctx.cors_origin = None;
        respond::write_error_with(session, ctx, 403, Some(why)).await?;
        return Ok(true);
    }
    let mut resp = preflight_answer(policy, req)?;
    resp.insert_header(super::names::X_REQUEST_ID, ctx.request_id.as_str())?;
    super::headers::own_headers(&mut resp, ctx, req)?;
    session.write_response_header(Box::new(resp)).await?;
    session.finish_body().await?;
    Ok(true)
}

/// The 204 to an allowed preflight.
fn preflight_answer(policy: &CorsPolicy, req: &RequestHeader) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(204, Some(10))?;
    let origin = req.headers.get(header::ORIGIN).cloned();
    if let Some(origin) = &origin {
        resp.insert_header(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            policy.allow_origin(origin).into_owned(),
        )?;
    }
    let methods = match (&policy.methods, &policy.allow_methods) {
        (Allowed::Any, _) => req.headers.get(REQUEST_METHOD).cloned(),
        (_, list) => list.clone(),
    };
    if let Some(m) = methods {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, m)?;
    }
    let headers = match (&policy.headers, &policy.allow_headers) {
        (Allowed::Any, _) => req.headers.get(REQUEST_HEADERS).cloned(),
        (_, list) => list.clone(),
    };
    if let Some(h) = headers {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, h)?;
    }
    if let Some(age) = &policy.max_age {
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, age.clone())?;
    }
    if policy.credentials {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    resp.insert_header(
        header::VARY,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    )?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    Ok(resp)
}

/// The CORS headers of an answer to an actual request: the allowed origin (echoed, or `*`),
/// credentials and exposed headers, and `Vary: Origin` whenever the answer depends on it.
pub(super) fn decorate(
    resp: &mut ResponseHeader,
    ctx: &Ctx,
    policy: Option<&CorsPolicy>,
) -> Result<()> {
    let Some(policy) = policy else {
        return Ok(());
    };
    if policy.varies() {
        vary_origin(resp)?;
    }
    let Some(origin) = &ctx.cors_origin else {
        return Ok(());
    };
    resp.insert_header(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        policy.allow_origin(origin).into_owned(),
    )?;
    if policy.credentials {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    if let Some(expose) = &policy.expose {
        resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
    }
    Ok(())
}

/// Adds `Origin` to the answer's Vary unless it is there already (or Vary is `*`).
fn vary_origin(resp: &mut ResponseHeader) -> Result<()> {
    let present = resp.headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        resp.append_header(header::VARY, "Origin")?;
    }
    Ok(())
}
