//! The store: the one snapshot swap, the one writer that compiles, persists and publishes it, and the watch that announces it.
//!
//! Readers (the request path, admin views, `/metrics`, background services) read the published
//! snapshot and never take the writer lock, so a scrape never waits behind a state-file fsync.
//! Writers (reload, admin changes, rollout decisions, ACME certificates) take the writer lock,
//! which also owns every registry kept by name (server states, pool windows, zones, certificate
//! sources): they are plain data used only while compiling.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

mod fleet;
mod traffic;
mod windows;

pub use fleet::{ClusterStatus, Fleet, FleetError};
pub use traffic::{TrafficHistory, STEP as TRAFFIC_STEP};
pub use windows::{FleetWindows, PoolCounts, Publication, PUBLISH_EVERY};

use crate::access_log::AccessLog;
use crate::book::{self, effective_overrides, Book};
use crate::config::{self, Config, ConfigErrors};
use crate::limits::conn::ConnLimits;
use crate::metrics::Metrics;
use crate::redis_limits::{RedisError, RedisLimits};
use crate::rollout::Event;
use crate::snapshot::{Registries, Snapshot};
use crate::state::{ServiceRecord, StateError, StateStore};
use crate::tls::{CertMap, CertSources, CertStore, PolicyError, TlsConfigs};
use crate::upstream::Addresses;

/// Owned by the server; handed to the proxy, the admin API and background services.
pub struct Runtime {
    /// The one snapshot swap: each request loads it once; a change stores a whole new snapshot.
    snapshot: SnapshotCell,
    /// The writer lock: reload, admin changes, rollout decisions and ACME certificates take it,
    /// so generations stay in order and a change is persisted before its snapshot is published.
    writer: parking_lot::Mutex<Writer>,
    /// Every published snapshot, for background services that react to a new generation.
    published: watch::Sender<Arc<Snapshot>>,
    /// The certificates by SNI that TLS handshakes read (written only under the writer lock).
    pub certs: Arc<CertStore>,
    /// Each TLS listener's rustls config (versions, suites, groups, resumption) in a cell the
    /// patched pingora reads at every handshake; the writer swaps them at reload.
    pub tls: TlsConfigs,
    pub access_log: AccessLog,
    /// Finished requests' spans for the OTLP exporter (filled only while `[tracing] otlp_endpoint` is set).
    pub spans: crate::otlp::SpanQueue,
    /// Every Prometheus metric; `scrape::render` turns them into the `/metrics` text.
    pub metrics: Metrics,
    /// Open client connections (the counts; the caps are in the snapshot).
    pub connections: Arc<ConnLimits>,
    /// Each pool's requests over the last minutes, sampled by a background service.
    pub traffic: TrafficHistory,
    /// The fleet this node belongs to (`[cluster]`), as the cluster service reports it.
    pub cluster: ClusterStatus,
    /// Requests between `new_ctx` and the end of `logging`: what a drain waits for.
    in_flight: Arc<AtomicUsize>,
    config_path: PathBuf,
    store: Option<StateStore>,
}

/// What only the writer touches.
struct Writer {
    book: Arc<Book>,
    registries: Registries,
    certs: CertSources,
    generated_fallback: Arc<CertifiedKey>,
    /// The snapshot last published.
    current: Arc<Snapshot>,
    /// Whether the registries hold the affinity key kept in the state directory.
    affinity_key_kept: bool,
}

/// The `ArcSwap` holding the snapshot. Debug builds count the loads, so a test can prove that a
/// request makes exactly one (`switchyard_debug_snapshot_loads_total` in `/metrics`).
struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    #[cfg(debug_assertions)]
    loads: std::sync::atomic::AtomicU64,
}

