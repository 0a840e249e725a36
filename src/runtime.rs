//! The state every part of the process shares: the one snapshot swap, server states, certificates, reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::access_log::AccessLog;
use crate::config::{self, Config, ConfigErrors};
use crate::limits::conn::ConnLimits;
use crate::limits::ZoneRegistry;
use crate::metrics::Metrics;
use crate::rollout::{Event, Rollouts, StepClock, Windows};
use crate::snapshot::{effective_overrides, Snapshot};
use crate::state::{Overrides, StateError, StateStore};
use crate::tls::{CertMap, CertStore};
use crate::upstream::ServerRegistry;

/// Owned by the server; handed to every listener's proxy, the admin API and background services.
pub struct Runtime {
    /// The one ArcSwap: each request loads it once; a change stores a whole new snapshot.
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: ServerRegistry,
    pub certs: Arc<CertStore>,
    pub access_log: AccessLog,
    /// Every Prometheus metric; `metrics::render` turns them into the `/metrics` text.
    pub metrics: Metrics,
    /// ACME challenges, certificate statuses and renewal requests (`acme::AcmeManager` orders).
    pub acme: Arc<crate::acme::AcmeState>,
    /// Rate-limit zones by name, kept across reloads while their spec is unchanged.
    pub zones: ZoneRegistry,
    /// Open client connections and their caps.
    pub connections: Arc<ConnLimits>,
    /// Each pool's live window of requests, errors and latencies, kept across snapshots by name.
    pub windows: Windows,
    /// Requests between `new_ctx` and the end of `logging`: what a drain waits for.
    in_flight: Arc<AtomicUsize>,
    config_path: PathBuf,
    generated_fallback: Arc<CertifiedKey>,
    generation: AtomicU64,
    store: Option<StateStore>,
    /// The writer lock: reload, admin changes and rollout ticks take it, so generations stay in
    /// order and a change is persisted before its snapshot is published.
    writer: parking_lot::Mutex<Book>,
}

/// What runtime changes write: the weight overrides and the rollouts that own some of them.
/// Persisted together in `state.json`, compiled together into each snapshot.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub overrides: Overrides,
    pub rollouts: Rollouts,
}

/// Why a runtime change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("the new state could not be saved, nothing changed: {0}")]
    Persist(#[from] StateError),
}

