//! Each control operation as a plain function: the current snapshot and a copy of the book in, the changed book and its events out.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{find, ControlError};
pub use crate::admin_request::{RolloutAction, RolloutRequest, SwitchRequest};
use crate::book::{apply_weights, event, unix_ms, Book};
use crate::config::{ServiceConfig, Weight};
use crate::rollout::{Event, EventKind, Kind, Phase, Plan, Rollout};
use crate::snapshot::Snapshot;
use crate::upstream::Service;

fn check_generation(
    snap: &Snapshot,
    service: &str,
    if_match: Option<u64>,
) -> Result<(), ControlError> {
    let current = snap.etag(service);
    match if_match {
        Some(expected) if expected != current => Err(ControlError::Conflict { expected, current }),
        _ => Ok(()),
    }
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
    r.finish(Phase::Aborted, unix_ms(), Some(why.clone()));
    let mut e = event(r, EventKind::Aborted, None, why);
    e.reason = Some("forced".into());
    Ok(vec![book.rollouts.push_event(e)])
}

/// Sets the weights of some pools of a service (others keep theirs). Refused during a rollout
/// unless `force`, which aborts the rollout.
pub fn set_weights(
    snap: &Snapshot,
    book: &mut Book,
    service: &str,
    weights: &BTreeMap<String, Weight>,
    if_match: Option<u64>,
    force: bool,
) -> Result<Vec<Event>, ControlError> {
    if weights.is_empty() {
        return Err(ControlError::Invalid("no pool weights given".into()));
    }
    check_generation(snap, service, if_match)?;
    let svc = find(snap, service)?;
    for pool in weights.keys() {
        if svc.pool_index(pool).is_none() {
            return Err(ControlError::UnknownPool {
                service: service.into(),
                pool: pool.clone(),
            });
        }
    }
    let sum: u64 = svc
        .pools
        .iter()
        .map(|p| u64::from(weights.get(&*p.name).map_or(p.weight, |w| w.get())))
        .sum();
    if sum == 0 {
        return Err(ControlError::Invalid(format!(
            "weights of service \"{service}\" would sum to 0; at least one pool needs a weight above 0"
        )));
    }
    let events = yield_weights(book, service, force)?;
    let entry = book.overrides.entry(service.into()).or_default();
    for (pool, w) in weights {
        entry.insert(pool.clone(), w.get());
    }
    Ok(events)
}

/// Drops a service's runtime overrides: the config file's weights apply again.
pub fn clear_weights(
    snap: &Snapshot,
    book: &mut Book,
    service: &str,
    if_match: Option<u64>,
    force: bool,
) -> Result<Vec<Event>, ControlError> {
    check_generation(snap, service, if_match)?;
    find(snap, service)?;
    let events = yield_weights(book, service, force)?;
    book.overrides.remove(service);
    Ok(events)
}

/// Puts `service` in maintenance as `req` asks (checked: page sizes, JSON, networks, paths,
/// Retry-After), replacing any maintenance it was in; `since` is kept from that one.
pub fn set_maintenance(
    snap: &Snapshot,
    book: &mut Book,
    service: &str,
    req: crate::maintenance::Request,
    now_ms: u64,
) -> Result<(), ControlError> {
    find(snap, service)?;
    let since = book.maintenance.get(service).map_or(now_ms, |m| m.since);
    let m = crate::maintenance::Maintenance::new(req, since)?;
    book.maintenance.insert(service.to_string(), m);
    Ok(())
}

/// The blue/green flip: `to` gets weight 100, every other pool 0. Refused when `to` has no
/// available server. In-flight requests on the old pool finish; new ones go to `to`. With a
/// watch, `to` is judged like a canary at 100 % for that long, and the pool that had the most
/// weight before takes everything back on a breach. Returns the watch, as a rollout.
pub fn switch(
    snap: &Snapshot,
    book: &mut Book,
    service: &str,
    req: &SwitchRequest,
    now: Instant,
) -> Result<(Option<Rollout>, Vec<Event>), ControlError> {
    let to = req.to.as_str();
    check_generation(snap, service, req.if_match)?;
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
        max_error_rate: defaults.max_error_rate.get(),
        max_p99: defaults.max_p99,
        min_requests: defaults.min_requests,
        shield: defaults.shield,
    };
    let r = book
        .rollouts
        .start(service, plan, unix_ms(), snap.step_clock(service, to, now));
    let message = format!("switched to \"{to}\", watching it for {watch:?}");
    let e = event(r, EventKind::Started, None, message);
    let r = r.clone();
    events.push(book.rollouts.push_event(e));
    Ok((Some(r), events))
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

