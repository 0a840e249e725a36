//! Request-path metric handles, resolved when a snapshot is compiled and held by it: a request costs array lookups and atomic adds.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Histogram, IntCounter};

use super::{code_label, Metrics, CODE_SLOTS, FIRST_CODE};
use crate::routing::RouteTable;
use crate::upstream::Service;

/// One finished request, as `logging` saw it, with the snapshot parts it was routed by.
#[derive(Clone, Copy)]
pub struct Finished<'a> {
    /// The handles of the request's snapshot.
    pub handles: &'a Handles,
    pub routes: &'a RouteTable,
    pub services: &'a [Service],
    pub route: Option<usize>,
    pub pool: Option<usize>,
    /// The status written to the client; 0 when none was.
    pub status: u16,
    /// From the request header being read to the end of the response.
    pub duration: Duration,
    /// Seconds from picking the server (connect included) to its response header, last try.
    pub upstream_seconds: Option<f64>,
}

/// Request-path handles of one snapshot, by the snapshot's own route, service and pool indexes.
/// Building them also creates every (service, pool) series at 0 before its first event, so
/// `rate()` and `increase()` see the first one.
#[derive(Default)]
pub struct Handles {
    routes: Box<[RouteHandles]>,
    services: Box<[ServiceHandles]>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("routes", &self.routes.len())
            .field("services", &self.services.len())
            .finish()
    }
}

struct RouteHandles {
    /// `switchyard_requests_total` by pool index; the last entry is for "no pool chosen".
    pools: Box<[Codes]>,
}

struct ServiceHandles {
    pools: Box<[PoolHandles]>,
    no_pool_duration: Histogram,
    ejections: IntCounter,
}

struct PoolHandles {
    duration: Histogram,
    upstream: Histogram,
    connect_errors: IntCounter,
    retries: IntCounter,
}

/// Counters by status code for one (route, pool), each resolved on the first request with that
/// code (series exist only for codes seen). The table itself is allocated on the first request,
/// so unused routes cost one pointer per pool.
#[derive(Default)]
pub(crate) struct Codes {
    slots: OnceLock<Box<[OnceLock<IntCounter>]>>,
}

impl Codes {
    fn slot(&self, status: u16) -> Option<&OnceLock<IntCounter>> {
        let i = usize::from(status.checked_sub(FIRST_CODE)?);
        if i >= CODE_SLOTS {
            return None;
        }
        let slots = self
            .slots
            .get_or_init(|| (0..CODE_SLOTS).map(|_| OnceLock::new()).collect());
        slots.get(i)
    }
}

impl Metrics {
    /// The handles for a snapshot's services and routes (called while compiling it).
    pub fn handles(&self, services: &[Service], routes: &RouteTable) -> Handles {
        let services_h = services
            .iter()
            .map(|s| ServiceHandles {
                pools: s
                    .pools
                    .iter()
                    .map(|p| {
                        let labels = [&*s.name, &*p.name];
                        PoolHandles {
                            duration: self.request_duration.with_label_values(&labels),
                            upstream: self.upstream_response.with_label_values(&labels),
                            connect_errors: self.connect_errors.with_label_values(&labels),
                            retries: self.retries.with_label_values(&labels),
                        }
                    })
                    .collect(),
                no_pool_duration: self.request_duration.with_label_values(&[&*s.name, ""]),
                ejections: self.ejections.with_label_values(&[&*s.name]),
            })
            .collect();
        let routes_h = (0..routes.len())
            .map(|i| {
                let pools = routes
                    .get(i)
                    .and_then(|r| services.get(r.service?))
                    .map_or(0, |s| s.pools.len());
                // One table per pool, and the last one for "no pool chosen".
                RouteHandles {
                    pools: (0..=pools).map(|_| Codes::default()).collect(),
                }
            })
            .collect();
        Handles {
            routes: routes_h,
            services: services_h,
        }
    }

    /// Counts one finished request and observes its durations.
    pub fn record_request(&self, r: &Finished<'_>) {
        let secs = r.duration.as_secs_f64();
        let routed = r.route.and_then(|route_idx| {
            let route = r.routes.get(route_idx)?;
            Some((route, r.handles.routes.get(route_idx)?))
        });
        let Some((route, route_handles)) = routed else {
            self.count_unrouted(r.status);
            self.unrouted_duration.observe(secs);
            return;
        };
        // A route that answers itself (static files, a redirect) has no service: its requests
        // are counted by route, their durations with service="" and pool="".
        let service = route
            .service
            .and_then(|s| Some((r.services.get(s)?, r.handles.services.get(s)?)));
        let pool =
            service.and_then(|(service, _)| r.pool.and_then(|p| Some((p, service.pools.get(p)?))));
        let pool_name = pool.map_or("", |(_, p)| &*p.name);
        let service_name = service.map_or("", |(s, _)| &*s.name);
        let by_name = || {
            let code = code_label(r.status);
            self.requests
                .with_label_values(&[&*route.id, service_name, pool_name, &code])
        };
        let codes = match pool {
            Some((p, _)) => route_handles.pools.get(p),
            None => route_handles.pools.last(),
        };
        match codes.and_then(|c| c.slot(r.status)) {
            Some(slot) => slot.get_or_init(by_name).inc(),
            None => by_name().inc(),
        }
        let Some((_, service_handles)) = service else {
            self.unrouted_duration.observe(secs);
            return;
        };
        match pool.and_then(|(p, _)| service_handles.pools.get(p)) {
            Some(ph) => {
                ph.duration.observe(secs);
                if let Some(up) = r.upstream_seconds {
                    ph.upstream.observe(up);
                }
            }
            None => service_handles.no_pool_duration.observe(secs),
        }
    }

    /// Counts a failed connect to a server of `pool`, and whether it is retried elsewhere.
    pub fn record_connect_error(
        &self,
        handles: &Handles,
        service: usize,
        pool: usize,
        retried: bool,
    ) {
        if let Some(ph) = handles
            .services
            .get(service)
            .and_then(|s| s.pools.get(pool))
        {
            ph.connect_errors.inc();
            if retried {
                ph.retries.inc();
            }
        }
    }

    /// Counts a retry on another server of `pool` after anything but a failed connect.
    pub fn record_retry(&self, handles: &Handles, service: usize, pool: usize) {
        if let Some(ph) = handles
            .services
            .get(service)
            .and_then(|s| s.pools.get(pool))
        {
            ph.retries.inc();
        }
    }

    /// Counts a passive ejection of a server of `service`.
    pub fn record_ejection(&self, handles: &Handles, service: usize) {
        if let Some(sh) = handles.services.get(service) {
            sh.ejections.inc();
        }
    }

    fn count_unrouted(&self, status: u16) {
        let by_name = || {
            self.requests
                .with_label_values(&["", "", "", &code_label(status)])
        };
        match self.unrouted.slot(status) {
            Some(slot) => slot.get_or_init(by_name).inc(),
            None => by_name().inc(),
        }
    }
}