impl Runtime {
    /// Builds the runtime from a validated config and the persisted overrides (if a store is given).
    pub fn new(
        config: Config,
        config_path: PathBuf,
        generated_fallback: Arc<CertifiedKey>,
        access_log: AccessLog,
        store: Option<StateStore>,
    ) -> Result<Arc<Runtime>, StateError> {
        let saved = match &store {
            Some(s) => s.load()?,
            None => Default::default(),
        };
        let (overrides, dropped) = effective_overrides(&config, &saved.weights);
        for d in dropped {
            log::warn!("dropping a saved weight override: {d}");
        }
        let mut book = Book {
            overrides,
            rollouts: saved.rollouts,
        };
        let resumed = crate::rollout::service::resume_after_restart(&config, &mut book);
        let registry = ServerRegistry::default();
        let certs = CertStore::new(CertMap::build(
            &config.certificates,
            generated_fallback.clone(),
        ));
        let zones = ZoneRegistry::default();
        let metrics = Metrics::new();
        let acme = crate::acme::AcmeState::new(metrics.registry());
        let connections = Arc::new(ConnLimits::default());
        connections.set_caps(config.limits.connections);
        let resolved = zones.resolve(&config.limits.zones);
        let snapshot = Snapshot::compile(Arc::new(config), 1, &registry, &book, &resolved);
        let windows = Windows::new();
        windows.resolve(&snapshot);
        for event in &resumed {
            crate::rollout::service::log_event(event);
        }
        Ok(Arc::new(Runtime {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            certs,
            access_log,
            metrics,
            acme,
            zones,
            connections,
            windows,
            in_flight: Arc::default(),
            config_path,
            generated_fallback,
            generation: AtomicU64::new(1),
            store,
            writer: parking_lot::Mutex::new(book),
        }))
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

    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// The runtime weight overrides in force.
    pub fn overrides(&self) -> Overrides {
        self.writer.lock().overrides.clone()
    }

    /// Reads the rollouts under the writer lock (keep `f` short).
    pub fn with_rollouts<T>(&self, f: impl FnOnce(&Rollouts) -> T) -> T {
        f(&self.writer.lock().rollouts)
    }

    /// Re-reads the config file. On error nothing changes and every error is returned.
    /// Runtime weight overrides survive; those that no longer fit the config are dropped.
    /// Every outcome is counted in `switchyard_config_reloads_total`.
    pub fn reload(&self) -> Result<u64, ConfigErrors> {
        let result = self.load_and_publish();
        self.metrics.record_reload(result.is_ok());
        result
    }

    fn load_and_publish(&self) -> Result<u64, ConfigErrors> {
        let config = config::load(&self.config_path)?;
        let mut book = self.writer.lock();
        let old = self.snapshot.load();
        for (old_l, new_l) in old.config.listeners.iter().zip(&config.listeners) {
            if old_l.address != new_l.address || old_l.tls != new_l.tls {
                log::warn!(
                    "listener \"{}\" changed address or TLS; that takes a restart or binary upgrade",
                    new_l.name
                );
            }
        }
        let (kept, dropped) = effective_overrides(&config, &book.overrides);
        let ended = crate::rollout::service::end_orphans(&config, &mut book.rollouts);
        if !dropped.is_empty() || !ended.is_empty() {
            for d in &dropped {
                log::warn!("dropping a weight override at reload: {d}");
            }
            book.overrides = kept;
            self.persist(&book);
        }
        for event in &ended {
            self.note_event(event);
        }
        self.certs.swap(CertMap::build(
            &config.certificates,
            self.generated_fallback.clone(),
        ));
        Ok(self.publish(Arc::new(config), &book))
    }

    /// Saves the book, logging a failure (for changes that must go ahead anyway: a reload, a
    /// rollback). Changes that can be refused use [`Runtime::change`], which refuses instead.
    fn persist(&self, book: &Book) {
        if let Some(store) = &self.store {
            if let Err(e) = store.save(&book.overrides, &book.rollouts) {
                // A rollout tick may hit this every 100 ms while the disk is full.
                crate::lograte::error("state-save", format_args!("{e}"));
            }
        }
    }

    /// Logs a rollout transition and counts it in the metrics.
    pub fn note_event(&self, event: &Event) {
        crate::rollout::service::log_event(event);
        self.metrics.record_rollout_event(event);
    }

    /// Changes the book: `change` sees the current snapshot and a copy of the book under the
    /// writer lock and may refuse; the new book is persisted first, then published as a new
    /// snapshot. Events `change` returns are logged and counted once the change holds.
    /// Returns the new generation and what `change` returned.
    pub fn change<T, E: From<ChangeError>>(
        &self,
        change: impl FnOnce(&Snapshot, &mut Book) -> Result<(T, Vec<Event>), E>,
    ) -> Result<(u64, T), E> {
        let mut book = self.writer.lock();
        let current = self.snapshot.load_full();
        let mut proposed = book.clone();
        let (value, events) = change(&current, &mut proposed)?;
        if let Some(store) = &self.store {
            store
                .save(&proposed.overrides, &proposed.rollouts)
                .map_err(|e| E::from(ChangeError::Persist(e)))?;
        }
        *book = proposed;
        let generation = self.publish(current.config.clone(), &book);
        drop(book);
        for event in &events {
            self.note_event(event);
        }
        Ok((generation, value))
    }

    /// One look at every active rollout (the rollout service calls it every tick): judges each
    /// canary on its live window and applies what was decided. A rollback or promotion goes
    /// ahead even if the state file cannot be written (logged): safety first.
    pub fn tick_rollouts(&self, now: std::time::Instant) {
        let mut book = self.writer.lock();
        if book.rollouts.all_active().next().is_none() {
            return;
        }
        let current = self.snapshot.load_full();
        let outcome = crate::rollout::service::tick(&current, &mut book, &self.windows, now);
        if outcome.publish {
            self.persist(&book);
            self.publish(current.config.clone(), &book);
        }
        drop(book);
        for event in &outcome.events {
            self.note_event(event);
        }
    }

    /// A fresh step clock for `pool` of `service`: now, and the pool window's request total.
    pub fn step_clock(&self, service: &str, pool: &str) -> StepClock {
        StepClock {
            started: std::time::Instant::now(),
            base_requests: self
                .windows
                .get(service, pool)
                .map_or(0, |w| w.total_requests()),
        }
    }

    /// Compiles and swaps in a new snapshot; the caller holds the writer lock.
    fn publish(&self, config: Arc<Config>, book: &Book) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let zones = self.zones.resolve(&config.limits.zones);
        self.connections.set_caps(config.limits.connections);
        let snapshot = Snapshot::compile(config, generation, &self.registry, book, &zones);
        // Before the store: requests on the new snapshot find their windows' table ready.
        self.windows.resolve(&snapshot);
        self.snapshot.store(Arc::new(snapshot));
        generation
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