/// Starts a rollout of `req.canary` (see `rollout::engine`). Refused while another is active, when
/// the canary has no available server, or on invalid parameters.
pub fn start_rollout(
    snap: &Snapshot,
    book: &mut Book,
    service: &str,
    req: &RolloutRequest,
    now: Instant,
) -> Result<(Rollout, Vec<Event>), ControlError> {
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
    let max_error_rate = req.max_error_rate.unwrap_or(defaults.max_error_rate);
    let interval = req.interval.unwrap_or(defaults.interval);
    if interval.is_zero() {
        return Err(ControlError::Invalid("interval must be above 0".into()));
    }
    let plan = Plan {
        kind: Kind::Rollout,
        canary: req.canary.clone(),
        stable,
        steps: steps.into_vec(),
        interval,
        max_error_rate: max_error_rate.get(),
        max_p99: req.max_p99.or(defaults.max_p99),
        min_requests: req.min_requests.unwrap_or(defaults.min_requests),
        shield: req.shield.unwrap_or(defaults.shield),
    };
    let r = book.rollouts.start(
        service,
        plan,
        unix_ms(),
        snap.step_clock(service, &req.canary, now),
    );
    let message = format!(
        "rollout of \"{}\" over \"{}\" in steps {:?} every {:?}",
        r.canary,
        r.stable,
        r.steps,
        r.interval()
    );
    let e = event(r, EventKind::Started, None, message);
    let r = r.clone();
    let e = book.rollouts.push_event(e);
    apply_weights(book, &snap.services, &r);
    Ok((r, vec![e]))
}