impl SnapshotCell {
    fn load(&self) -> Arc<Snapshot> {
        #[cfg(debug_assertions)]
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.current.load_full()
    }
}

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tls(#[from] PolicyError),
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Why a runtime change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("the new state could not be saved, nothing changed: {0}")]
    Persist(#[from] StateError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

impl Runtime {
    /// Builds the runtime from a validated config and the persisted book (if a store is given).
    pub fn new(
        config: Config,
        config_path: PathBuf,
        generated_fallback: Arc<CertifiedKey>,
        access_log: AccessLog,
        store: Option<StateStore>,
    ) -> Result<Arc<Runtime>, StartError> {
        let saved = match &store {
            Some(s) => s.load()?,
            None => Default::default(),
        };
        let (overrides, dropped) = effective_overrides(&config, &saved.weights);
        for d in dropped {
            log::warn!("dropping a saved weight override: {d}");
        }
        let mut maintenance = saved.maintenance;
        maintenance.retain(|service, m| match m.check() {
            Ok(()) => true,
            Err(e) => {
                log::warn!("dropping the saved maintenance of service \"{service}\": {e}");
                false
            }
        });
        for d in book::drop_gone_maintenance(&config, &mut maintenance) {
            log::warn!("dropping a saved {d}");
        }
        let mut book = Book {
            overrides,
            rollouts: saved.rollouts,
            maintenance,
            revisions: Default::default(),
        };
        let resumed = book::resume_after_restart(&config, &mut book);
        let cluster = ClusterStatus::default();
        if config.cluster.is_some() {
            cluster.enable("joining the fleet: etcd not reached yet");
        }
        let certs = CertSources::new(CertMap::build(
            &config.certificates,
            generated_fallback.clone(),
        ));
        let metrics = Metrics::new();
        let mut registries = Registries::default();
        if let Some(c) = &config.cluster {
            registries.redis = RedisLimits::new(c)?;
            if let Some(redis) = &registries.redis {
                cluster.attach_redis(redis.clone());
            }
        }
        let mut affinity_key_kept = false;
        keep_affinity_key(&config, &mut registries, &mut affinity_key_kept);
        let book = Arc::new(book);
        let snapshot = Arc::new(Snapshot::compile(
            Arc::new(config),
            1,
            book.clone(),
            &mut registries,
            &metrics,
        ));
        for event in &resumed {
            book::log_event(event);
        }
        let (published, _) = watch::channel(snapshot.clone());
        let cert_store = CertStore::new(certs.build());
        let tls = TlsConfigs::new(
            &snapshot.config.tls,
            &snapshot.config.listeners,
            cert_store.resolver(),
        )?;
        Ok(Arc::new(Runtime {
            tls,
            snapshot: SnapshotCell {
                current: ArcSwap::new(snapshot.clone()),
                #[cfg(debug_assertions)]
                loads: Default::default(),
            },
            certs: cert_store,
            writer: parking_lot::Mutex::new(Writer {
                book,
                registries,
                certs,
                generated_fallback,
                current: snapshot,
                affinity_key_kept,
            }),
            published,
            spans: Default::default(),
            access_log,
            metrics,
            connections: Arc::default(),
            cluster,
            traffic: TrafficHistory::default(),
            in_flight: Arc::default(),
            config_path,
            store,
        }))
    }

    /// The snapshot in force: one `ArcSwap` load. The request path calls it once per request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }

    /// Snapshot loads so far (debug builds; 0 in release builds).
    pub fn snapshot_loads(&self) -> u64 {
        #[cfg(debug_assertions)]
        return self.snapshot.loads.load(Ordering::Relaxed);
        #[cfg(not(debug_assertions))]
        0
    }

    /// A receiver that sees every snapshot published from now on (and holds the current one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
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

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        let mut text = crate::scrape::render(
            &self.metrics,
            &self.snapshot(),
            self.in_flight(),
            &self.connections,
        );
        if cfg!(debug_assertions) {
            text.push_str(&format!(
                "# HELP switchyard_debug_snapshot_loads_total Snapshot loads (debug builds only).\n\
                 # TYPE switchyard_debug_snapshot_loads_total counter\n\
                 switchyard_debug_snapshot_loads_total {}\n",
                self.snapshot_loads()
            ));
        }
        self.cluster.render_metrics(&mut text);
        text
    }

    /// Re-reads the config file. On error nothing changes and every error is returned.
    /// Runtime weight overrides survive; those that no longer fit the config are dropped.
    /// Every outcome is counted in `switchyard_config_reloads_total` and logged, with `via`
    /// saying who asked (empty for SIGHUP, " via the admin API (PEER)").
    pub fn reload(&self, via: &str) -> Result<Arc<Snapshot>, ConfigErrors> {
        let result = self.load_and_publish();
        self.metrics.record_reload(result.is_ok());
        let path = self.config_path.display().to_string();
        let by = match via.trim() {
            "" => "SIGHUP",
            v => v.trim_start_matches("via "),
        };
        match &result {
            Ok(snap) => {
                crate::logging::set_format(snap.config.server.log_format);
                tracing::info!(
                    event = "reload",
                    result = "ok",
                    path,
                    by,
                    generation = snap.generation,
                    "reloaded {path}{via}: {} (generation {})",
                    snap.config.summary(),
                    snap.generation
                );
            }
            Err(errors) => {
                let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                tracing::error!(
                    event = "reload",
                    result = "rejected",
                    path,
                    by,
                    errors = ?all,
                    "reload{via} rejected, the previous config keeps serving; {} error(s):",
                    errors.0.len()
                );
                for e in &errors.0 {
                    log::error!("{e}");
                }
            }
        }
        result
    }

    fn load_and_publish(&self) -> Result<Arc<Snapshot>, ConfigErrors> {
        let config = config::load(&self.config_path)?;
        let mut w = self.writer.lock();
        for (old_l, new_l) in w.current.config.listeners.iter().zip(&config.listeners) {
            if old_l.address != new_l.address || old_l.tls != new_l.tls {
                log::warn!(
                    "listener \"{}\" changed address or TLS; that takes a restart or binary upgrade",
                    new_l.name
                );
            }
        }
        let mut book = (*w.book).clone();
        let (kept, dropped) = effective_overrides(&config, &book.overrides);
        let ended = book::end_orphans(&config, &mut book.rollouts);
        let gone = book::drop_gone_maintenance(&config, &mut book.maintenance);
        if !dropped.is_empty() || !ended.is_empty() || !gone.is_empty() {
            for d in &dropped {
                log::warn!("dropping a weight override at reload: {d}");
            }
            for d in &gone {
                log::warn!("dropping at reload the {d}");
            }
            book.overrides = kept;
            self.persist(&book);
        }
        w.book = Arc::new(book);
        let Writer {
            registries,
            affinity_key_kept,
            ..
        } = &mut *w;
        keep_affinity_key(&config, registries, affinity_key_kept);
        w.certs.configured = CertMap::build(&config.certificates, w.generated_fallback.clone());
        self.certs.store(w.certs.build());
        // New handshakes get the new `[tls]` policy (validated: building it does not fail).
        if let Err(e) = self.tls.apply(&config.tls, &config.listeners) {
            log::error!("reload: the TLS policy was kept: {e}");
        }
        let published = self.publish(&mut w, Arc::new(config));
        drop(w);
        for event in &ended {
            self.note_event(event);
        }
        Ok(published)
    }

    /// Saves the book, logging a failure (for changes that must go ahead anyway: a reload, a
    /// rollback). Changes that can be refused use [`Runtime::change`], which refuses instead.
    fn persist(&self, book: &Book) {
        if let Some(store) = &self.store {
            if let Err(e) = store.save_book(book) {
                // A rollout tick may hit this every 100 ms while the disk is full.
                crate::lograte::error("state-save", format_args!("{e}"));
            }
        }
    }

    /// Logs a rollout transition and counts it in the metrics.
    pub fn note_event(&self, event: &Event) {
        book::log_event(event);
        self.metrics.record_rollout_event(event);
    }

    /// Changes the book: `change` sees the current snapshot and a copy of the book under the
    /// writer lock and may refuse; the new book is persisted first, then published as a new
    /// snapshot. Events `change` returns are logged and counted once the change holds.
    /// Returns the snapshot published (answers and ETags come from exactly that generation) and
    /// what `change` returned.
    pub fn change<T, E: From<ChangeError>>(
        &self,
        change: impl FnOnce(&Snapshot, &mut Book) -> Result<(T, Vec<Event>), E>,
    ) -> Result<(Arc<Snapshot>, T), E> {
        let mut w = self.writer.lock();
        let mut proposed = (*w.book).clone();
        let (value, events) = change(&w.current, &mut proposed)?;
        if self.cluster.enabled() {
            // In a fleet the change holds once etcd has it; the state file is this node's cache.
            self.write_fleet(&w.book, &mut proposed)
                .map_err(|e| E::from(ChangeError::Fleet(e)))?;
            self.persist(&proposed);
        } else if let Some(store) = &self.store {
            store
                .save_book(&proposed)
                .map_err(|e| E::from(ChangeError::Persist(e)))?;
        }
        w.book = Arc::new(proposed);
        let config = w.current.config.clone();
        let published = self.publish(&mut w, config);
        drop(w);
        for event in &events {
            self.note_event(event);
        }
        Ok((published, value))
    }

    /// One look at every active rollout of `snap` (the rollout service calls it every tick):
    /// judges each canary on its live window and applies what was decided. Most ticks decide
    /// nothing and take no lock; a decision is made again under the writer lock and published.
    /// A rollback or promotion goes ahead even if the state file cannot be written (logged):
    /// safety first.
    ///
    /// In a fleet only the leader decides, on the fleet's sum: its own window plus every other
    /// live node's latest published counts ([`FleetWindows`]). A decision holds once etcd has it
    /// (a step or a promotion that cannot be written is decided again at the next tick). A node
    /// cut off from etcd still rolls a bad canary back on its own window, never anything else.
    pub fn tick_rollouts(&self, snap: &Snapshot, now: Instant) {
        if snap.book.rollouts.all_active().next().is_none() {
            return;
        }
        let in_fleet = self.cluster.enabled();
        let cut_off = in_fleet && self.cluster.degraded().is_some();
        if in_fleet && !cut_off && !self.cluster.is_leader() {
            return;
        }
        let figures = |services: &[crate::upstream::Service], r: &crate::rollout::Rollout| {
            if in_fleet && !cut_off {
                self.cluster.windows.canary(services, r, now)
            } else {
                book::local_canary(services, r)
            }
        };
        let mut probe = (*snap.book).clone();
        let outcome = book::tick(&snap.services, &mut probe, now, |r| {
            figures(&snap.services, r)
        });
        if !outcome.publish && outcome.events.is_empty() {
            return;
        }
        let mut w = self.writer.lock();
        let mut book = (*w.book).clone();
        let current = w.current.clone();
        let mut outcome = book::tick(&current.services, &mut book, now, |r| {
            figures(&current.services, r)
        });
        if in_fleet {
            let rolled_back: Vec<String> = outcome
                .events
                .iter()
                .filter(|e| e.event == crate::rollout::EventKind::RolledBack)
                .map(|e| e.service.clone())
                .collect();
            let mut undone = Vec::new();
            for service in crate::state::changed_services(&w.book, &book) {
                let written = if cut_off {
                    Err(FleetError::Unavailable(String::new()))
                } else {
                    self.write_one(&w.book, &mut book, &service)
                };
                if let Err(e) = written {
                    if rolled_back.contains(&service) {
                        if !cut_off {
                            log::error!("rollout of service \"{service}\": the rollback holds on this node but etcd did not take it: {e}");
                        }
                        let made_on = w.book.revisions.get(&service).copied().unwrap_or(0);
                        self.cluster
                            .unwritten_rollbacks
                            .lock()
                            .insert(service.clone(), made_on);
                    } else {
                        ServiceRecord::of(&w.book, &service).apply(&mut book, &service);
                        undone.push(service);
                    }
                }
            }
            outcome.events.retain(|e| !undone.contains(&e.service));
            outcome.publish = outcome.publish && !outcome.events.is_empty();
        }
        if outcome.publish || !outcome.events.is_empty() {
            if outcome.publish {
                self.persist(&book);
            }
            w.book = Arc::new(book);
            let config = w.current.config.clone();
            self.publish(&mut w, config);
        }
        drop(w);
        for event in &outcome.events {
            self.note_event(event);
        }
    }

    /// Once the node has rejoined the fleet (the cluster service calls it after listing): each
    /// rollback this node made alone while etcd did not take it is written to the fleet, so the
    /// bad canary it saw goes off every node, unless the fleet's entry moved on meanwhile (then
    /// the fleet's entry, already applied by the listing, wins).
    pub fn push_rollbacks(&self) {
        let pending = std::mem::take(&mut *self.cluster.unwritten_rollbacks.lock());
        if pending.is_empty() {
            return;
        }
        let mut w = self.writer.lock();
        let mut book = (*w.book).clone();
        let mut pushed = false;
        for (service, made_on) in pending {
            let now = book.revisions.get(&service).copied().unwrap_or(0);
            if now != made_on {
                log::warn!("rollout of service \"{service}\": this node's rollback made while cut off from etcd is dropped: the fleet's entry changed meanwhile (revision {made_on} → {now}) and wins");
                continue;
            }
            match self.write_one(&w.book, &mut book, &service) {
                Ok(()) => {
                    pushed = true;
                    log::warn!("rollout of service \"{service}\": the rollback this node made while cut off from etcd now holds in the fleet");
                }
                Err(e) => {
                    log::error!("rollout of service \"{service}\": the rollback this node made while cut off from etcd was not written: {e}");
                    if matches!(e, FleetError::Unavailable(_)) {
                        self.cluster
                            .unwritten_rollbacks
                            .lock()
                            .insert(service, made_on);
                    }
                }
            }
        }
        if pushed {
            self.persist(&book);
            w.book = Arc::new(book);
            let config = w.current.config.clone();
            self.publish(&mut w, config);
        }
    }

    /// Writes every service whose entry differs between `old` and `new` to the fleet, recording
    /// the new revisions in `new`. Refused while the node is not joined.
    fn write_fleet(&self, old: &Book, new: &mut Book) -> Result<(), FleetError> {
        if let Some(reason) = self.cluster.degraded() {
            return Err(FleetError::Unavailable(reason));
        }
        for service in crate::state::changed_services(old, new) {
            self.write_one(old, new, &service)?;
        }
        Ok(())
    }

    fn write_one(&self, old: &Book, new: &mut Book, service: &str) -> Result<(), FleetError> {
        let fleet = self
            .cluster
            .fleet()
            .ok_or_else(|| FleetError::Unavailable("not joined yet".into()))?;
        let expected = old.revisions.get(service).copied().unwrap_or(0);
        let record = ServiceRecord::of(new, service).to_bytes();
        let revision = fleet.write(service, &record, expected)?;
        new.revisions.insert(service.to_string(), revision);
        Ok(())
    }

    /// Applies the fleet's entries (service, entry or `None` once deleted, revision) from the
    /// cluster service's listing (`full`: every entry, so services without one are cleared) or
    /// its watch (entries not newer than what this node has are skipped). An entry that names a
    /// service or pool this node's config lacks is ignored here, with a warning, and flagged in
    /// `GET /v1/cluster`. Publishes one snapshot if anything changed.
    pub fn apply_fleet(&self, entries: Vec<(String, Option<Vec<u8>>, u64)>, full: bool) {
        let mut w = self.writer.lock();
        let mut book = (*w.book).clone();
        let mut changed = false;
        let mut listed = std::collections::BTreeSet::new();
        for (service, bytes, revision) in entries {
            listed.insert(service.clone());
            let known = book.revisions.get(&service).copied();
            if known.is_some_and(|k| k >= revision) {
                continue;
            }
            book.revisions.insert(service.clone(), revision);
            changed = true;
            let record = match bytes.as_deref().map(ServiceRecord::from_bytes) {
                None => ServiceRecord::default(),
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    let why = format!("its entry (revision {revision}) is not readable: {e}");
                    log::warn!("cluster: ignoring service \"{service}\": {why}");
                    self.cluster.set_ignored(&service, Some(why));
                    continue;
                }
            };
            if let Err(why) = fleet::fits(&w.current, &service, &record) {
                log::warn!("cluster: ignoring the fleet's entry for service \"{service}\" (revision {revision}): {why}");
                self.cluster.set_ignored(&service, Some(why));
                continue;
            }
            self.cluster.set_ignored(&service, None);
            let record = fleet::keep_clock(&w.current, &book, &service, record);
            record.apply(&mut book, &service);
        }
        if full {
            let stale: Vec<String> = book
                .revisions
                .keys()
                .chain(book.overrides.keys())
                .chain(book.maintenance.keys())
                .chain(book.rollouts.services.keys())
                .filter(|s| !listed.contains(*s))
                .cloned()
                .collect();
            for service in stale {
                ServiceRecord::default().apply(&mut book, &service);
                book.revisions.remove(&service);
                self.cluster.set_ignored(&service, None);
                changed = true;
            }
        }
        if changed {
            self.persist(&book);
            w.book = Arc::new(book);
            let config = w.current.config.clone();
            self.publish(&mut w, config);
        }
    }

    /// Serves `key` for `names` under ACME certificate `id` (or stops serving `id` when `key` is
    /// `None`); handshakes already running keep the old key.
    pub fn set_acme_cert(&self, id: &str, names: &[String], key: Option<Arc<CertifiedKey>>) {
        let mut w = self.writer.lock();
        w.certs.set_acme(id, names, key);
        self.certs.store(w.certs.build());
    }

    /// Staples an OCSP `response` to the certificate whose leaf (DER) is `leaf`, or stops
    /// stapling it (`None`); new handshakes get it.
    pub fn set_ocsp_staple(&self, leaf: &[u8], response: Option<Vec<u8>>) {
        let mut w = self.writer.lock();
        w.certs.set_staple(leaf, response);
        self.certs.store(w.certs.build());
    }

    /// Applies the resolver service's news: `update` changes the name table under the writer
    /// lock and says whether anything changed; if so a new snapshot with the new addresses is
    /// published (new addresses take requests, vanished ones get no new ones).
    pub fn update_addresses(&self, update: impl FnOnce(&mut Addresses) -> bool) {
        let mut w = self.writer.lock();
        let mut table = (*w.registries.addresses).clone();
        if update(&mut table) {
            w.registries.addresses = Arc::new(table);
            let config = w.current.config.clone();
            self.publish(&mut w, config);
        }
    }

    /// Compiles and swaps in a new snapshot of `config` and the writer's book, and announces it.
    fn publish(&self, w: &mut Writer, config: Arc<Config>) -> Arc<Snapshot> {
        let generation = w.current.generation + 1;
        let snapshot = Arc::new(Snapshot::compile(
            config,
            generation,
            w.book.clone(),
            &mut w.registries,
            &self.metrics,
        ));
        self.snapshot.current.store(snapshot.clone());
        w.current = snapshot.clone();
        self.published.send_replace(snapshot.clone());
        snapshot
    }
}

