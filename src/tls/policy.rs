//! The rustls server config of each TLS listener: built from `[tls]` with a crypto provider of its own, held in a cell (vendor patch 17) that a reload swaps for new handshakes.
//!
//! The session cache and the ticketer are the process's, shared by every listener and kept
//! across reloads while their settings stay, so sessions and tickets issued before a reload
//! still resume after it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::ServerConfig;

use crate::config::{ListenerConfig, TlsPolicy};

/// A listener's swappable config, as the patched pingora reads it at each handshake.
pub type ConfigCell = Arc<ArcSwap<ServerConfig>>;

/// Why a listener's TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("TLS listener \"{listener}\": {reason}")]
    Build { listener: String, reason: String },
}

/// The cells of the TLS listeners (by listener name, fixed at start like the sockets) and what
/// their configs share. Only the runtime's writer calls [`TlsConfigs::apply`].
pub struct TlsConfigs {
    cells: BTreeMap<String, ConfigCell>,
    resolver: Arc<dyn ResolvesServerCert>,
    shared: Mutex<Shared>,
}

impl fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigs")
            .field("listeners", &self.cells.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The session cache (by size) and the ticketer (by rotation) in use, reused while unchanged.
#[derive(Default)]
struct Shared {
    cache: Option<(usize, Arc<dyn StoresServerSessions>)>,
    ticketer: Option<(Duration, Arc<dyn ProducesTickets>)>,
    /// The fleet's ticket keys (empty unless the cluster service sets some).
    fleet_keys: Arc<super::ticketer::FleetKeys>,
}

impl Shared {
    fn cache(&mut self, size: usize) -> Arc<dyn StoresServerSessions> {
        if size == 0 {
            return Arc::new(NoServerSessionStorage {});
        }
        match &self.cache {
            Some((s, c)) if *s == size => c.clone(),
            _ => {
                let cache: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(size);
                self.cache = Some((size, cache.clone()));
                cache
            }
        }
    }

    fn ticketer(&mut self, rotation: Duration) -> Result<Arc<dyn ProducesTickets>, String> {
        match &self.ticketer {
            Some((r, t)) if *r == rotation => Ok(t.clone()),
            _ => {
                let t = super::ticketer::fleet(rotation, self.fleet_keys.clone())
                    .map_err(|e| e.to_string())?;
                self.ticketer = Some((rotation, t.clone()));
                Ok(t)
            }
        }
    }
}

impl TlsConfigs {
    /// The cells of `listeners`' TLS ones, filled from `policy`.
    pub fn new(
        policy: &TlsPolicy,
        listeners: &[ListenerConfig],
        resolver: Arc<dyn ResolvesServerCert>,
    ) -> Result<TlsConfigs, PolicyError> {
        let mut shared = Shared::default();
        let mut cells = BTreeMap::new();
        for l in listeners.iter().filter(|l| l.tls) {
            let config = build(policy, l.h2, &resolver, &mut shared).map_err(|reason| {
                PolicyError::Build {
                    listener: l.name.clone(),
                    reason,
                }
            })?;
            cells.insert(l.name.clone(), Arc::new(ArcSwap::from_pointee(config)));
        }
        Ok(TlsConfigs {
            cells,
            resolver,
            shared: Mutex::new(shared),
        })
    }

    /// The fleet's session-ticket keys, which the cluster service keeps in step with etcd.
    pub fn fleet_ticket_keys(&self) -> Arc<super::ticketer::FleetKeys> {
        self.shared.lock().fleet_keys.clone()
    }

    /// The cell of the TLS listener `name` (present for every TLS listener at start).
    pub fn cell(&self, name: &str) -> Option<ConfigCell> {
        self.cells.get(name).cloned()
    }

    /// New handshakes on every TLS listener known since start get `policy` (and the listener's
    /// current `h2`); a listener added since waits for a restart, as its socket does.
    pub fn apply(
        &self,
        policy: &TlsPolicy,
        listeners: &[ListenerConfig],
    ) -> Result<(), PolicyError> {
        let mut shared = self.shared.lock();
        let mut built = Vec::new();
        for l in listeners.iter().filter(|l| l.tls) {
            let Some(cell) = self.cells.get(&l.name) else {
                continue;
            };
            let config = build(policy, l.h2, &self.resolver, &mut shared).map_err(|reason| {
                PolicyError::Build {
                    listener: l.name.clone(),
                    reason,
                }
            })?;
            built.push((cell, config));
        }
        // All or nothing: no listener changes unless every one could be built.
        for (cell, config) in built {
            cell.store(Arc::new(config));
        }
        Ok(())
    }
}

/// One listener's rustls config.
fn build(
    policy: &TlsPolicy,
    h2: bool,
    resolver: &Arc<dyn ResolvesServerCert>,
    shared: &mut Shared,
) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(policy.provider())
        .with_protocol_versions(policy.versions())
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    // As pingora's `enable_h2()`: h2 preferred, HTTP/1.1 allowed; without h2, no ALPN at all.
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    config.session_storage = shared.cache(policy.session_cache);
    if policy.session_tickets {
        config.ticketer = shared.ticketer(policy.ticket_rotation)?;
    } else if policy.session_cache == 0 {
        // Neither tickets nor a cache: TLS 1.3 tickets would name sessions nobody keeps.
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(name: &str, h2: bool) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address: "127.0.0.1:0".parse().expect("addr"),
            tls: true,
            h2,
            h2c: false,
            redirect_https: false,
            https_port: 443,
            redirect_code: 308,
            proxy_protocol: false,
        }
    }

    #[test]
    fn apply_swaps_the_cells_and_keeps_the_ticketer() {
        let fallback = super::super::self_signed(&["x.test"]).expect("cert");
        let store = super::super::CertStore::new(super::super::CertMap::build(&[], fallback));
        let listeners = [listener("a", true), listener("b", false)];
        let configs =
            TlsConfigs::new(&TlsPolicy::default(), &listeners, store.resolver()).expect("build");
        let a = configs.cell("a").expect("cell a");
        let before = a.load_full();
        assert_eq!(before.alpn_protocols.len(), 2);
        assert!(configs
            .cell("b")
            .expect("b")
            .load()
            .alpn_protocols
            .is_empty());
        let policy = TlsPolicy {
            min_version: crate::config::TlsVersion::Tls13,
            ..TlsPolicy::default()
        };
        configs.apply(&policy, &listeners).expect("apply");
        let after = a.load_full();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(Arc::ptr_eq(&before.ticketer, &after.ticketer), "same keys");
        assert!(after.ticketer.enabled());
    }
}
