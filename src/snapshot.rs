//! Everything a request needs, compiled from the config and the book into one immutable value and swapped as a whole.

use std::collections::hash_map::RandomState;
use std::sync::Arc;
use std::time::Instant;

use pingora_core::upstreams::peer::IdleLimit;

use crate::book::Book;
use crate::config::Config;
use crate::keepalive::IdleLimits;
use crate::limits::conn::ConnCaps;
use crate::limits::{new_zone, Limiter, Scope, ZoneRegistry};
use crate::maintenance::Gate;
use crate::metrics::{Handles, Metrics};
use crate::redis_limits::RedisLimits;
use crate::rollout::StepClock;
use crate::routing::RouteTable;
use crate::upstream::{Addresses, ServerRegistry, Service, Shield};

/// What a plain or TLS listener does with every request, whatever the route.
#[derive(Debug, Clone)]
pub struct ListenerPolicy {
    pub name: Box<str>,
    pub redirect_https: bool,
    pub https_port: u16,
    /// The status of its redirects to HTTPS.
    pub redirect_code: u16,
}

/// Routes, services, pools, weights, zones, caps and metric handles of one generation, with the
/// book it was compiled from. Never mutated: a change compiles a new one.
pub struct Snapshot {
    pub generation: u64,
    /// Shared with the previous snapshot when only the book changed (weights, rollouts).
    pub routes: Arc<RouteTable>,
    /// Each pool holds its servers' states and its live window.
    pub services: Vec<Service>,
    /// Each service's cap on idle upstream connections (`keepalive`), by service index.
    pub idle_limits: Vec<Option<Arc<IdleLimit>>>,
    pub listeners: Vec<ListenerPolicy>,
    /// Client connection caps, checked at accept.
    pub caps: ConnCaps,
    /// Every rate-limit zone in force (the routes hold theirs; upkeep and the scrape read these).
    pub zones: Arc<[Arc<dyn Limiter>]>,
    /// The process's zone-key hasher: a key hashes the same in every snapshot.
    pub zone_keys: RandomState,
    /// Request-path metric handles by this snapshot's indexes.
    pub handles: Arc<Handles>,
    /// The weight overrides, rollouts and maintenance compiled in: what the admin API and
    /// `/metrics` show.
    pub book: Arc<Book>,
    /// Each service's maintenance as the request path checks it, by service index.
    pub maintenance: Vec<Option<Arc<Gate>>>,
    /// What every server name resolved to, as compiled into `services`.
    pub addresses: Arc<Addresses>,
    pub config: Arc<Config>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("services", &self.services.len())
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// What the writer keeps from one compile to the next: state by name that outlives snapshots
/// (server states, pool windows, zones) and the parts that depend on the config alone.
/// Plain data: the runtime's writer lock is the only lock over it.
#[derive(Default)]
pub struct Registries {
    pub servers: ServerRegistry,
    idle: IdleLimits,
    /// The resolver service's latest answers; a change to them compiles a new snapshot.
    pub addresses: Arc<Addresses>,
    zones: ZoneRegistry,
    /// The fleet's Redis (`[cluster] redis`), where `scope = "cluster"` zones count.
    pub redis: Option<Arc<RedisLimits>>,
    last: Option<ConfigParts>,
}

/// The parts of a snapshot that only the config decides, reused while the config is the same.
struct ConfigParts {
    config: Arc<Config>,
    routes: Arc<RouteTable>,
    zones: Arc<[Arc<dyn Limiter>]>,
    handles: Arc<Handles>,
}

impl Snapshot {
    /// A service's ETag: the snapshot's generation on a node of its own; in a fleet, the etcd
    /// revision of the service's entry (0 before its first write), the same on every node.
    pub fn etag(&self, service: &str) -> u64 {
        if self.config.cluster.is_some() {
            self.book.revisions.get(service).copied().unwrap_or(0)
        } else {
            self.generation
        }
    }

    /// Compiles a validated config with the book's weight overrides applied on top, and the
    /// shielding of each active rollout. A config that is the same `Arc` as the last compile's
    /// keeps its route table, zones and metric handles: a weight change rebuilds only services.
    ///
    /// Cannot fail: the config was validated, and the overrides only name pools that exist with
    /// sums above 0 (see `book::effective_overrides`).
    pub fn compile(
        config: Arc<Config>,
        generation: u64,
        book: Arc<Book>,
        registries: &mut Registries,
        metrics: &Metrics,
    ) -> Snapshot {
        let services = compile_services(
            &config,
            &book,
            &mut registries.servers,
            &registries.addresses,
        );
        let parts = match registries.last.take() {
            Some(parts) if Arc::ptr_eq(&parts.config, &config) => parts,
            _ => {
                let redis = registries.redis.clone();
                let by_name = registries.zones.resolve_with(&config.limits.zones, |spec| {
                    match (&redis, spec.scope) {
                        (Some(redis), Scope::Cluster) => redis.zone(spec),
                        _ => new_zone(spec),
                    }
                });
                let mut routes = RouteTable::build(&config.routes, |name| {
                    services.iter().position(|s| &*s.name == name)
                });
                routes.attach_zones(&by_name);
                let handles = Arc::new(metrics.handles(&services, &routes));
                ConfigParts {
                    config: config.clone(),
                    routes: Arc::new(routes),
                    zones: by_name.into_values().collect(),
                    handles,
                }
            }
        };
        let snapshot = Snapshot {
            generation,
            routes: parts.routes.clone(),
            services,
            idle_limits: registries.idle.compile(&config.services),
            listeners: config
                .listeners
                .iter()
                .map(|l| ListenerPolicy {
                    name: l.name.as_str().into(),
                    redirect_https: l.redirect_https,
                    https_port: l.https_port,
                    redirect_code: l.redirect_code,
                })
                .collect(),
            caps: config.limits.connections,
            zones: parts.zones.clone(),
            zone_keys: registries.zones.hasher(),
            handles: parts.handles.clone(),
            maintenance: compile_maintenance(&config, &book),
            book,
            addresses: registries.addresses.clone(),
            config,
        };
        registries.last = Some(parts);
        snapshot
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerPolicy> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| &*s.name == name)
    }

