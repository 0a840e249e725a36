//! The book: what runtime changes write (weight overrides, rollouts, maintenance), and the rollout bookkeeping on it.
//!
//! The runtime's writer holds the one `Book`; each change works on a copy and the result is
//! persisted, then compiled into a snapshot. [`tick`] judges each active rollout on its canary's
//! live figures (this node's window, or the fleet's sum on a fleet's leader) and applies what was
//! decided (advance, hold, promote, roll back) to the book: the rollout's state and the service's
//! weight overrides. With a 100 ms tick and 1 s buckets, a breach is acted on within about 100 ms
//! of the request that revealed it.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::maintenance::Maintenance;
use crate::rollout::{
    Decision, Event, EventKind, Phase, PoolWindow, Rollout, Rollouts, StepClock, WindowStats,
};
use crate::upstream::Service;

/// Pool weights set at runtime, by service then pool. They win over the config file's weights.
pub type Overrides = BTreeMap<String, BTreeMap<String, u32>>;

/// What runtime changes write: the weight overrides, the rollouts that own some of them, and the
/// services in maintenance. Persisted together in `state.json`, compiled together into each
/// snapshot.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub overrides: Overrides,
    pub rollouts: Rollouts,
    /// Services in maintenance, by name.
    pub maintenance: BTreeMap<String, Maintenance>,
    /// In a fleet (`[cluster]`): each service's entry's etcd mod-revision as last applied here
    /// (its ETag); absent services have never been written. Empty on a node of its own.
    pub revisions: BTreeMap<String, u64>,
}

/// The maintenance entries that still apply to `config`: those of services no longer in it are
/// dropped (as their weight overrides are). Returns a message for each dropped one.
pub fn drop_gone_maintenance(
    config: &Config,
    maintenance: &mut BTreeMap<String, Maintenance>,
) -> Vec<String> {
    let mut dropped = Vec::new();
    maintenance.retain(|service, _| {
        let kept = config.services.iter().any(|s| &s.name == service);
        if !kept {
            dropped.push(format!(
                "maintenance of service \"{service}\": the service is no longer in the config"
            ));
        }
        kept
    });
    dropped
}

