//! What deploy tools do to a running proxy: read services, set weights, flip blue/green. One error enum.
//!
//! The admin API and tests call these; each change goes through `Runtime::change_overrides`, so it
//! is validated, persisted and published as one new snapshot, or not applied at all.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Balance, MAX_WEIGHT};
use crate::rollout::Windows;
use crate::runtime::{ChangeError, Runtime};
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
    #[error(transparent)]
    Change(#[from] ChangeError),
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub generation: u64,
    pub balance: &'static str,
    pub pools: Vec<PoolView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub name: String,
    /// The weight in force.
    pub weight: u32,
    /// The weight the config file gives.
    pub config_weight: u32,
    /// Whether `weight` comes from a runtime override (admin API / ctl) rather than the file.
    pub overridden: bool,
    pub healthy_servers: usize,
    pub servers: Vec<ServerView>,
    /// The pool's live window (see `rollout::window`).
    pub live: LiveView,
}

/// A pool's requests, errors and latency quantiles over its live window.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    /// The window's length; it covers between one bucket less and this much history.
    pub window_seconds: f64,
    pub requests: u64,
    /// 5xx sent and upstream failures.
    pub errors: u64,
    pub error_rate: f64,
    /// `null` without requests. Within about 3 % of the true quantile.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl LiveView {
    fn new(windows: &Windows, service: &str, pool: &str) -> LiveView {
        let stats = windows.get(service, pool).map(|w| w.snapshot());
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        LiveView {
            window_seconds: windows.spec().length().as_secs_f64(),
            requests: stats.map_or(0, |s| s.requests),
            errors: stats.map_or(0, |s| s.errors),
            error_rate: stats.map_or(0.0, |s| s.error_rate),
            p50_ms: stats.and_then(|s| ms(s.p50)),
            p99_ms: stats.and_then(|s| ms(s.p99)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub address: String,
    pub weight: u32,
    /// Active checks' verdict.
    pub healthy: bool,
    /// Taken out by passive checks for now.
    pub ejected: bool,
    /// Gets requests: healthy and not ejected.
    pub available: bool,
    pub in_flight: usize,
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
        balance: balance_name(service.balance),
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

/// Sets the weights of some pools of a service (others keep theirs). Returns the new generation.
pub fn set_weights(
    rt: &Runtime,
    service: &str,
    weights: &BTreeMap<String, u32>,
    if_match: Option<u64>,
) -> Result<u64, ControlError> {
    if weights.is_empty() {
        return Err(ControlError::Invalid("no pool weights given".into()));
    }
    rt.change_overrides(|snap, overrides| {
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
        let entry = overrides.entry(service.into()).or_default();
        for (pool, w) in weights {
            entry.insert(pool.clone(), *w);
        }
        Ok(())
    })
}

/// Drops a service's runtime overrides: the config file's weights apply again.
pub fn clear_weights(
    rt: &Runtime,
    service: &str,
    if_match: Option<u64>,
) -> Result<u64, ControlError> {
    rt.change_overrides(|snap, overrides| {
        check_generation(snap, if_match)?;
        find(snap, service)?;
        overrides.remove(service);
        Ok(())
    })
}

/// The blue/green flip: `to` gets weight 100, every other pool 0. Refused when `to` has no
/// available server. In-flight requests on the old pool finish; new ones go to `to`.
pub fn switch(
    rt: &Runtime,
    service: &str,
    to: &str,
    if_match: Option<u64>,
) -> Result<u64, ControlError> {
    rt.change_overrides(|snap, overrides| {
        check_generation(snap, if_match)?;
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
        let entry = overrides.entry(service.into()).or_default();
        for p in &svc.pools {
            entry.insert(p.name.to_string(), if *p.name == *to { 100 } else { 0 });
        }
        Ok(())
    })
}
