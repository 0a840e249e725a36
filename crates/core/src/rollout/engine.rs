//! The rollout state machine: what a rollout is, how its canary is judged, which weights each state gives.
//!
//! Pure: no clock reads, no I/O, no locks. `Runtime` holds the [`Rollouts`] book under its writer
//! lock, feeds [`Rollout::judge`] the canary's live window on every tick of the rollout service
//! (`rollout::service`), and persists and publishes whatever changed.
//!
//! A rollout is `progressing` (step i) or `paused`, then `promoted`, `rolled_back` or `aborted`.
//! The canary is judged on every tick, paused or not: a breach rolls back at once. A step advances
//! when its interval has passed *and* the canary served `min_requests` in it; short of traffic
//! the step holds and says so. The last step (100 %) must also pass its interval; then the canary
//! is promoted and becomes the only weighted pool.
//!
//! The error-rate rule is `errors / max(requests, min_requests) > max_error_rate` over the
//! window: before `min_requests` have arrived the requests not yet seen are counted as
//! successes, so a breach is declared only once it is certain to hold at `min_requests`, and a
//! canary failing hard is caught after a few errors rather than after a full sample.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::WindowStats;

/// Events kept per service (the newest ones), in memory and in the state file.
pub const MAX_EVENTS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Stepped canary weights.
    Rollout,
    /// A blue/green switch watched for a while, switched back on a breach.
    Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Progressing,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
}

impl Phase {
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }

    /// The `switchyard_rollout_state` gauge's value.
    pub fn code(self) -> i64 {
        match self {
            Phase::Progressing => 1,
            Phase::Paused => 2,
            Phase::Promoted => 3,
            Phase::RolledBack => 4,
            Phase::Aborted => 5,
        }
    }
}

/// Where a step's clock started, in this process (not persisted: a restart restarts the step).
#[derive(Debug, Clone, Copy)]
pub struct StepClock {
    pub started: Instant,
    /// The canary window's request total when the step started.
    pub base_requests: u64,
}

/// One rollout, active or finished. Times are Unix milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub id: u64,
    pub service: String,
    pub kind: Kind,
    pub canary: String,
    pub stable: String,
    pub state: Phase,
    pub step: usize,
    pub steps: Vec<u32>,
    pub interval_ms: u64,
    pub max_error_rate: f64,
    pub max_p99_ms: Option<u64>,
    pub min_requests: u64,
    pub shield: bool,
    pub started_at: u64,
    pub step_started_at: u64,
    pub finished_at: Option<u64>,
    pub reason: Option<String>,
    pub holding: Option<String>,
    #[serde(skip)]
    pub clock: Option<StepClock>,
}

/// The parameters a rollout starts with (request values over the service's defaults).
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub canary: String,
    pub stable: String,
    pub steps: Vec<u32>,
    pub interval: Duration,
    pub max_error_rate: f64,
    pub max_p99: Option<Duration>,
    pub min_requests: u64,
    pub shield: bool,
}

/// What a tick decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do.
    Stay,
    /// The step's time is up but the canary served too few requests: say so once.
    Hold(String),
    Advance,
    Promote,
    /// `reason` is the metric label (`error_rate`, `latency`), `message` has the figures.
    RollBack {
        reason: &'static str,
        message: String,
    },
}

/// A transition, for the log, the events endpoint and the metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub time: u64,
    pub service: String,
    pub rollout: u64,
    pub event: String,
    pub step: usize,
    pub canary_weight: u32,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
    pub message: String,
    /// Why a rollout ended other than by promotion: `error_rate`, `latency`, `operator`
    /// (abort), `forced` (a forced weight change), `config` (a reload removed its pools).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A service's latest rollout and its recent events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub current: Option<Rollout>,
    #[serde(default)]
    pub events: VecDeque<Event>,
}

/// Every service's rollouts: held under the runtime's writer lock, persisted with the weights.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollouts {
    #[serde(default)]
    pub next_id: u64,
    #[serde(default)]
    pub services: BTreeMap<String, History>,
}

