//! Everything a request needs, compiled from the config into one immutable value and swapped as a whole.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::limits::Limiter;
use crate::routing::RouteTable;
use crate::runtime::Book;
use crate::state::Overrides;
use crate::upstream::{ServerRegistry, Service, Shield};

/// What a plain or TLS listener does with every request, whatever the route.
#[derive(Debug, Clone)]
pub struct ListenerPolicy {
    pub name: Box<str>,
    pub redirect_https: bool,
    pub https_port: u16,
}

/// Routes, services, pools and weights of one generation. Never mutated: a change builds a new one.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub routes: RouteTable,
    pub services: Vec<Service>,
    pub listeners: Vec<ListenerPolicy>,
    pub config: Arc<Config>,
}

impl Snapshot {
    /// Compiles a validated config with the runtime weight overrides applied on top, and the
    /// shielding of each active rollout.
    ///
    /// Cannot fail: the config was validated, and the overrides only name pools that exist with
    /// sums above 0 (see [`effective_overrides`]).
    pub fn compile(
        config: Arc<Config>,
        generation: u64,
        registry: &ServerRegistry,
        book: &Book,
        zones: &HashMap<String, Arc<dyn Limiter>>,
    ) -> Snapshot {
        let overrides = &book.overrides;
        let services: Vec<Service> = config
            .services
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some(weights) = overrides.get(&s.name) {
                    for pool in &mut s.pools {
                        if let Some(w) = weights.get(&pool.name) {
                            pool.weight = *w;
                        }
                    }
                }
                let mut service = Service::build(&s, registry);
                if let Some(r) = book.rollouts.active(&s.name).filter(|r| r.shield) {
                    if let (Some(canary), Some(stable)) =
                        (service.pool_index(&r.canary), service.pool_index(&r.stable))
                    {
                        service.shield = Some(Shield {
                            canary,
                            stable,
                            methods: s.rollout.shield_methods.clone(),
                        });
                    }
                }
                service
            })
            .collect();
        let mut routes = RouteTable::build(&config.routes, |name| {
            services.iter().position(|s| &*s.name == name)
        });
        routes.attach_zones(zones);
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerPolicy {
                name: l.name.as_str().into(),
                redirect_https: l.redirect_https,
                https_port: l.https_port,
            })
            .collect();
        Snapshot {
            generation,
            routes,
            services,
            listeners,
            config,
        }
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerPolicy> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| &*s.name == name)
    }
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
        let mut valid = std::collections::BTreeMap::new();
        for (pool, w) in weights {
            if svc.pools.iter().any(|p| &p.name == pool) {
                valid.insert(pool.clone(), *w);
            } else {
                dropped.push(format!(
                    "pool \"{pool}\" of service \"{service}\" is no longer in the config"
                ));
            }
        }
        let sum: u64 = svc
            .pools
            .iter()
            .map(|p| u64::from(*valid.get(&p.name).unwrap_or(&p.weight)))
            .sum();
        if sum == 0 {
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