/// Now, in Unix milliseconds (the rollouts' persisted clock).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An event of `r` as it stands, with the canary's figures.
pub fn event(r: &Rollout, kind: EventKind, canary: Option<&WindowStats>, message: String) -> Event {
    Event {
        time: unix_ms(),
        service: r.service.clone(),
        rollout: r.id,
        event: kind,
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

/// Logs a transition as one event whose fields are the figures that decided it (the same names
/// as `GET .../rollouts/current/events` shows).
pub fn log_event(e: &Event) {
    macro_rules! event {
        ($level:ident) => {
            tracing::$level!(
                target: "switchyard::rollout",
                event = e.event.as_str(),
                service = %e.service,
                rollout = e.rollout,
                step = e.step,
                canary_weight = e.canary_weight,
                requests = e.requests,
                errors = e.errors,
                error_rate = e.error_rate,
                p99_ms = e.p99_ms,
                reason = e.reason.as_deref(),
                "rollout {} of service {}: {}",
                e.rollout,
                e.service,
                e.message
            )
        };
    }
    if matches!(e.event, EventKind::RolledBack | EventKind::Aborted) {
        event!(warn);
    } else {
        event!(info);
    }
}

/// Sets the service's overrides to the weights `r`'s state gives.
pub fn apply_weights(book: &mut Book, services: &[Service], r: &Rollout) {
    let Some(svc) = services.iter().find(|s| *s.name == r.service) else {
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
            let mut e = event(r, EventKind::Aborted, None, why);
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
        let e = event(r, EventKind::Restarted, None, message);
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

/// A canary's live figures as a tick judges them: its window's stats and its request total (a
/// step's requests are the total's growth since the step began).
pub type CanaryFigures = (WindowStats, u64);

/// The canary's pool window in `services` (`None` if the pool is gone).
pub fn canary_window<'a>(services: &'a [Service], r: &Rollout) -> Option<&'a PoolWindow> {
    let svc = services.iter().find(|s| *s.name == r.service)?;
    let pool = svc.pools.iter().find(|p| *p.name == r.canary)?;
    Some(&pool.window)
}

/// The canary's figures on this node alone: its pool's window here.
pub fn local_canary(services: &[Service], r: &Rollout) -> Option<CanaryFigures> {
    let window = canary_window(services, r)?;
    Some((window.snapshot(), window.total_requests()))
}

/// Judges every active rollout once on its canary's figures as `canary` gives them
/// ([`local_canary`] on a node of its own; the fleet's sum on a fleet's leader), and applies what
/// was decided (see the module docs). A rollout whose figures are `None` is left as it is.
pub fn tick(
    services: &[Service],
    book: &mut Book,
    now: Instant,
    canary: impl Fn(&Rollout) -> Option<CanaryFigures>,
) -> Outcome {
    let mut out = Outcome::default();
    for service in book.rollouts.active_services() {
        let Some(r) = book.rollouts.active_mut(&service) else {
            continue;
        };
        let Some((stats, total)) = canary(r) else {
            continue;
        };
        let now_ms = unix_ms();
        let mut cause = None;
        let (kind, message) = match r.judge(&stats, total, now) {
            Decision::Stay => continue,
            Decision::Hold(message) => {
                r.holding = Some(r.holding_text());
                (EventKind::Held, message)
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
                (EventKind::Step, message)
            }
            Decision::Promote => {
                let message = format!("\"{}\" promoted: it takes all traffic", r.canary);
                r.finish(Phase::Promoted, now_ms, None);
                out.publish = true;
                (EventKind::Promoted, message)
            }
            Decision::RollBack { reason, message } => {
                let message = format!("{message}; traffic back on \"{}\"", r.stable);
                cause = Some(reason);
                r.finish(Phase::RolledBack, now_ms, Some(message.clone()));
                out.publish = true;
                (EventKind::RolledBack, message)
            }
        };
        let r = r.clone();
        if kind != EventKind::Held {
            apply_weights(book, services, &r);
        }
        let mut e = event(&r, kind, Some(&stats), message);
        e.reason = cause.map(str::to_string);
        out.events.push(book.rollouts.push_event(e));
    }
    out
}

/// The weights of `svc`'s pools added up, each pool's override from `weights` if it has one,
/// else its configured weight.
pub fn weight_sum(svc: &crate::config::ServiceConfig, weights: &BTreeMap<String, u32>) -> u64 {
    svc.pools
        .iter()
        .map(|p| u64::from(*weights.get(&p.name).unwrap_or(&p.weight)))
        .sum()
}

/// The overrides that still apply to `config`: entries for services or pools that no longer exist
/// are dropped, and so are a service's overrides if they would leave it with a weight sum of 0.
/// Returns the kept overrides and a message for each dropped one.
pub fn effective_overrides(config: &Config, overrides: &Overrides) -> (Overrides, Vec<String>) {
    let mut kept = Overrides::new();
    let mut dropped = Vec::new();
    for (service, weights) in overrides {
        let Some(svc) = config.services.iter().find(|s| &s.name == service) else {
            dropped.push(format!("service \"{service}\" is no longer in the config"));
            continue;
        };
        let mut valid = BTreeMap::new();
        for (pool, w) in weights {
            if svc.pools.iter().any(|p| &p.name == pool) {
                valid.insert(pool.clone(), *w);
            } else {
                dropped.push(format!(
                    "pool \"{pool}\" of service \"{service}\" is no longer in the config"
                ));
            }
        }
        if weight_sum(svc, &valid) == 0 {
            dropped.push(format!(
                "overrides of service \"{service}\" would leave every pool at weight 0"
            ));
            continue;
        }
        if !valid.is_empty() {
            kept.insert(service.clone(), valid);
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rollout::{Kind, Plan};

    fn config(pools: &[(&str, u32)]) -> Config {
        let mut text = String::from(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n",
        );
        for (i, (pool, weight)) in pools.iter().enumerate() {
            text.push_str(&format!(
                "\n[services.api.pools.{pool}]\nweight = {weight}\nservers = [\"127.0.0.1:{}\"]\n",
                i + 2
            ));
        }
        crate::config::parse(&text, Path::new("t.toml")).expect("valid config")
    }

    fn overrides(pairs: &[(&str, u32)]) -> Overrides {
        let pools = pairs.iter().map(|(p, w)| (p.to_string(), *w)).collect();
        Overrides::from([("api".to_string(), pools)])
    }

    #[test]
    fn a_reload_keeps_overrides_that_still_fit_and_drops_the_rest_saying_why() {
        let cfg = config(&[("blue", 100), ("green", 0)]);
        let (kept, dropped) = effective_overrides(&cfg, &overrides(&[("green", 10)]));
        assert_eq!((kept, dropped.len()), (overrides(&[("green", 10)]), 0));

        let (kept, dropped) = effective_overrides(&cfg, &overrides(&[("green", 10), ("red", 5)]));
        assert_eq!(kept, overrides(&[("green", 10)]));
        assert!(dropped[0].contains("pool \"red\""), "{dropped:?}");

        let (kept, dropped) = effective_overrides(&cfg, &overrides(&[("blue", 0)]));
        assert!(kept.is_empty());
        assert!(dropped[0].contains("weight 0"), "{dropped:?}");

        let mut other = Overrides::new();
        other.insert("gone".into(), BTreeMap::from([("x".to_string(), 1)]));
        let (kept, dropped) = effective_overrides(&cfg, &other);
        assert!(kept.is_empty());
        assert!(dropped[0].contains("service \"gone\""), "{dropped:?}");
    }

    #[test]
    fn a_reload_aborts_a_rollout_whose_pools_left_the_config() {
        let plan = Plan {
            kind: Kind::Rollout,
            canary: "green".into(),
            stable: "blue".into(),
            steps: vec![10, 100],
            interval: std::time::Duration::from_secs(60),
            max_error_rate: 0.05,
            max_p99: None,
            min_requests: 10,
            shield: true,
        };
        let clock = StepClock {
            started: Instant::now(),
            base_requests: 0,
        };
        let mut rollouts = Rollouts::default();
        rollouts.start("api", plan, 0, clock);
        let still = config(&[("blue", 100), ("green", 0)]);
        assert!(end_orphans(&still, &mut rollouts).is_empty());
        assert!(rollouts.active("api").is_some());

        let without_green = config(&[("blue", 100)]);
        let events = end_orphans(&without_green, &mut rollouts);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason.as_deref(), Some("config"));
        assert!(
            events[0].message.contains("pool \"green\""),
            "{:?}",
            events[0]
        );
        assert!(rollouts.active("api").is_none());
    }
}