impl Rollouts {
    /// The service's rollout if it is progressing or paused.
    pub fn active(&self, service: &str) -> Option<&Rollout> {
        self.services
            .get(service)?
            .current
            .as_ref()
            .filter(|r| r.state.is_active())
    }

    pub fn active_mut(&mut self, service: &str) -> Option<&mut Rollout> {
        self.services
            .get_mut(service)?
            .current
            .as_mut()
            .filter(|r| r.state.is_active())
    }

    /// Every active rollout.
    pub fn all_active(&self) -> impl Iterator<Item = &Rollout> {
        self.services
            .values()
            .filter_map(|h| h.current.as_ref().filter(|r| r.state.is_active()))
    }

    /// The services with an active rollout (owned, so the book can be changed while iterating).
    pub fn active_services(&self) -> Vec<String> {
        self.all_active().map(|r| r.service.clone()).collect()
    }

    /// Starts a rollout as the service's current one and returns it.
    pub fn start(&mut self, service: &str, plan: Plan, now_ms: u64, clock: StepClock) -> &Rollout {
        self.next_id += 1;
        let rollout = Rollout {
            id: self.next_id,
            service: service.to_string(),
            kind: plan.kind,
            canary: plan.canary,
            stable: plan.stable,
            state: Phase::Progressing,
            step: 0,
            steps: plan.steps,
            interval_ms: u64::try_from(plan.interval.as_millis()).unwrap_or(u64::MAX),
            max_error_rate: plan.max_error_rate,
            max_p99_ms: plan
                .max_p99
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            min_requests: plan.min_requests,
            shield: plan.shield,
            started_at: now_ms,
            step_started_at: now_ms,
            finished_at: None,
            reason: None,
            holding: None,
            clock: Some(clock),
        };
        let history = self.services.entry(service.to_string()).or_default();
        history.current.insert(rollout)
    }

    /// Appends an event to its service's history, dropping the oldest beyond [`MAX_EVENTS`];
    /// returns it, to be logged once the change holds.
    pub fn push_event(&mut self, event: Event) -> Event {
        let events = &mut self
            .services
            .entry(event.service.clone())
            .or_default()
            .events;
        events.push_back(event.clone());
        while events.len() > MAX_EVENTS {
            events.pop_front();
        }
        event
    }
}

impl Rollout {
    /// The canary's weight (percent) in this state.
    pub fn canary_weight(&self) -> u32 {
        match self.state {
            Phase::Progressing | Phase::Paused => self.steps.get(self.step).copied().unwrap_or(0),
            Phase::Promoted => 100,
            Phase::RolledBack | Phase::Aborted => 0,
        }
    }