    /// A fresh step clock for `pool` of `service`: `now`, and the pool window's request total.
    pub fn step_clock(&self, service: &str, pool: &str, now: Instant) -> StepClock {
        StepClock {
            started: now,
            base_requests: self
                .pool(service, pool)
                .map_or(0, |p| p.window.total_requests()),
        }
    }

    /// Service `name`'s pool `pool`, by name.
    pub fn pool(&self, service: &str, pool: &str) -> Option<&crate::upstream::Pool> {
        let s = &self.services[self.service_index(service)?];
        s.pools.iter().find(|p| &*p.name == pool)
    }
}

/// The maintenance of each service of `config` (by index) that the book has on, with the paths
/// of the service's active checks, which stay open.
fn compile_maintenance(config: &Config, book: &Book) -> Vec<Option<Arc<Gate>>> {
    config
        .services
        .iter()
        .map(|s| {
            let m = book.maintenance.get(&s.name)?;
            let health = s
                .health
                .iter()
                .chain(s.pools.iter().filter_map(|p| p.health.as_ref()))
                .map(|h| h.path.split('?').next().unwrap_or("/").to_string())
                .collect();
            Some(Arc::new(Gate::new(m, health)))
        })
        .collect()
}

/// Every service of `config` with the book's weights and shields; pools keep their windows.
fn compile_services(
    config: &Config,
    book: &Book,
    servers: &mut ServerRegistry,
    addresses: &Addresses,
) -> Vec<Service> {
    let services = config
        .services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some(weights) = book.overrides.get(&s.name) {
                for pool in &mut s.pools {
                    if let Some(w) = weights.get(&pool.name) {
                        pool.weight = *w;
                    }
                }
            }
            let mut service = Service::build(&s, servers, addresses);
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
    servers.commit();
    services
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn config(pools: &[&str]) -> Arc<Config> {
        let mut text = String::from(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n",
        );
        for (i, pool) in pools.iter().enumerate() {
            text.push_str(&format!(
                "\n[services.api.pools.{pool}]\nweight = 1\nservers = [\"127.0.0.1:{}\"]\n",
                i + 2
            ));
        }
        Arc::new(crate::config::parse(&text, Path::new("test.toml")).expect("valid config"))
    }

    fn requests(snap: &Snapshot, pool: &str) -> Option<u64> {
        snap.pool("api", pool).map(|p| p.window.snapshot().requests)
    }

    #[test]
    fn windows_outlive_snapshots_but_not_their_pools() {
        let metrics = Metrics::new();
        let mut reg = Registries::default();
        let book = Arc::new(Book::default());
        let first = Snapshot::compile(
            config(&["blue", "green"]),
            1,
            book.clone(),
            &mut reg,
            &metrics,
        );
        for pool in &first.services[0].pools {
            pool.window
                .record(Instant::now(), Duration::from_millis(5), false);
        }
        assert_eq!(requests(&first, "blue"), Some(1));
        assert_eq!(requests(&first, "green"), Some(1));

        // A reload drops green and adds red, in a different order.
        let second = Snapshot::compile(config(&["red", "blue"]), 2, book, &mut reg, &metrics);
        let (blue_then, blue_now) = (
            first.pool("api", "blue").expect("blue"),
            second.pool("api", "blue").expect("blue"),
        );
        assert!(
            Arc::ptr_eq(&blue_then.window, &blue_now.window),
            "blue kept its window"
        );
        assert_eq!(requests(&second, "green"), None);
        assert_eq!(requests(&second, "red"), Some(0));
        // A request still on the first snapshot records into the same window.
        blue_then
            .window
            .record(Instant::now(), Duration::from_millis(5), false);
        assert_eq!(requests(&second, "blue"), Some(2));
    }

    #[test]
    fn a_weight_change_reuses_the_route_table_zones_and_handles() {
        let metrics = Metrics::new();
        let mut reg = Registries::default();
        let cfg = config(&["blue", "green"]);
        let first = Snapshot::compile(cfg.clone(), 1, Arc::default(), &mut reg, &metrics);
        let mut book = Book::default();
        book.overrides
            .entry("api".into())
            .or_default()
            .insert("green".into(), 0);
        let second = Snapshot::compile(cfg, 2, Arc::new(book), &mut reg, &metrics);
        assert!(Arc::ptr_eq(&first.routes, &second.routes));
        assert!(Arc::ptr_eq(&first.handles, &second.handles));
        assert!(Arc::ptr_eq(&first.zones, &second.zones));
        assert_eq!(second.pool("api", "green").map(|p| p.weight), Some(0));
        // A new config (a reload) compiles them afresh.
        let third = Snapshot::compile(
            config(&["blue", "green"]),
            3,
            Arc::default(),
            &mut reg,
            &metrics,
        );
        assert!(!Arc::ptr_eq(&second.routes, &third.routes));
    }
}
