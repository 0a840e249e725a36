//! The route's rate-limit zones, checked in `request_filter`.

use std::time::Duration;

use pingora::http::RequestHeader;

use super::{Ctx, Proxy};
use crate::limits::{key_hash, stable_key, Admission, KeyKind, Limiter, Verdict};
use crate::routing::{self, Route};
use crate::snapshot::Snapshot;

/// A zone's refusal: its limit, when to retry (none for requests in progress) and the status.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub limit: u32,
    pub retry_after: Option<Duration>,
    pub status: u16,
}

impl Proxy {
    /// Runs the route's zones; the refusal when one of them refuses the request. A concurrency
    /// zone's admission is held in the context until the request ends.
    pub(super) async fn check_zones(
        &self,
        snap: &Snapshot,
        route: &Route,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Option<Refused> {
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
        let client_ip = ctx.client_ip;
        // The key a zone counts this request under; none when the request lacks its header (or
        // the connection has no IP address, a Unix socket). A cluster zone's key is the same on
        // every node (`stable_key`), a local one's is seeded per process.
        let key_of = |zone: &dyn Limiter| {
            let ip = |ip: std::net::IpAddr| match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            let shared = zone.shared().is_some();
            match &zone.spec().key {
                KeyKind::ClientIp if shared => client_ip.map(|a| stable_key(&[&ip(a)])),
                KeyKind::ClientIp => client_ip.map(|ip| key_hash(keys, ip)),
                KeyKind::ClientIpRoute if shared => {
                    client_ip.map(|a| stable_key(&[&ip(a), route.id.as_bytes()]))
                }
                KeyKind::ClientIpRoute => client_ip.map(|ip| key_hash(keys, (ip, &*route.id))),
                KeyKind::Header(name) => req.headers.get(name.as_str()).map(|v| {
                    if shared {
                        stable_key(&[v.as_bytes()])
                    } else {
                        key_hash(keys, v.as_bytes())
                    }
                }),
            }
        };
        let nodes = self.runtime.cluster.nodes();
        for (i, zone) in route.zones.iter().enumerate() {
            let Some(key) = key_of(&**zone) else {
                continue;
            };
            let verdict = match zone.shared() {
                Some(shared) => shared.check_shared(key, nodes).await,
                None => zone.check(key),
            };
            match verdict {
                Verdict::Allowed {
                    limit,
                    remaining,
                    reset,
                } => {
                    if limits.rate_limit_headers && ctx.rate.is_none_or(|(_, r, _)| remaining < r) {
                        ctx.rate = Some((limit, remaining, reset));
                    }
                }
                Verdict::Admitted { key } => {
                    ctx.admissions.push(Admission::new(zone.clone(), key));
                }
                Verdict::Limited {
                    limit,
                    retry_after,
                    status,
                } => {
                    self.runtime.metrics.record_rate_limited(&zone.spec().name);
                    // nginx counts a request in its `limit_req` zones only when all of them let
                    // it pass: the zones before this one take back what they counted.
                    for earlier in &route.zones[..i] {
                        if let Some(key) = key_of(&**earlier) {
                            match earlier.shared() {
                                Some(shared) => shared.refund_shared(key),
                                None => earlier.refund(key),
                            }
                        }
                    }
                    return Some(Refused {
                        limit,
                        retry_after,
                        status,
                    });
                }
            }
        }
        None
    }
}
