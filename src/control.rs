//! What deploy tools do to a running proxy: read services, set weights, flip blue/green. One error enum.
//!
//! The admin API and tests call these; each change goes through `Runtime::change`, so it
//! is validated, persisted and published as one new snapshot, or not applied at all.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{LiveView, PoolView, RolloutView, ServerView, ServiceView};
use crate::config::rollout::{check_error_rate, check_steps};
use crate::config::{Balance, ServiceConfig, MAX_WEIGHT};
use crate::rollout::{self, Event, Kind, Phase, Plan, Rollout, Windows};
use crate::runtime::{Book, ChangeError, Runtime};
use crate::snapshot::Snapshot;
use crate::upstream::Service;

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
    Change(#[from] ChangeError),
}

impl LiveView {
    fn new(windows: &Windows, service: &str, pool: &str) -> LiveView {
        let stats = windows.get(service, pool).map(|w| w.snapshot());
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        LiveView {
            window_seconds: stats.map_or(0.0, |s| s.window.as_secs_f64()),
            requests: stats.map_or(0, |s| s.requests),
            errors: stats.map_or(0, |s| s.errors),
            error_rate: stats.map_or(0.0, |s| s.error_rate),
            p50_ms: stats.and_then(|s| ms(s.p50)),
            p99_ms: stats.and_then(|s| ms(s.p99)),
        }
    }
}

fn balance_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
    }
}

fn view(
    snap: &Snapshot,
    service: &Service,
    overrides: Option<&BTreeMap<String, u32>>,
    windows: &Windows,
) -> ServiceView {
    let config = snap
        .config
        .services
        .iter()
        .find(|s| *s.name == *service.name);
    let pools = service
        .pools
        .iter()
        .map(|p| {
            let config_weight = config
                .and_then(|c| c.pools.iter().find(|cp| *cp.name == *p.name))
                .map_or(p.weight, |cp| cp.weight);
            let servers: Vec<ServerView> = p
                .servers
                .iter()
                .map(|s| ServerView {
                    address: s.addr.to_string(),
                    weight: s.weight,
                    healthy: s.state.is_healthy(),
                    ejected: s.state.is_ejected(),
                    available: s.state.is_available(),
                    in_flight: s.state.active.load(std::sync::atomic::Ordering::Relaxed),
                })
                .collect();
            PoolView {
                name: p.name.to_string(),
                weight: p.weight,
                config_weight,
                overridden: overrides.is_some_and(|o| o.contains_key(&*p.name)),
                healthy_servers: servers.iter().filter(|s| s.available).count(),
                servers,
                live: LiveView::new(windows, &service.name, &p.name),
            }
        })
        .collect();
    ServiceView {
        name: service.name.to_string(),
        generation: snap.generation,
        balance: balance_name(service.balance).to_string(),
        pools,
    }
}

pub fn services(rt: &Runtime) -> Vec<ServiceView> {
    let snap = rt.snapshot.load();
    let overrides = rt.overrides();
    snap.services
        .iter()
        .map(|s| view(&snap, s, overrides.get(&*s.name), &rt.windows))
        .collect()
}

pub fn service(rt: &Runtime, name: &str) -> Result<ServiceView, ControlError> {
    let snap = rt.snapshot.load();
    let overrides = rt.overrides();
    let svc = snap
        .services
        .iter()
        .find(|s| &*s.name == name)
        .ok_or_else(|| ControlError::UnknownService(name.into()))?;
    Ok(view(&snap, svc, overrides.get(name), &rt.windows))
}

fn check_generation(snap: &Snapshot, if_match: Option<u64>) -> Result<(), ControlError> {
    match if_match {
        Some(expected) if expected != snap.generation => Err(ControlError::Conflict {
            expected,
            current: snap.generation,
        }),
        _ => Ok(()),
    }
}

fn find<'a>(snap: &'a Snapshot, service: &str) -> Result<&'a Service, ControlError> {
    snap.services
        .iter()
        .find(|s| &*s.name == service)
        .ok_or_else(|| ControlError::UnknownService(service.into()))
}

/// A manual weight change meets an active rollout: refused unless forced; forced, the rollout
/// is aborted (its weights are the operator's from now on) and the event returned.
fn yield_weights(book: &mut Book, service: &str, force: bool) -> Result<Vec<Event>, ControlError> {
    let Some(r) = book.rollouts.active_mut(service) else {
        return Ok(Vec::new());
    };
    if !force {
        return Err(ControlError::RolloutOwnsWeights {
            service: service.into(),
            id: r.id,
            state: r.state.as_str(),
        });
    }
    let why = "weights changed by an operator (forced)".to_string();
    r.finish(
        Phase::Aborted,
        rollout::service::unix_ms(),
        Some(why.clone()),
    );
    let mut e = rollout::service::event(r, "aborted", None, why);
    e.reason = Some("forced".into());
    Ok(vec![book.rollouts.push_event(e)])
}

