//! The route's rate-limit zones, checked in `request_filter`.

use std::time::Duration;

use pingora::http::RequestHeader;

use super::{Ctx, Proxy};
use crate::limits::{key_hash, KeyKind, Verdict};
use crate::routing::{self, Route};
use crate::snapshot::Snapshot;

impl Proxy {
    /// Runs the route's zones; `Some((limit, retry_after))` when one of them refuses the request.
    pub(super) fn check_zones(
        &self,
        snap: &Snapshot,
        route: &Route,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Option<(u32, Duration)> {
        if route.zones.is_empty() {
            return None;
        }
        let limits = &snap.config.limits;
        let path = ctx.path(req);
        if limits
            .exempt_paths
            .iter()
            .any(|p| routing::prefix_matches(p, path))
        {
            return None;
        }
        let keys = &snap.zone_keys;
        for zone in &route.zones {
            let key = match &zone.spec().key {
                KeyKind::ClientIp => key_hash(keys, ctx.client_ip?),
                KeyKind::ClientIpRoute => key_hash(keys, (ctx.client_ip?, &*route.id)),
                KeyKind::Header(name) => match req.headers.get(name.as_str()) {
                    Some(v) => key_hash(keys, v.as_bytes()),
                    None => continue,
                },
            };
            match zone.check(key) {
                Verdict::Allowed {
                    limit,
                    remaining,
                    reset,
                } => {
                    if limits.rate_limit_headers && ctx.rate.is_none_or(|(_, r, _)| remaining < r) {
                        ctx.rate = Some((limit, remaining, reset));
                    }
                }
                Verdict::Limited { limit, retry_after } => {
                    self.runtime.metrics.record_rate_limited(&zone.spec().name);
                    return Some((limit, retry_after));
                }
            }
        }
        None
    }
}
