//! Everything a request needs, compiled from the config into one immutable value and swapped as a whole.

use std::sync::Arc;

use crate::config::Config;
use crate::routing::RouteTable;
use crate::upstream::{ServerRegistry, Service};

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
    /// Compiles a validated config. Cannot fail: everything was checked by `config::validate`.
    pub fn compile(config: Arc<Config>, generation: u64, registry: &ServerRegistry) -> Snapshot {
        let services: Vec<Service> = config
            .services
            .iter()
            .map(|s| Service::build(s, registry))
            .collect();
        let routes = RouteTable::build(&config.routes, |name| {
            services.iter().position(|s| &*s.name == name)
        });
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
