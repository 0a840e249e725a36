//! What deploy tools do to a running proxy: read services, set weights, flip blue/green, run rollouts. One error enum.
//!
//! [`ops`] holds each operation as a plain function of the current snapshot and a copy of the
//! book; the wrappers here run it through `Runtime::change`, so it is validated, persisted and
//! published as one new snapshot, or not applied at all, and answer from the snapshot it
//! published. [`view`] renders what the admin API shows.

pub mod ops;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::api::RolloutView;
use crate::config::Weight;
use crate::runtime::{ChangeError, Runtime};
use crate::snapshot::Snapshot;
use crate::upstream::Service;
pub use ops::{RolloutAction, RolloutRequest, SwitchRequest};
pub use view::{
    file_certificates, rollout_events, rollout_of, rollout_view, service, services, traffic,
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown service \"{0}\"")]
    UnknownService(String),
    #[error("service \"{service}\" has no pool \"{pool}\"")]
    UnknownPool { service: String, pool: String },
    #[error("{0}")]
    Invalid(String),
    #[error("generation is {current}, not {expected}: the service changed since it was read")]
    Conflict { expected: u64, current: u64 },
    #[error("pool \"{pool}\" of service \"{service}\" has no healthy server; switch refused")]
    Unhealthy { service: String, pool: String },
    #[error("rollout {id} of service \"{service}\" is {state} and owns its weights; abort it, or force the change (which aborts it)")]
    RolloutOwnsWeights {
        service: String,
        id: u64,
        state: &'static str,
    },
    #[error("rollout {id} of service \"{service}\" is already {state}; abort it first")]
    RolloutActive {
        service: String,
        id: u64,
        state: &'static str,
    },
    #[error("service \"{0}\" has no active rollout")]
    NoActiveRollout(String),
    #[error("service \"{0}\" has had no rollout")]
    NoRollout(String),
    #[error(transparent)]
    Maintenance(#[from] crate::maintenance::MaintenanceError),
    #[error(transparent)]
    Change(#[from] ChangeError),
}

/// The service named `service` in `snap`.
fn find<'a>(snap: &'a Snapshot, service: &str) -> Result<&'a Service, ControlError> {
    snap.services
        .iter()
        .find(|s| &*s.name == service)
        .ok_or_else(|| ControlError::UnknownService(service.into()))
}

/// Sets the weights of some pools of a service (others keep theirs); see [`ops::set_weights`].
/// Returns the snapshot published.
pub fn set_weights(
    rt: &Runtime,
    service: &str,
    weights: &BTreeMap<String, Weight>,
    if_match: Option<u64>,
    force: bool,
) -> Result<Arc<Snapshot>, ControlError> {
    rt.change(|snap, book| {
        let events = ops::set_weights(snap, book, service, weights, if_match, force)?;
        Ok(((), events))
    })
    .map(|(snap, ())| snap)
}

/// Drops a service's runtime overrides: the config file's weights apply again.
pub fn clear_weights(
    rt: &Runtime,
    service: &str,
    if_match: Option<u64>,
    force: bool,
) -> Result<Arc<Snapshot>, ControlError> {
    rt.change(|snap, book| {
        let events = ops::clear_weights(snap, book, service, if_match, force)?;
        Ok(((), events))
    })
    .map(|(snap, ())| snap)
}

/// Puts a service in maintenance, or changes its maintenance (see [`ops::set_maintenance`]).
pub fn set_maintenance(
    rt: &Runtime,
    service: &str,
    req: crate::maintenance::Request,
) -> Result<Arc<Snapshot>, ControlError> {
    rt.change(|snap, book| {
        ops::set_maintenance(snap, book, service, req, crate::book::unix_ms())?;
        Ok(((), Vec::new()))
    })
    .map(|(snap, ())| snap)
}

/// Takes a service out of maintenance; `false` when it was not in maintenance.
pub fn clear_maintenance(rt: &Runtime, service: &str) -> Result<Arc<Snapshot>, ControlError> {
    rt.change(|snap, book| {
        find(snap, service)?;
        book.maintenance.remove(service);
        Ok(((), Vec::new()))
    })
    .map(|(snap, ())| snap)
}

/// The blue/green flip (see [`ops::switch`]). Returns the snapshot published and, for a watched
/// switch, its watch as a rollout.
pub fn switch(
    rt: &Runtime,
    service: &str,
    req: &SwitchRequest,
) -> Result<(Arc<Snapshot>, Option<RolloutView>), ControlError> {
    let (snap, watched) =
        rt.change(|snap, book| ops::switch(snap, book, service, req, Instant::now()))?;
    let view = watched.map(|r| rollout_of(&snap, &r));
    Ok((snap, view))
}

/// Starts a rollout (see [`ops::start_rollout`]).
pub fn start_rollout(
    rt: &Runtime,
    service: &str,
    req: &RolloutRequest,
) -> Result<RolloutView, ControlError> {
    let (snap, r) =
        rt.change(|snap, book| ops::start_rollout(snap, book, service, req, Instant::now()))?;
    Ok(rollout_of(&snap, &r))
}

/// Pauses, resumes, promotes or aborts the active rollout (see [`ops::act_on_rollout`]).
pub fn act_on_rollout(
    rt: &Runtime,
    service: &str,
    action: RolloutAction,
) -> Result<RolloutView, ControlError> {
    let (snap, r) =
        rt.change(|snap, book| ops::act_on_rollout(snap, book, service, action, Instant::now()))?;
    Ok(rollout_of(&snap, &r))
}
