//! The state every part of the process shares: the one snapshot swap, server states, certificates, reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::access_log::AccessLog;
use crate::config::{self, Config, ConfigErrors};
use crate::snapshot::Snapshot;
use crate::tls::{CertMap, CertStore};
use crate::upstream::ServerRegistry;

/// Owned by the server; handed to every listener's proxy and to background services.
pub struct Runtime {
    /// The one ArcSwap: each request loads it once; a change stores a whole new snapshot.
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: ServerRegistry,
    pub certs: Arc<CertStore>,
    pub access_log: AccessLog,
    /// Requests between `new_ctx` and the end of `logging`: what a drain waits for.
    in_flight: Arc<AtomicUsize>,
    config_path: PathBuf,
    generated_fallback: Arc<CertifiedKey>,
    generation: AtomicU64,
    /// Serializes writers (reload today, admin API next) so generations stay in order.
    write_lock: parking_lot::Mutex<()>,
}

impl Runtime {
    pub fn new(
        config: Config,
        config_path: PathBuf,
        generated_fallback: Arc<CertifiedKey>,
        access_log: AccessLog,
    ) -> Arc<Runtime> {
        let registry = ServerRegistry::default();
        let certs = CertStore::new(CertMap::build(
            &config.certificates,
            generated_fallback.clone(),
        ));
        let snapshot = Snapshot::compile(Arc::new(config), 1, &registry);
        Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            certs,
            access_log,
            in_flight: Arc::default(),
            config_path,
            generated_fallback,
            generation: AtomicU64::new(1),
            write_lock: parking_lot::Mutex::new(()),
        })
    }

    /// Counts one request in flight until the returned guard is dropped.
    pub fn begin_request(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Re-reads the config file. On error nothing changes and every error is returned.
    pub fn reload(&self) -> Result<u64, ConfigErrors> {
        let config = config::load(&self.config_path)?;
        let _writer = self.write_lock.lock();
        let old = self.snapshot.load();
        for (old_l, new_l) in old.config.listeners.iter().zip(&config.listeners) {
            if old_l.address != new_l.address || old_l.tls != new_l.tls {
                log::warn!(
                    "listener \"{}\" changed address or TLS; that takes a restart or binary upgrade",
                    new_l.name
                );
            }
        }
        self.certs.swap(CertMap::build(
            &config.certificates,
            self.generated_fallback.clone(),
        ));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let snapshot = Snapshot::compile(Arc::new(config), generation, &self.registry);
        self.snapshot.store(Arc::new(snapshot));
        Ok(generation)
    }
}

/// One request in flight; dropping it (with the request's context) ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