/// Sets the weights of some pools of a service (others keep theirs). Returns the new generation.
/// Refused during a rollout unless `force`, which aborts the rollout.
pub fn set_weights(
    rt: &Runtime,
    service: &str,
    weights: &BTreeMap<String, u32>,
    if_match: Option<u64>,
    force: bool,
) -> Result<u64, ControlError> {
    if weights.is_empty() {
        return Err(ControlError::Invalid("no pool weights given".into()));
    }
    let (generation, ()) = rt.change::<_, ControlError>(|snap, book| {
        check_generation(snap, if_match)?;
        let svc = find(snap, service)?;
        for (pool, w) in weights {
            if svc.pool_index(pool).is_none() {
                return Err(ControlError::UnknownPool {
                    service: service.into(),
                    pool: pool.clone(),
                });
            }
            if *w > MAX_WEIGHT {
                return Err(ControlError::Invalid(format!(
                    "weight of pool \"{pool}\" is {w}; the most is {MAX_WEIGHT}"
                )));
            }
        }
        let sum: u64 = svc
            .pools
            .iter()
            .map(|p| u64::from(*weights.get(&*p.name).unwrap_or(&p.weight)))
            .sum();
        if sum == 0 {
            return Err(ControlError::Invalid(format!(
                "weights of service \"{service}\" would sum to 0; at least one pool needs a weight above 0"
            )));
        }
        let events = yield_weights(book, service, force)?;
        let entry = book.overrides.entry(service.into()).or_default();
        for (pool, w) in weights {
            entry.insert(pool.clone(), *w);
        }
        Ok(((), events))
    })?;
    Ok(generation)
}

/// Drops a service's runtime overrides: the config file's weights apply again.
pub fn clear_weights(
    rt: &Runtime,
    service: &str,
    if_match: Option<u64>,
    force: bool,
) -> Result<u64, ControlError> {
    let (generation, ()) = rt.change::<_, ControlError>(|snap, book| {
        check_generation(snap, if_match)?;
        find(snap, service)?;
        let events = yield_weights(book, service, force)?;
        book.overrides.remove(service);
        Ok(((), events))
    })?;
    Ok(generation)
}

/// A blue/green switch, optionally watched.
#[derive(Debug, Clone, Default)]
pub struct SwitchRequest {
    pub to: String,
    /// Watch the new pool this long and switch back on a breach.
    pub watch: Option<Duration>,
    pub if_match: Option<u64>,
    pub force: bool,
}

/// The blue/green flip: `to` gets weight 100, every other pool 0. Refused when `to` has no
/// available server. In-flight requests on the old pool finish; new ones go to `to`. With a
/// watch, `to` is judged like a canary at 100 % for that long, and the pool that had the most
/// weight before takes everything back on a breach. Returns the generation and the watch.
pub fn switch(
    rt: &Runtime,
    service: &str,
    req: &SwitchRequest,
) -> Result<(u64, Option<RolloutView>), ControlError> {
    let to = req.to.as_str();
    let (generation, watched) = rt.change::<_, ControlError>(|snap, book| {
        check_generation(snap, req.if_match)?;
        let svc = find(snap, service)?;
        let idx = svc
            .pool_index(to)
            .ok_or_else(|| ControlError::UnknownPool {
                service: service.into(),
                pool: to.into(),
            })?;
        if svc.available_servers(idx) == 0 {
            return Err(ControlError::Unhealthy {
                service: service.into(),
                pool: to.into(),
            });
        }
        let mut events = yield_weights(book, service, req.force)?;
        let entry = book.overrides.entry(service.into()).or_default();
        for p in &svc.pools {
            entry.insert(p.name.to_string(), if *p.name == *to { 100 } else { 0 });
        }
        let Some(watch) = req.watch else {
            return Ok((None, events));
        };
        let stable = heaviest_other(svc, to).ok_or_else(|| {
            ControlError::Invalid(format!(
                "service \"{service}\" has no other pool with weight above 0 to switch back to"
            ))
        })?;
        let defaults = &config_of(snap, service)?.rollout;
        let plan = Plan {
            kind: Kind::Switch,
            canary: to.into(),
            stable,
            steps: vec![100],
            interval: watch,
            max_error_rate: defaults.max_error_rate,
            max_p99: defaults.max_p99,
            min_requests: defaults.min_requests,
            shield: defaults.shield,
        };
        let r = book.rollouts.start(
            service,
            plan,
            rollout::service::unix_ms(),
            rt.step_clock(service, to),
        );
        let message = format!("switched to \"{to}\", watching it for {watch:?}");
        let e = rollout::service::event(r, "started", None, message);
        let id = r.id;
        events.push(book.rollouts.push_event(e));
        Ok((Some(id), events))
    })?;
    let view = match watched {
        Some(_) => Some(rollout_view(rt, service)?),
        None => None,
    };
    Ok((generation, view))
}

