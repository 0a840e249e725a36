//! Runs rollouts: the background tick that judges canaries, and the bookkeeping around restarts and reloads.
//!
//! Every [`TICK`] the service calls `Runtime::tick_rollouts`, which takes the writer lock and
//! calls [`tick`] here: each active rollout is judged on its canary's live window and what was
//! decided (advance, hold, promote, roll back) is applied to the book: the rollout's state and
//! the service's weight overrides. The runtime then persists the book and publishes one new
//! snapshot. With a 100 ms tick and 1 s buckets, a breach is acted on within about 100 ms of the
//! request that revealed it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::engine::{Decision, Event, Phase, Rollout, Rollouts, StepClock};
use super::{WindowStats, Windows};
use crate::config::Config;
use crate::runtime::{Book, Runtime};
use crate::snapshot::Snapshot;

/// How often active rollouts are judged.
pub const TICK: Duration = Duration::from_millis(100);

/// Now, in Unix milliseconds (the rollouts' persisted clock).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An event of `r` as it stands, with the canary's figures.
pub fn event(r: &Rollout, kind: &str, canary: Option<&WindowStats>, message: String) -> Event {
    Event {
        time: unix_ms(),
        service: r.service.clone(),
        rollout: r.id,
        event: kind.to_string(),
        step: r.step,
        canary_weight: r.canary_weight(),
        requests: canary.map_or(0, |s| s.requests),
        errors: canary.map_or(0, |s| s.errors),
        error_rate: canary.map_or(0.0, |s| s.error_rate),
        p99_ms: canary.and_then(|s| s.p99).map(|d| d.as_secs_f64() * 1000.0),
        message,
        reason: None,
    }
}

/// Logs a transition as one JSON line with the figures that decided it.
pub fn log_event(e: &Event) {
    // The same JSON as `GET .../rollouts/current/events` shows (Event is plain data: it serializes).
    let line = serde_json::to_string(e).unwrap_or_default();
    if e.event == "rolled_back" || e.event == "aborted" {
        log::warn!(target: "switchyard::rollout", "{line}");
    } else {
        log::info!(target: "switchyard::rollout", "{line}");
    }
}

/// Sets the service's overrides to the weights `r`'s state gives.
pub fn apply_weights(book: &mut Book, snap: &Snapshot, r: &Rollout) {
    let Some(svc) = snap.services.iter().find(|s| *s.name == r.service) else {
        return;
    };
    let weights = r.weights(svc.pools.iter().map(|p| &*p.name));
    book.overrides.insert(r.service.clone(), weights);
}

/// Why `r` cannot go on under `config`, if it cannot.
fn orphaned(config: &Config, r: &Rollout) -> Option<String> {
    let Some(svc) = config.services.iter().find(|s| s.name == r.service) else {
        return Some(format!(
            "service \"{}\" is no longer in the config",
            r.service
        ));
    };
    [&r.canary, &r.stable]
        .into_iter()
        .find(|p| !svc.pools.iter().any(|cp| &cp.name == *p))
        .map(|p| format!("pool \"{p}\" is no longer in the config"))
}

/// At a reload: active rollouts whose service or pools left the config are aborted.
pub fn end_orphans(config: &Config, rollouts: &mut Rollouts) -> Vec<Event> {
    let mut events = Vec::new();
    for service in rollouts.active_services() {
        let Some(r) = rollouts.active_mut(&service) else {
            continue;
        };
        if let Some(why) = orphaned(config, r) {
            r.finish(Phase::Aborted, unix_ms(), Some(why.clone()));
            let mut e = event(r, "aborted", None, why);
            e.reason = Some("config".into());
            events.push(rollouts.push_event(e));
        }
    }
    events
}

/// At start-up: a rollout that was active goes on at the step it had reached, with the weights
/// persisted with it; the step's clock starts over, since the windows start empty. One that no
/// longer fits the config is aborted.
pub fn resume_after_restart(config: &Config, book: &mut Book) -> Vec<Event> {
    let mut events = end_orphans(config, &mut book.rollouts);
    for service in book.rollouts.active_services() {
        let Some(r) = book.rollouts.active_mut(&service) else {
            continue;
        };
        r.restart_step(
            unix_ms(),
            StepClock {
                started: Instant::now(),
                base_requests: 0,
            },
        );
        let message = format!(
            "resumed after a restart at step {} of {} ({}% on \"{}\"), {}; the step starts over",
            r.step + 1,
            r.steps.len(),
            r.canary_weight(),
            r.canary,
            r.state.as_str()
        );
        let e = event(r, "restarted", None, message);
        events.push(book.rollouts.push_event(e));
    }
    events
}

/// What a tick changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Weights or states changed: persist and publish.
    pub publish: bool,
    pub events: Vec<Event>,
}

/// Judges every active rollout once (see the module docs).
pub fn tick(snap: &Snapshot, book: &mut Book, windows: &Windows, now: Instant) -> Outcome {
    let mut out = Outcome::default();
    for service in book.rollouts.active_services() {
        let Some(r) = book.rollouts.active_mut(&service) else {
            continue;
        };
        let window = windows.get(&service, &r.canary);
        let (stats, total) = match &window {
            Some(w) => (w.snapshot(), w.total_requests()),
            None => continue,
        };
        let now_ms = unix_ms();
        let mut cause = None;
        let (kind, message) = match r.judge(&stats, total, now) {
            Decision::Stay => continue,
            Decision::Hold(message) => {
                r.holding = Some(r.holding_text());
                ("held", message)
            }
            Decision::Advance => {
                r.step += 1;
                r.restart_step(
                    now_ms,
                    StepClock {
                        started: now,
                        base_requests: total,
                    },
                );
                let message = format!(
                    "step {} of {}: {}% on \"{}\"",
                    r.step + 1,
                    r.steps.len(),
                    r.canary_weight(),
                    r.canary
                );
                out.publish = true;
                ("step", message)
            }
            Decision::Promote => {
                let message = format!("\"{}\" promoted: it takes all traffic", r.canary);
                r.finish(Phase::Promoted, now_ms, None);
                out.publish = true;
                ("promoted", message)
            }
            Decision::RollBack { reason, message } => {
                let message = format!("{message}; traffic back on \"{}\"", r.stable);
                cause = Some(reason);
                r.finish(Phase::RolledBack, now_ms, Some(message.clone()));
                out.publish = true;
                ("rolled_back", message)
            }
        };
        let r = r.clone();
        if kind != "held" {
            apply_weights(book, snap, &r);
        }
        let mut e = event(&r, kind, Some(&stats), message);
        e.reason = cause.map(str::to_string);
        out.events.push(book.rollouts.push_event(e));
    }
    out
}

/// The background service ticking the rollouts.
pub struct RolloutService {
    runtime: Arc<Runtime>,
}

impl RolloutService {
    pub fn new(runtime: Arc<Runtime>) -> RolloutService {
        RolloutService { runtime }
    }
}

#[async_trait]
impl BackgroundService for RolloutService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.runtime.tick_rollouts(Instant::now()),
                _ = shutdown.changed() => return,
            }
        }
    }
}
