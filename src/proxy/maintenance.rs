//! A service in maintenance answers 503 with Retry-After and its page, except to allowed clients, on exempt and health check paths, and for ACME challenges.

use std::borrow::Cow;

use pingora_error::Result;
use pingora_proxy::Session;

use super::ctx::Ctx;
use super::respond;
use crate::routing::{self, Route};

/// Answers the request with the maintenance 503 when `route`'s service is in maintenance and the
/// request is not let through (`maintenance::Gate::lets_through`); `true` when it did.
pub async fn refused(session: &mut Session, ctx: &Ctx, route: &Route) -> Result<bool> {
    // A route that answers itself (static files, a redirect) has no service, so no
    // maintenance switch.
    let Some(gate) = route
        .service
        .and_then(|i| ctx.snapshot.maintenance.get(i))
        .and_then(Option::as_ref)
    else {
        return Ok(false);
    };
    let path = ctx.path(session.req_header());
    // ACME HTTP-01 must keep working: a challenge not answered by us goes to the servers.
    if path.starts_with(crate::acme::HTTP01_PREFIX) {
        return Ok(false);
    }
    let upstream_path: Cow<'_, str> = if route.strip_prefix {
        routing::strip(&route.prefix, path).into()
    } else {
        path.into()
    };
    if gate.lets_through(ctx.client_ip, path, &upstream_path) {
        return Ok(false);
    }
    respond::write_maintenance(session, ctx, gate).await?;
    Ok(true)
}
