//! The headers a route sets and removes (`request_headers`, `response_headers`, `response_headers_remove`), rendered with their request variables, on proxied requests and answers and on Switchyard's own answers.

use std::borrow::Cow;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora_error::Result;

use super::ctx::Ctx;
use crate::config::headers::{HeaderRules, Template, Vars};
use crate::config::RouteOptions;
use crate::routing;

/// Keeps the Origin the route's CORS policy allows, for every answer to this request. Called
/// once the route is known (or known to be none).
pub(super) fn capture(ctx: &mut Ctx, req: &RequestHeader) {
    ctx.cors_origin = super::cors::allowed_origin(ctx.options(), req);
}

/// The variables of a request that is at hand.
pub(super) struct Live<'a> {
    ctx: &'a Ctx,
    host: Cow<'a, str>,
    request_uri: Cow<'a, str>,
    uri: &'a str,
}

impl<'a> Live<'a> {
    pub(super) fn new(ctx: &'a Ctx, req: &'a RequestHeader) -> Live<'a> {
        Live {
            ctx,
            host: routing::normalize_host(ctx.host(req)),
            request_uri: request_uri(req),
            uri: ctx.path(req),
        }
    }

    pub(super) fn vars(&self) -> Vars<'_> {
        Vars {
            host: &self.host,
            tls: self.ctx.tls,
            client_ip: self.ctx.client_ip,
            request_id: &self.ctx.request_id,
            request_uri: &self.request_uri,
            uri: self.uri,
            prefix: self.ctx.route().map_or("/", |r| &r.prefix),
        }
    }
}

/// The request target as the client sent it (`$request_uri`): origin form, with the query.
fn request_uri(req: &RequestHeader) -> Cow<'_, str> {
    let raw = req.raw_path();
    if raw.starts_with(b"/") {
        String::from_utf8_lossy(raw)
    } else {
        // An absolute-form target or `*`: its path and query, as nginx's $request_uri.
        Cow::Borrowed(req.uri.path_and_query().map_or("/", |p| p.as_str()))
    }
}

/// The route's `request_headers` on the request going upstream (after Switchyard's own
/// X-Forwarded-* headers, so a route may replace them); `req` is the client's request.
pub(super) fn apply_request(
    ctx: &Ctx,
    req: &RequestHeader,
    upstream: &mut RequestHeader,
    rules: &HeaderRules,
) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    for name in &rules.remove {
        upstream.remove_header(name);
    }
    render_each(ctx, req, &rules.set, |name, value| {
        upstream.insert_header(name.clone(), value)
    })
}

/// Calls `insert` with each header of `headers` and its value for this request (a template whose
/// variable made its value invalid is left out). The request's variables are worked out at the
/// first template that has any: a route whose headers are all literal values never needs them.
fn render_each(
    ctx: &Ctx,
    req: &RequestHeader,
    headers: &[(http::HeaderName, Template)],
    mut insert: impl FnMut(&http::HeaderName, http::HeaderValue) -> Result<()>,
) -> Result<()> {
    let mut live = None;
    for (name, template) in headers {
        let value = match template.literal() {
            Some(value) => Some(value.clone()),
            None => template.render(&live.get_or_insert_with(|| Live::new(ctx, req)).vars()),
        };
        if let Some(value) = value {
            insert(name, value)?;
        }
    }
    Ok(())
}

/// The route's response headers and CORS headers on the upstream's answer.
pub(super) fn apply_response(
    ctx: &Ctx,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    options: &RouteOptions,
) -> Result<()> {
    route_headers(ctx, req, resp, options)?;
    super::cors::decorate(resp, ctx, options.cors.as_ref())
}

/// The route's (or `[defaults]'`) response headers and CORS headers on one of Switchyard's own
/// answers to `req`, as on the upstream's.
pub(super) fn decorate_own(
    resp: &mut ResponseHeader,
    ctx: &Ctx,
    req: &RequestHeader,
) -> Result<()> {
    apply_response(ctx, req, resp, ctx.options())
}

/// [`decorate_own`] without the CORS headers (a preflight's answer has its own).
pub(super) fn own_headers(resp: &mut ResponseHeader, ctx: &Ctx, req: &RequestHeader) -> Result<()> {
    route_headers(ctx, req, resp, ctx.options())
}

/// `response_headers_remove`, then `response_headers` rendered with the request's variables.
fn route_headers(
    ctx: &Ctx,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    options: &RouteOptions,
) -> Result<()> {
    for name in &options.response_headers_remove {
        resp.remove_header(name);
    }
    render_each(ctx, req, &options.response_headers, |name, value| {
        resp.insert_header(name.clone(), value)
    })
}
