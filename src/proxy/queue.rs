//! `max_conns` on the request path: pick a server with a free slot, else wait (asynchronously, bounded by `queue_timeout`) for one to free.
//!
//! Servers are tried in the balancer's order, skipping full ones (nginx's `max_conns`); when
//! every server the request may use is full it waits on all of them at once
//! (`upstream::slots::SlotWait`) and picks again when one frees a slot. A service without
//! `max_conns` picks exactly as before: one pick, one slot.

use std::net::SocketAddr;
use std::time::Duration;

use super::pick::{self, ServerChoice};
use crate::upstream::slots::SlotWait;
use crate::upstream::{ActiveGuard, Service};

/// The error body's reason when the queue timed out.
pub(super) const QUEUE_TIMEOUT_REASON: &str =
    "every upstream server is at max_conns and none freed a slot within queue_timeout";

/// What a request got from the pick.
pub(super) enum Slot {
    /// A server, and the request's slot on it (held until the request is done with it).
    Got(ServerChoice, ActiveGuard),
    /// No server can take requests at all (down, ejected, all tried).
    NoServer,
    /// Every usable server stayed at `max_conns` for `queue_timeout`.
    TimedOut { max_conns: usize, waited: Duration },
}

/// A server of `pool` (or of the pool `pick::pick_server` falls back to) not in `tried`, with
/// a slot taken on it. `claimed` (a server the client's affinity cookie names) comes first
/// while it has a free slot; a full one is left for the balancer's pick, as waiting for it
/// would keep the client waiting while other servers are free.
pub(super) async fn pick_with_slot(
    service: &Service,
    pool: usize,
    tried: &[SocketAddr],
    claimed: Option<ServerChoice>,
) -> Slot {
    if let Some(c) = claimed {
        let server = &service.pools[c.pool].servers[c.server];
        let guard = match service.upstream.max_conns {
            None => Some(server.acquire()),
            Some(max) => server.state.try_acquire(max),
        };
        if let Some(guard) = guard {
            return Slot::Got(c, guard);
        }
    }
    let Some(max) = service.upstream.max_conns else {
        return match pick::pick_server(service, pool, tried) {
            Some(c) => {
                let guard = service.pools[c.pool].servers[c.server].acquire();
                Slot::Got(c, guard)
            }
            None => Slot::NoServer,
        };
    };
    let queue_timeout = service.upstream.queue_timeout;
    let deadline = tokio::time::Instant::now() + queue_timeout;
    loop {
        let mut exclude = tried.to_vec();
        let mut full: Vec<ServerChoice> = Vec::new();
        let mut pool_now = pool;
        // Every usable server once, in the balancer's order: the first with a free slot.
        while let Some(c) = pick::pick_server(service, pool_now, &exclude) {
            pool_now = c.pool;
            let server = &service.pools[c.pool].servers[c.server];
            if let Some(guard) = server.state.try_acquire(max) {
                return Slot::Got(c, guard);
            }
            exclude.push(server.addr);
            full.push(c);
        }
        if full.is_empty() {
            return Slot::NoServer;
        }
        let states = full
            .iter()
            .map(|c| &*service.pools[c.pool].servers[c.server].state)
            .collect();
        let (wait, free) = SlotWait::new(states, max);
        if free {
            continue;
        }
        if tokio::time::timeout_at(deadline, wait).await.is_err() {
            crate::lograte::warn(
                "queue-timeout",
                format_args!(
                    "service \"{}\": every server is at max_conns = {max}; a request waited \
                     queue_timeout ({queue_timeout:?}) and is answered 503",
                    service.name
                ),
            );
            return Slot::TimedOut {
                max_conns: max,
                waited: queue_timeout,
            };
        }
    }
}