/// Pauses (advancing stops; judging goes on), resumes (the step starts over), promotes (the canary
/// takes all traffic now) or aborts (traffic back on the stable pool) the active rollout.
pub fn act_on_rollout(
    snap: &Snapshot,
    book: &mut Book,
    service: &str,
    action: RolloutAction,
    now: Instant,
) -> Result<(Rollout, Vec<Event>), ControlError> {
    find(snap, service)?;
    let r = book
        .rollouts
        .active_mut(service)
        .ok_or_else(|| ControlError::NoActiveRollout(service.into()))?;
    let now_ms = unix_ms();
    let (kind, message, reason) = match action {
        RolloutAction::Pause if r.state == Phase::Paused => {
            return Ok((r.clone(), Vec::new()));
        }
        RolloutAction::Pause => {
            r.state = Phase::Paused;
            (EventKind::Paused, "paused by an operator".to_string(), None)
        }
        RolloutAction::Resume if r.state == Phase::Progressing => {
            return Ok((r.clone(), Vec::new()));
        }
        RolloutAction::Resume => {
            r.state = Phase::Progressing;
            r.restart_step(now_ms, snap.step_clock(service, &r.canary, now));
            (
                EventKind::Resumed,
                "resumed by an operator; the step starts over".to_string(),
                None,
            )
        }
        RolloutAction::Promote => {
            r.finish(Phase::Promoted, now_ms, None);
            let m = format!("\"{}\" promoted by an operator", r.canary);
            (EventKind::Promoted, m, None)
        }
        RolloutAction::Abort => {
            let m = format!("aborted by an operator; traffic back on \"{}\"", r.stable);
            r.finish(Phase::Aborted, now_ms, Some(m.clone()));
            (EventKind::Aborted, m, Some("operator".to_string()))
        }
    };
    let r = r.clone();
    let mut e = event(&r, kind, None, message);
    e.reason = reason;
    let e = book.rollouts.push_event(e);
    apply_weights(book, &snap.services, &r);
    Ok((r, vec![e]))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::snapshot::Registries;
    use std::time::Duration;

    /// Service "api" with pools blue (weight 100) and green (weight 0), and the book compiled in.
    fn snapshot(book: &Book) -> Snapshot {
        let text = "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n\n\
             [services.api.pools.blue]\nweight = 100\nservers = [\"127.0.0.1:2\"]\n\n\
             [services.api.pools.green]\nweight = 0\nservers = [\"127.0.0.1:3\"]\n";
        let config = crate::config::parse(text, Path::new("t.toml")).expect("valid config");
        Snapshot::compile(
            Arc::new(config),
            7,
            Arc::new(book.clone()),
            &mut Registries::default(),
            &Metrics::new(),
        )
    }

    fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(p, w)| (p.to_string(), *w)).collect()
    }

    /// The weights of a request: each already a [`Weight`], as admin parses them.
    fn request(pairs: &[(&str, u32)]) -> BTreeMap<String, Weight> {
        let weight = |w: u32| Weight::new(u64::from(w)).expect("a weight in range");
        pairs
            .iter()
            .map(|(p, w)| (p.to_string(), weight(*w)))
            .collect()
    }

    fn rollout(canary: &str) -> RolloutRequest {
        RolloutRequest {
            canary: canary.into(),
            ..RolloutRequest::default()
        }
    }

    #[test]
    fn weights_are_checked_against_the_snapshot_and_written_to_the_book() {
        let mut book = Book::default();
        let snap = snapshot(&book);
        let err = |book: &mut Book, w: &[(&str, u32)], if_match| {
            set_weights(&snap, book, "api", &request(w), if_match, false)
                .expect_err("refused")
                .to_string()
        };
        assert!(err(&mut book, &[], None).contains("no pool weights"));
        assert!(err(&mut book, &[("red", 1)], None).contains("no pool \"red\""));
        // A weight above the most cannot reach set_weights: it is not a Weight.
        assert!(Weight::new(u64::from(crate::config::MAX_WEIGHT) + 1).is_err());
        assert!(err(&mut book, &[("blue", 0)], None).contains("sum to 0"));
        assert!(err(&mut book, &[("green", 5)], Some(6)).contains("generation is 7, not 6"));
        assert!(book.overrides.is_empty(), "a refusal leaves the book alone");

        let events = set_weights(
            &snap,
            &mut book,
            "api",
            &request(&[("green", 5)]),
            Some(7),
            false,
        )
        .expect("set");
        assert!(events.is_empty());
        assert_eq!(book.overrides["api"], weights(&[("green", 5)]));
        clear_weights(&snap, &mut book, "api", None, false).expect("clear");
        assert!(book.overrides.is_empty());
    }

    #[test]
    fn a_rollout_owns_its_weights_until_a_forced_change_aborts_it() {
        let mut book = Book::default();
        let snap = snapshot(&book);
        let (r, events) = start_rollout(&snap, &mut book, "api", &rollout("green"), Instant::now())
            .expect("start");
        assert_eq!((r.canary.as_str(), r.stable.as_str()), ("green", "blue"));
        assert_eq!(events.len(), 1);
        assert_eq!(book.overrides["api"]["green"], r.canary_weight());
        let again = start_rollout(&snap, &mut book, "api", &rollout("green"), Instant::now());
        assert!(matches!(again, Err(ControlError::RolloutActive { .. })));

        let snap = snapshot(&book);
        let w = request(&[("green", 50)]);
        let refused = set_weights(&snap, &mut book, "api", &w, None, false);
        assert!(matches!(
            refused,
            Err(ControlError::RolloutOwnsWeights { .. })
        ));
        let events = set_weights(&snap, &mut book, "api", &w, None, true).expect("forced");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason.as_deref(), Some("forced"));
        assert!(
            book.rollouts.active("api").is_none(),
            "the forced change aborted it"
        );
        assert_eq!(book.overrides["api"]["green"], 50);
    }

    #[test]
    fn operators_pause_resume_promote_and_abort() {
        let mut book = Book::default();
        let snap = snapshot(&book);
        start_rollout(&snap, &mut book, "api", &rollout("green"), Instant::now()).expect("start");
        let act =
            |book: &mut Book, action| act_on_rollout(&snap, book, "api", action, Instant::now());
        let (r, events) = act(&mut book, RolloutAction::Pause).expect("pause");
        assert_eq!((r.state, events.len()), (Phase::Paused, 1));
        let (_, events) = act(&mut book, RolloutAction::Pause).expect("pause again");
        assert!(events.is_empty(), "pausing a paused rollout is a no-op");
        let (r, _) = act(&mut book, RolloutAction::Resume).expect("resume");
        assert_eq!(r.state, Phase::Progressing);
        let (r, _) = act(&mut book, RolloutAction::Promote).expect("promote");
        assert_eq!(r.state, Phase::Promoted);
        assert_eq!(
            book.overrides["api"],
            weights(&[("blue", 0), ("green", 100)])
        );
        assert!(matches!(
            act(&mut book, RolloutAction::Abort),
            Err(ControlError::NoActiveRollout(_))
        ));

        start_rollout(&snap, &mut book, "api", &rollout("green"), Instant::now()).expect("start");
        let (r, events) = act(&mut book, RolloutAction::Abort).expect("abort");
        assert_eq!(r.state, Phase::Aborted);
        assert_eq!(events[0].reason.as_deref(), Some("operator"));
        assert_eq!(
            book.overrides["api"],
            weights(&[("blue", 100), ("green", 0)])
        );
    }

    #[test]
    fn a_switch_flips_every_pool_and_a_watched_one_knows_where_to_go_back() {
        let mut book = Book::default();
        let snap = snapshot(&book);
        let req = |to: &str, watch| SwitchRequest {
            to: to.into(),
            watch,
            ..SwitchRequest::default()
        };
        let (watched, _) =
            switch(&snap, &mut book, "api", &req("green", None), Instant::now()).expect("switch");
        assert!(watched.is_none());
        assert_eq!(
            book.overrides["api"],
            weights(&[("blue", 0), ("green", 100)])
        );

        let mut book = Book::default();
        let watch = Some(Duration::from_secs(30));
        let (watched, events) = switch(
            &snap,
            &mut book,
            "api",
            &req("green", watch),
            Instant::now(),
        )
        .expect("switch");
        let r = watched.expect("a watch");
        assert_eq!(
            (r.kind, r.stable.as_str(), events.len()),
            (Kind::Switch, "blue", 1)
        );
        let bad = switch(
            &snap,
            &mut Book::default(),
            "api",
            &req("red", None),
            Instant::now(),
        );
        assert!(matches!(bad, Err(ControlError::UnknownPool { .. })));
    }
}
