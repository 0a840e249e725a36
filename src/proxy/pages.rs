//! Which body an answer of Switchyard's own gets: the error page of the route, the service or `[defaults]` for its status, HTML or JSON by `Accept`, else the built-in JSON body.

use bytes::Bytes;
use pingora::http::RequestHeader;

use super::ctx::Ctx;
use crate::config::error_pages::{choose, ErrorPages, PageKind};

/// The body of an error answer with `status` and its content type. `first` is a level above the
/// route's (a maintenance page); `error` says more than the status's usual reason in the built-in
/// body.
pub fn error_body(
    req: &RequestHeader,
    ctx: &Ctx,
    status: u16,
    first: Option<&ErrorPages>,
    error: Option<&str>,
) -> (Bytes, &'static str) {
    let snap = &ctx.snapshot;
    let route = ctx.route();
    // Services are compiled in config order: a route's service index is its config index.
    let service = route.and_then(|r| snap.config.services.get(r.service?));
    let levels = [
        first,
        route.map(|r| &r.options.error_pages),
        service.map(|s| &s.error_pages),
        Some(&snap.config.defaults.error_pages),
    ];
    let levels: Vec<&ErrorPages> = levels
        .into_iter()
        .flatten()
        .filter(|l| !l.is_empty())
        .collect();
    if !levels.is_empty() {
        let accept = req
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        if let Some((page, kind)) = choose(&levels, status, PageKind::for_accept(accept)) {
            return (page.body.clone(), kind.content_type());
        }
    }
    (
        super::respond::body_with(status, error, &ctx.request_id),
        PageKind::Json.content_type(),
    )
}