/// Gives the registries the affinity key kept in the state directory the first time a config
/// needs it (a service with affinity and no secret of its own), so that a client's cookie stays
/// good across restarts. When the key cannot be kept, the process's own random key serves
/// (cookies then last until the process ends; logged).
fn keep_affinity_key(config: &Config, registries: &mut Registries, kept: &mut bool) {
    let needed = config
        .services
        .iter()
        .any(|s| s.affinity.as_ref().is_some_and(|a| a.secret.is_none()));
    if !needed || *kept {
        return;
    }
    *kept = true;
    match crate::state::affinity_key(&config.server.state_dir) {
        Ok(key) => {
            registries.servers.affinity_key = crate::upstream::affinity::AffinityKey::new(&key)
        }
        Err(e) => log::error!(
            "affinity cookies will not outlive this process: {e}; fix it or set a secret in [services.NAME.affinity]"
        ),
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

/// Service "api" with pools blue (weight 100, server 127.0.0.1:2) and green (0, 127.0.0.1:3)
/// behind a plain listener: the config of unit tests that need a runtime.
#[cfg(test)]
pub const TEST_CONFIG: &str = r#"
[[listeners]]
name = "http"
address = "127.0.0.1:1"

[[routes]]
host = "*"
service = "api"

[services.api.pools.blue]
weight = 100
servers = ["127.0.0.1:2"]

[services.api.pools.green]
weight = 0
servers = ["127.0.0.1:3"]
"#;

#[cfg(test)]
impl Runtime {
    /// A runtime for unit tests from config text (its file path does not exist), with a
    /// self-signed fallback certificate, the access log off and no state directory.
    pub fn for_tests(config: &str) -> Arc<Runtime> {
        let path = std::path::Path::new("/nonexistent/switchyard.toml");
        let config = config::parse(config, path).expect("test config is valid");
        let fallback = crate::tls::self_signed(&["switchyard.invalid"]).expect("self-signed cert");
        let log = AccessLog::open(&config::AccessLogTarget::Off).expect("access log off");
        Runtime::new(config, path.into(), fallback, log, None).expect("runtime")
    }
}
