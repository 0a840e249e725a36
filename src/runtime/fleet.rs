//! The runtime's side of a fleet: where changes are written when the node has `[cluster]`, and what the cluster service reports.
//!
//! The cluster service (`crate::cluster`) implements [`Fleet`] and attaches it once it has
//! joined; until then, and while etcd is out of reach, a change is refused (503) rather than kept
//! on this node alone. [`ClusterStatus`] is what `/health/ready`, `/metrics`, `GET /v1/cluster`
//! and `ctl` show.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::api::ClusterView;
use crate::redis_limits::RedisLimits;

/// Writes to the fleet's shared state (etcd).
pub trait Fleet: Send + Sync {
    /// Stores `record` as `service`'s entry if that entry's revision is still `expected` (0: the
    /// entry must not exist), within the configured timeout. Returns the entry's new revision.
    fn write(&self, service: &str, record: &[u8], expected: u64) -> Result<u64, FleetError>;
}

/// Why a change could not be written to the fleet.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    #[error("the cluster is degraded ({0}): changes are refused until etcd is back, so that none is kept by this node alone")]
    Unavailable(String),
    #[error("service \"{service}\" was changed on another node (its revision is now {current}); read it again and retry")]
    Conflict { service: String, current: u64 },
}

/// What the cluster service reports (all zero/false on a node without `[cluster]`).
#[derive(Default)]
pub struct ClusterStatus {
    enabled: AtomicBool,
    /// Joined: connected to etcd, the fleet's state listed and watched.
    joined: AtomicBool,
    leader: AtomicBool,
    nodes: AtomicUsize,
    fleet: parking_lot::Mutex<Option<Arc<dyn Fleet>>>,
    /// Why the node is degraded (empty when joined).
    reason: parking_lot::Mutex<String>,
    /// Fleet entries this node ignores, by service, with why.
    ignored: parking_lot::Mutex<BTreeMap<String, String>>,
    /// The fleet as last listed (nodes, leader, etcd health), for `GET /v1/cluster`.
    view: parking_lot::Mutex<Option<ClusterView>>,
    /// The other nodes' published pool windows (the cluster service fills it).
    pub windows: super::FleetWindows,
    /// Rollbacks this node made that etcd did not take (cut off, or the write failed), by
    /// service, with the revision of the fleet's entry they were made on.
    pub(super) unwritten_rollbacks: parking_lot::Mutex<BTreeMap<String, u64>>,
    /// The fleet's Redis (`[cluster] redis`), set at start.
    redis: std::sync::OnceLock<Arc<RedisLimits>>,
}

impl ClusterStatus {
    /// Marks the node as one of a fleet (set at start when the config has `[cluster]`).
    pub fn enable(&self, why_not_joined: &str) {
        self.enabled.store(true, Ordering::Relaxed);
        *self.reason.lock() = why_not_joined.to_string();
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The writer, once the cluster service has one.
    pub fn attach(&self, fleet: Arc<dyn Fleet>) {
        *self.fleet.lock() = Some(fleet);
    }

    pub(super) fn fleet(&self) -> Option<Arc<dyn Fleet>> {
        self.fleet.lock().clone()
    }

    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        self.reason.lock().clear();
    }

    /// etcd is out of reach: the node keeps serving its last state, refuses writes and is no
    /// longer leader.
    pub fn set_degraded(&self, reason: &str) {
        self.joined.store(false, Ordering::Relaxed);
        self.leader.store(false, Ordering::Relaxed);
        *self.reason.lock() = reason.to_string();
    }

    /// `Some(reason)` while the node is in a fleet and not joined to it.
    pub fn degraded(&self) -> Option<String> {
        if !self.enabled() || self.joined.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.reason.lock().clone())
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Live nodes (from their leases), at least 1.
    pub fn nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    /// The link to the fleet's Redis (at start, when `[cluster] redis` is set).
    pub fn attach_redis(&self, redis: Arc<RedisLimits>) {
        let _ = self.redis.set(redis);
    }

    pub fn redis(&self) -> Option<&Arc<RedisLimits>> {
        self.redis.get()
    }

    pub fn set_view(&self, view: ClusterView) {
        self.nodes.store(view.nodes.len(), Ordering::Relaxed);
        *self.view.lock() = Some(view);
    }