/// The pool other than `except` with the most weight now (the one to go back to).
fn heaviest_other(svc: &Service, except: &str) -> Option<String> {
    svc.pools
        .iter()
        .filter(|p| *p.name != *except && p.weight > 0)
        .max_by_key(|p| p.weight)
        .map(|p| p.name.to_string())
}

fn config_of<'a>(snap: &'a Snapshot, service: &str) -> Result<&'a ServiceConfig, ControlError> {
    snap.config
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| ControlError::UnknownService(service.into()))
}

// ------------------------------------------------------------------------------------------------
// Rollouts
// ------------------------------------------------------------------------------------------------

/// `POST /v1/services/{service}/rollouts`: what differs from the service's rollout defaults.
#[derive(Debug, Clone, Default)]
pub struct RolloutRequest {
    pub canary: String,
    pub stable: Option<String>,
    pub steps: Option<Vec<u32>>,
    pub interval: Option<Duration>,
    pub max_error_rate: Option<f64>,
    pub max_p99: Option<Duration>,
    pub min_requests: Option<u64>,
    pub shield: Option<bool>,
}

fn rfc3339(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn view_of(rt: &Runtime, r: &Rollout, generation: u64) -> RolloutView {
    let total = rt
        .windows
        .get(&r.service, &r.canary)
        .map_or(0, |w| w.total_requests());
    RolloutView {
        id: r.id,
        service: r.service.clone(),
        kind: r.kind,
        canary: r.canary.clone(),
        stable: r.stable.clone(),
        state: r.state,
        step: r.step,
        steps: r.steps.clone(),
        canary_weight: r.canary_weight(),
        interval_seconds: r.interval().as_secs_f64(),
        max_error_rate: r.max_error_rate,
        max_p99_ms: r.max_p99_ms.map(|ms| ms as f64),
        min_requests: r.min_requests,
        shield: r.shield,
        started_at: rfc3339(r.started_at),
        step_started_at: rfc3339(r.step_started_at),
        finished_at: r.finished_at.map(rfc3339),
        reason: r.reason.clone(),
        holding: r.holding.clone(),
        step_requests: if r.state.is_active() {
            r.step_requests(total)
        } else {
            0
        },
        canary_live: LiveView::new(&rt.windows, &r.service, &r.canary),
        stable_live: LiveView::new(&rt.windows, &r.service, &r.stable),
        generation,
    }
}

/// The service's active or latest rollout.
pub fn rollout_view(rt: &Runtime, service: &str) -> Result<RolloutView, ControlError> {
    let generation = rt.generation();
    find(&rt.snapshot.load(), service)?;
    let current = rt.with_rollouts(|b| b.services.get(service).and_then(|h| h.current.clone()));
    let r = current.ok_or_else(|| ControlError::NoRollout(service.into()))?;
    Ok(view_of(rt, &r, generation))
}

/// The service's recent rollout events, oldest first.
pub fn rollout_events(rt: &Runtime, service: &str) -> Result<Vec<Event>, ControlError> {
    find(&rt.snapshot.load(), service)?;
    Ok(rt.with_rollouts(|b| {
        b.services
            .get(service)
            .map(|h| h.events.iter().cloned().collect())
            .unwrap_or_default()
    }))
}

/// Starts a rollout of `req.canary` (see `rollout::engine`). Refused while another is active, when
/// the canary has no available server, or on invalid parameters.
pub fn start_rollout(
    rt: &Runtime,
    service: &str,
    req: &RolloutRequest,
) -> Result<RolloutView, ControlError> {
    rt.change::<_, ControlError>(|snap, book| {
        let svc = find(snap, service)?;
        let defaults = &config_of(snap, service)?.rollout;
        if let Some(r) = book.rollouts.active(service) {
            return Err(ControlError::RolloutActive {
                service: service.into(),
                id: r.id,
                state: r.state.as_str(),
            });
        }
        let unknown = |pool: &str| ControlError::UnknownPool {
            service: service.into(),
            pool: pool.into(),
        };
        let canary = svc
            .pool_index(&req.canary)
            .ok_or_else(|| unknown(&req.canary))?;
        let stable = match &req.stable {
            Some(s) => {
                svc.pool_index(s).ok_or_else(|| unknown(s))?;
                s.clone()
            }
            None => heaviest_other(svc, &req.canary).ok_or_else(|| {
                ControlError::Invalid(format!(
                    "service \"{service}\" has no pool other than \"{}\" with weight above 0; name the stable pool",
                    req.canary
                ))
            })?,
        };
        if stable == req.canary {
            return Err(ControlError::Invalid(format!(
                "canary and stable are both \"{stable}\""
            )));
        }
        if svc.available_servers(canary) == 0 {
            return Err(ControlError::Unhealthy {
                service: service.into(),
                pool: req.canary.clone(),
            });
        }
        let steps = req.steps.clone().unwrap_or_else(|| defaults.steps.clone());
        check_steps(&steps).map_err(ControlError::Invalid)?;
        let max_error_rate = req.max_error_rate.unwrap_or(defaults.max_error_rate);
        check_error_rate(max_error_rate).map_err(ControlError::Invalid)?;
        let interval = req.interval.unwrap_or(defaults.interval);
        if interval.is_zero() {
            return Err(ControlError::Invalid("interval must be above 0".into()));
        }
        let plan = Plan {
            kind: Kind::Rollout,
            canary: req.canary.clone(),
            stable,
            steps,
            interval,
            max_error_rate,
            max_p99: req.max_p99.or(defaults.max_p99),
            min_requests: req.min_requests.unwrap_or(defaults.min_requests),
            shield: req.shield.unwrap_or(defaults.shield),
        };
        let r = book.rollouts.start(
            service,
            plan,
            rollout::service::unix_ms(),
            rt.step_clock(service, &req.canary),
        );
        let message = format!(
            "rollout of \"{}\" over \"{}\" in steps {:?} every {:?}",
            r.canary,
            r.stable,
            r.steps,
            r.interval()
        );
        let e = rollout::service::event(r, "started", None, message);
        let r = r.clone();
        let e = book.rollouts.push_event(e);
        rollout::service::apply_weights(book, snap, &r);
        Ok((r, vec![e]))
    })
    .map(|(generation, r)| view_of(rt, &r, generation))
}

/// What an operator does to an active rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl RolloutAction {
    pub fn parse(s: &str) -> Option<RolloutAction> {
        Some(match s {
            "pause" => RolloutAction::Pause,
            "resume" => RolloutAction::Resume,
            "promote" => RolloutAction::Promote,
            "abort" => RolloutAction::Abort,
            _ => return None,
        })
    }
}