    /// The weights this state gives the service's pools (`pools`: every pool's name): canary and
    /// stable share 100, every other pool gets 0.
    pub fn weights<'a>(&self, pools: impl Iterator<Item = &'a str>) -> BTreeMap<String, u32> {
        let canary = self.canary_weight();
        pools
            .map(|p| {
                let w = if p == self.canary {
                    canary
                } else if p == self.stable {
                    100 - canary
                } else {
                    0
                };
                (p.to_string(), w)
            })
            .collect()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Whether the canary's window shows a breach it can be trusted on (see the module docs).
    pub fn breach(&self, canary: &WindowStats) -> Option<(&'static str, String)> {
        let judged = canary.requests.max(self.min_requests).max(1);
        let rate = canary.errors as f64 / judged as f64;
        if canary.errors > 0 && rate > self.max_error_rate {
            return Some((
                "error_rate",
                format!(
                    "error rate {:.3} above {} ({} errors in {} requests over {:?})",
                    canary.error_rate.max(rate),
                    self.max_error_rate,
                    canary.errors,
                    canary.requests,
                    canary.window
                ),
            ));
        }
        if let (Some(max), Some(p99)) = (self.max_p99_ms, canary.p99) {
            let p99_ms = p99.as_secs_f64() * 1000.0;
            if canary.requests >= self.min_requests.max(1) && p99_ms > max as f64 {
                return Some((
                    "latency",
                    format!(
                        "p99 {p99_ms:.1}ms above {max}ms ({} requests over {:?})",
                        canary.requests, canary.window
                    ),
                ));
            }
        }
        None
    }

    /// Judges an active rollout: `canary` is its window now, `total` the window's request count
    /// since it was made, `now` the time of the tick.
    pub fn judge(&self, canary: &WindowStats, total: u64, now: Instant) -> Decision {
        if !self.state.is_active() {
            return Decision::Stay;
        }
        if let Some((reason, message)) = self.breach(canary) {
            return Decision::RollBack { reason, message };
        }
        if self.state == Phase::Paused {
            return Decision::Stay;
        }
        let Some(clock) = self.clock else {
            return Decision::Stay;
        };
        if now.saturating_duration_since(clock.started) < self.interval() {
            return Decision::Stay;
        }
        let served = total.saturating_sub(clock.base_requests);
        if served < self.min_requests {
            if self.kind == Kind::Switch {
                // A watch ends with its period: the switch was already made.
                return Decision::Promote;
            }
            return if self.holding.is_some() {
                Decision::Stay
            } else {
                Decision::Hold(format!("{}: {served} so far", self.holding_text()))
            };
        }
        if self.step + 1 >= self.steps.len() {
            Decision::Promote
        } else {
            Decision::Advance
        }
    }

    /// What a held step waits for (the same text until the step moves, so clients that show
    /// changes are not flooded; the live count is `step_requests` in the view).
    pub fn holding_text(&self) -> String {
        format!(
            "holding step {} of {} ({}%) until the canary serves {} requests in it",
            self.step + 1,
            self.steps.len(),
            self.canary_weight(),
            self.min_requests
        )
    }

    /// Requests the canary served in the current step.
    pub fn step_requests(&self, total: u64) -> u64 {
        self.clock
            .map_or(0, |c| total.saturating_sub(c.base_requests))
    }

    /// Starts the next step (or restarts this one) with a fresh clock.
    pub fn restart_step(&mut self, now_ms: u64, clock: StepClock) {
        self.step_started_at = now_ms;
        self.clock = Some(clock);
        self.holding = None;
    }

    /// Ends the rollout in `state`.
    pub fn finish(&mut self, state: Phase, now_ms: u64, reason: Option<String>) {
        self.state = state;
        self.finished_at = Some(now_ms);
        self.reason = reason;
        self.holding = None;
        self.clock = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            kind: Kind::Rollout,
            canary: "green".into(),
            stable: "blue".into(),
            steps: vec![10, 50, 100],
            interval: Duration::from_secs(5),
            max_error_rate: 0.05,
            max_p99: Some(Duration::from_millis(200)),
            min_requests: 20,
            shield: true,
        }
    }

    fn stats(requests: u64, errors: u64, p99_ms: u64) -> WindowStats {
        WindowStats {
            requests,
            errors,
            error_rate: crate::rollout::window::error_rate(errors, requests),
            p50: Some(Duration::from_millis(1)),
            p99: Some(Duration::from_millis(p99_ms)),
            window: Duration::from_secs(10),
        }
    }

    fn started(t0: Instant) -> Rollouts {
        let mut book = Rollouts::default();
        book.start(
            "api",
            plan(),
            0,
            StepClock {
                started: t0,
                base_requests: 0,
            },
        );
        book
    }

    #[test]
    fn weights_follow_the_state() {
        let t0 = Instant::now();
        let mut book = started(t0);
        let pools = ["blue", "green", "red"];
        let r = book.active_mut("api").expect("active");
        assert_eq!(
            r.weights(pools.into_iter()),
            BTreeMap::from([("blue".into(), 90), ("green".into(), 10), ("red".into(), 0)])
        );
        r.step = 2;
        assert_eq!(r.weights(pools.into_iter())["green"], 100);
        assert_eq!(r.weights(pools.into_iter())["blue"], 0);
        r.finish(Phase::RolledBack, 1, Some("x".into()));
        assert_eq!(r.weights(pools.into_iter())["blue"], 100);
        assert_eq!(r.weights(pools.into_iter())["green"], 0);
        assert!(book.active("api").is_none());
    }

    #[test]
    fn a_few_errors_are_judged_as_if_the_sample_were_full() {
        let t0 = Instant::now();
        let book = started(t0);
        let r = book.active("api").expect("active");
        // 1 error in 3 requests: 1/20 = 0.05, not above 0.05 yet.
        assert_eq!(r.judge(&stats(3, 1, 10), 3, t0), Decision::Stay);
        // 2 errors in 5: 2/20 = 0.1 whatever the next 15 do.
        match r.judge(&stats(5, 2, 10), 5, t0) {
            Decision::RollBack { reason, message } => {
                assert_eq!(reason, "error_rate");
                assert!(message.contains("2 errors in 5 requests"), "{message}");
            }
            other => panic!("expected a rollback, got {other:?}"),
        }
        // Past min_requests the plain rate counts: 3 in 100 is fine, 6 in 100 is not.
        assert_eq!(r.judge(&stats(100, 3, 10), 100, t0), Decision::Stay);
        assert!(matches!(
            r.judge(&stats(100, 6, 10), 100, t0),
            Decision::RollBack { .. }
        ));
    }

    #[test]
    fn latency_is_judged_on_a_full_sample_only() {
        let t0 = Instant::now();
        let book = started(t0);
        let r = book.active("api").expect("active");
        assert_eq!(r.judge(&stats(10, 0, 900), 10, t0), Decision::Stay);
        assert!(matches!(
            r.judge(&stats(20, 0, 900), 20, t0),
            Decision::RollBack {
                reason: "latency",
                ..
            }
        ));
    }

    #[test]
    fn steps_advance_only_with_time_and_traffic() {
        let t0 = Instant::now();
        let mut book = started(t0);
        let r = book.active_mut("api").expect("active");
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            r.judge(&stats(30, 0, 5), 30, t0),
            Decision::Stay,
            "too early"
        );
        match r.judge(&stats(5, 0, 5), 5, later) {
            Decision::Hold(m) => {
                assert!(m.contains("serves 20 requests in it: 5 so far"), "{m}");
                r.holding = Some(r.holding_text());
            }
            other => panic!("expected a hold, got {other:?}"),
        }
        assert_eq!(
            r.judge(&stats(6, 0, 5), 6, later),
            Decision::Stay,
            "a hold is said once, even as requests trickle in"
        );
        assert_eq!(r.judge(&stats(25, 0, 5), 25, later), Decision::Advance);
        r.step = 2;
        assert_eq!(r.judge(&stats(25, 0, 5), 25, later), Decision::Promote);
        r.state = Phase::Paused;
        assert_eq!(r.judge(&stats(25, 0, 5), 25, later), Decision::Stay);
        assert!(
            matches!(
                r.judge(&stats(25, 5, 5), 25, later),
                Decision::RollBack { .. }
            ),
            "a paused canary is still judged"
        );
    }

    #[test]
    fn a_watch_ends_with_its_period_even_on_little_traffic() {
        let t0 = Instant::now();
        let mut book = Rollouts::default();
        let mut p = plan();
        p.kind = Kind::Switch;
        p.steps = vec![100];
        let clock = StepClock {
            started: t0,
            base_requests: 0,
        };
        let r = book.start("api", p, 0, clock).clone();
        assert_eq!(
            r.judge(&stats(1, 0, 5), 1, t0 + Duration::from_secs(6)),
            Decision::Promote
        );
    }

    #[test]
    fn events_are_bounded() {
        let mut book = Rollouts::default();
        for i in 0..(MAX_EVENTS as u64 + 10) {
            book.push_event(Event {
                time: i,
                service: "api".into(),
                rollout: 1,
                event: "step".into(),
                step: 0,
                canary_weight: 0,
                requests: 0,
                errors: 0,
                error_rate: 0.0,
                p99_ms: None,
                message: String::new(),
                reason: None,
            });
        }
        let events = &book.services["api"].events;
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events.front().map(|e| e.time), Some(10));
    }
}