    /// The fleet as last listed, with this node's own state and ignored entries filled in.
    pub fn view(&self) -> Option<ClusterView> {
        if !self.enabled() {
            return None;
        }
        let mut view = self.view.lock().clone().unwrap_or_default();
        view.state = match self.degraded() {
            None => "ok".into(),
            Some(_) => "degraded".into(),
        };
        view.reason = self.degraded();
        view.leader_here = self.is_leader();
        view.ignored = self.ignored.lock().clone();
        view.redis = self.redis().map(|r| r.view());
        Some(view)
    }

    pub(super) fn set_ignored(&self, service: &str, why: Option<String>) {
        let mut ignored = self.ignored.lock();
        match why {
            Some(why) => ignored.insert(service.to_string(), why),
            None => ignored.remove(service),
        };
    }

    /// The cluster gauges for `/metrics` (nothing without `[cluster]`).
    pub fn render_metrics(&self, out: &mut String) {
        if !self.enabled() {
            return;
        }
        let up = u8::from(self.degraded().is_none());
        let leader = u8::from(self.is_leader());
        let ignored = self.ignored.lock().len();
        out.push_str(&format!(
            "# HELP switchyard_cluster_up Whether this node is joined to its fleet (etcd reachable, state watched); 0: degraded, writes refused.\n\
             # TYPE switchyard_cluster_up gauge\n\
             switchyard_cluster_up {up}\n\
             # HELP switchyard_cluster_leader Whether this node leads the fleet's rollouts.\n\
             # TYPE switchyard_cluster_leader gauge\n\
             switchyard_cluster_leader {leader}\n\
             # HELP switchyard_cluster_nodes Live nodes in the fleet, from their leases.\n\
             # TYPE switchyard_cluster_nodes gauge\n\
             switchyard_cluster_nodes {}\n\
             # HELP switchyard_cluster_ignored_entries Fleet entries this node ignores (a service or pool its config lacks).\n\
             # TYPE switchyard_cluster_ignored_entries gauge\n\
             switchyard_cluster_ignored_entries {ignored}\n",
            self.nodes()
        ));
        if let Some(redis) = self.redis() {
            redis.render_metrics(out);
        }
    }
}

/// Whether the fleet's entry for `service` fits this node's config: the service and every pool
/// it names exist here, and its weights leave some pool a weight.
pub(super) fn fits(
    snap: &crate::snapshot::Snapshot,
    service: &str,
    record: &crate::state::ServiceRecord,
) -> Result<(), String> {
    let Some(svc) = snap.config.services.iter().find(|s| s.name == service) else {
        return Err("this node's config has no such service".into());
    };
    let has = |pool: &str| svc.pools.iter().any(|p| p.name == pool);
    let mut named: Vec<&str> = Vec::new();
    if let Some(w) = &record.weights {
        named.extend(w.keys().map(String::as_str));
    }
    if let Some(r) = record.rollout.as_ref().and_then(|h| h.current.as_ref()) {
        if r.state.is_active() {
            named.push(&r.canary);
            named.push(&r.stable);
        }
    }
    if let Some(missing) = named.into_iter().find(|p| !has(p)) {
        return Err(format!("this node's service has no pool \"{missing}\""));
    }
    if record
        .weights
        .as_ref()
        .is_some_and(|w| crate::book::weight_sum(svc, w) == 0)
    {
        return Err("its weights leave every pool of this node's service at 0".into());
    }
    Ok(())
}

/// The entry with its active rollout's step clock: the one this node already runs if it is the
/// same rollout at the same step (the leader wrote it), else a fresh clock from now and the
/// canary's request total (a step this node sees start, or takes over as the new leader).
pub(super) fn keep_clock(
    snap: &crate::snapshot::Snapshot,
    book: &crate::book::Book,
    service: &str,
    mut record: crate::state::ServiceRecord,
) -> crate::state::ServiceRecord {
    let Some(r) = record
        .rollout
        .as_mut()
        .and_then(|h| h.current.as_mut())
        .filter(|r| r.state.is_active())
    else {
        return record;
    };
    let mine = book
        .rollouts
        .active(service)
        .filter(|m| m.id == r.id && m.step == r.step)
        .and_then(|m| m.clock);
    r.clock = mine.or_else(|| {
        let total = snap
            .services
            .iter()
            .find(|s| *s.name == *service)
            .and_then(|s| s.pools.iter().find(|p| *p.name == *r.canary))
            .map_or(0, |p| p.window.total_requests());
        Some(crate::rollout::StepClock {
            started: std::time::Instant::now(),
            base_requests: total,
        })
    });
    record
}