/// Pauses (advancing stops; judging goes on), resumes (the step starts over), promotes (the canary
/// takes all traffic now) or aborts (traffic back on the stable pool) the active rollout.
pub fn act_on_rollout(
    rt: &Runtime,
    service: &str,
    action: RolloutAction,
) -> Result<RolloutView, ControlError> {
    rt.change::<_, ControlError>(|snap, book| {
        find(snap, service)?;
        let r = book
            .rollouts
            .active_mut(service)
            .ok_or_else(|| ControlError::NoActiveRollout(service.into()))?;
        let now = rollout::service::unix_ms();
        let (kind, message, reason) = match action {
            RolloutAction::Pause if r.state == Phase::Paused => {
                return Ok((r.clone(), Vec::new()));
            }
            RolloutAction::Pause => {
                r.state = Phase::Paused;
                ("paused", "paused by an operator".to_string(), None)
            }
            RolloutAction::Resume if r.state == Phase::Progressing => {
                return Ok((r.clone(), Vec::new()));
            }
            RolloutAction::Resume => {
                r.state = Phase::Progressing;
                r.restart_step(now, rt.step_clock(service, &r.canary));
                (
                    "resumed",
                    "resumed by an operator; the step starts over".to_string(),
                    None,
                )
            }
            RolloutAction::Promote => {
                r.finish(Phase::Promoted, now, None);
                let m = format!("\"{}\" promoted by an operator", r.canary);
                ("promoted", m, None)
            }
            RolloutAction::Abort => {
                let m = format!("aborted by an operator; traffic back on \"{}\"", r.stable);
                r.finish(Phase::Aborted, now, Some(m.clone()));
                ("aborted", m, Some("operator".to_string()))
            }
        };
        let r = r.clone();
        let mut e = rollout::service::event(&r, kind, None, message);
        e.reason = reason;
        let e = book.rollouts.push_event(e);
        rollout::service::apply_weights(book, snap, &r);
        Ok((r, vec![e]))
    })
    .map(|(generation, r)| view_of(rt, &r, generation))
}
