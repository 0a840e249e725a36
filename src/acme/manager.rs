//! The ACME background service: loads stored certificates before the listeners accept, orders what is missing or due, renews, backs off.
//!
//! One task places every order, one at a time, so a process never runs two orders at once and
//! never retries faster than its backoff: Let's Encrypt's limits stay far away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::Account;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::fleet::{EtcdStorage, FleetAcme};
use super::storage::{CertMeta, CertStorage, FsStorage, RetryState, StoredCert};
use super::view::{rfc3339, CertState, CertStatus};
use super::AcmeState;
use super::{ari, client, unix, AcmeError};
use crate::config::{AcmeCertificate, AcmeConfig};
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use tokio::sync::watch;

/// How often the manager looks for a reloaded `[acme]` table when nothing else is due.
const TICK: Duration = Duration::from_secs(1);
/// A CA that says "rate limited" is not asked again before this (capped by `backoff_max`).
const RATE_LIMITED_PAUSE: Duration = Duration::from_secs(3600);

/// The facts of a certificate in force that scheduling and the API need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    not_before: u64,
    not_after: u64,
    serial: String,
    issuer: String,
    names: Vec<String>,
    /// Its ARI identifier (RFC 9773), when it has an authority key identifier.
    ari_id: Option<String>,
}

impl Leaf {
    /// Renewal is due when a third of the lifetime remains.
    fn renew_at(&self) -> u64 {
        let lifetime = self.not_after.saturating_sub(self.not_before);
        self.not_before + lifetime * 2 / 3
    }

    fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|n| self.names.contains(n))
    }
}

/// One ACME certificate the manager looks after.
struct Managed {
    spec: AcmeCertificate,
    /// The ACME certificate in force (from disk or the CA); `None` while pending.
    leaf: Option<Leaf>,
    /// When the next order is due.
    next_attempt: SystemTime,
    failures: u32,
    last_error: Option<String>,
    orders: u64,
    ordering: bool,
    /// When to ask the CA for the renewal window (ARI) next; `None`: not at all.
    ari_next: Option<SystemTime>,
}

/// See the module docs.
pub struct AcmeManager {
    runtime: Arc<Runtime>,
    /// Challenges, statuses and renewal requests, shared with the proxy and the admin API.
    acme: Arc<AcmeState>,
    /// The snapshots the runtime publishes: a new config is reconciled when it arrives.
    published: watch::Receiver<Arc<Snapshot>>,
    /// The snapshot `new` reconciled: `start` follows the config from there.
    first: Arc<Snapshot>,
    storage: Arc<dyn CertStorage>,
    certs: Mutex<BTreeMap<String, Managed>>,
    /// The account, once created or restored, with the directory it belongs to.
    account: Mutex<Option<(String, Account)>>,
    /// A directory known to offer no ARI.
    no_ari: Mutex<Option<String>>,
    /// In a fleet: the etcd store and locks, and the ids of certificates other nodes stored.
    fleet: Option<Arc<FleetAcme>>,
    stored_elsewhere: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

impl AcmeManager {
    /// Loads the stored certificates of the current config into the resolver (a self-signed
    /// fallback for names without one). Call before the listeners accept.
    pub fn new(runtime: Arc<Runtime>, acme: Arc<AcmeState>) -> AcmeManager {
        let published = runtime.subscribe();
        let first = published.borrow().clone();
        // In a fleet the certificates live in etcd and every node follows them (and answers the
        // fleet's HTTP-01 challenges, with or without `[acme]` of its own).
        let fleet = first
            .config
            .cluster
            .as_ref()
            .and_then(|c| match FleetAcme::new(c) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::error!(
                        "acme: {e}; this node neither orders nor answers the fleet's challenges"
                    );
                    None
                }
            });
        let mut stored_elsewhere = None;
        let storage: Arc<dyn CertStorage> = match &fleet {
            Some(f) => {
                let _ = acme.fleet.set(f.clone());
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                f.follow(acme.clone(), tx);
                stored_elsewhere = Some(rx);
                Arc::new(EtcdStorage(f.clone()))
            }
            None => Arc::new(FsStorage::new(&first.config.server.state_dir)),
        };
        let manager = AcmeManager {
            fleet,
            stored_elsewhere: Mutex::new(stored_elsewhere),
            storage,
            runtime,
            acme,
            published,
            first: first.clone(),
            certs: Mutex::default(),
            account: Mutex::new(None),
            no_ari: Mutex::new(None),
        };
        manager.reconcile(None, &first);
        manager
    }

    /// The `[acme]` settings of the newest published snapshot.
    fn config(&self) -> Option<AcmeConfig> {
        self.published.borrow().config.acme.clone()
    }

    /// Follows the config from `seen` to `snap`: certificates added, changed or removed by a
    /// reload, and everything ordered again from a new directory.
    fn reconcile(&self, seen: Option<&Snapshot>, snap: &Snapshot) {
        let directory = snap.config.acme.as_ref().map(|a| a.directory.clone());
        let ca_changed = seen.is_some_and(|seen| {
            seen.config.acme.as_ref().map(|a| &a.directory) != directory.as_ref()
        });
        let specs: Vec<AcmeCertificate> = snap
            .config
            .acme
            .as_ref()
            .map(|a| a.certificates.clone())
            .unwrap_or_default();
        let mut certs = self.certs.lock();
        if ca_changed {
            log::info!(
                "acme: the directory changed to {}: ordering every certificate from it",
                directory.as_deref().unwrap_or("-")
            );
            for m in certs.values_mut() {
                m.next_attempt = SystemTime::now();
                m.failures = 0;
            }
        }
        let removed: Vec<String> = certs
            .keys()
            .filter(|id| !specs.iter().any(|s| &s.id == *id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(m) = certs.remove(&id) {
                log::info!("acme: certificate \"{id}\" is no longer configured");
                self.runtime.set_acme_cert(&id, &[], None);
                self.acme.metrics.forget(&m.spec.names);
                self.acme.status.lock().remove(&id);
            }
        }
        for spec in specs {
            match certs.get_mut(&spec.id) {
                Some(m) if m.spec == spec => {}
                Some(m) => {
                    let names_changed = m.spec.names != spec.names;
                    m.spec = spec;
                    if names_changed && !m.leaf.as_ref().is_some_and(|l| l.covers(&m.spec.names)) {
                        log::info!(
                            "acme: names of \"{}\" changed: ordering a certificate for {}",
                            m.spec.id,
                            m.spec.names.join(", ")
                        );
                        m.next_attempt = SystemTime::now();
                        m.failures = 0;
                    }
                    self.publish(m);
                }
                None => {
                    let m = self.adopt(spec, directory.as_deref().unwrap_or_default());
                    self.publish(&m);
                    certs.insert(m.spec.id.clone(), m);
                }
            }
        }
    }

    /// A newly configured certificate: the stored one if usable, else a self-signed stand-in;
    /// a saved backoff that ends later than the certificate is due is kept.
    fn adopt(&self, spec: AcmeCertificate, directory: &str) -> Managed {
        let mut m = self.adopt_stored(spec, directory);
        match self.storage.load_retry(&m.spec.id) {
            Ok(Some(r)) => {
                let until = std::time::UNIX_EPOCH + Duration::from_secs(r.next_attempt);
                if until > m.next_attempt {
                    log::warn!(
                        "acme: {} failed order(s) in a row for \"{}\" before this start; next attempt at {}",
                        r.failures,
                        m.spec.id,
                        rfc3339(r.next_attempt)
                    );
                    m.failures = r.failures;
                    m.last_error = Some(r.last_error);
                    m.next_attempt = until;
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("acme: {e}"),
        }
        m
    }

    fn adopt_stored(&self, spec: AcmeCertificate, directory: &str) -> Managed {
        let now = SystemTime::now();
        let mut m = Managed {
            spec,
            leaf: None,
            next_attempt: now,
            failures: 0,
            last_error: None,
            orders: 0,
            ordering: false,
            ari_next: None,
        };
        let stored = match self.storage.load_cert(&m.spec.id) {
            Ok(s) => s,
            Err(e) => {
                log::error!("acme: {e}");
                None
            }
        };
        if let Some(stored) = stored {
            match parse(&stored.chain_pem, &stored.key_pem) {
                Ok((key, leaf)) => {
                    self.runtime
                        .set_acme_cert(&m.spec.id, &m.spec.names, Some(key));
                    let same_ca = stored.meta.directory == directory;
                    if same_ca && leaf.covers(&m.spec.names) {
                        m.next_attempt =
                            std::time::UNIX_EPOCH + Duration::from_secs(leaf.renew_at());
                        log::info!(
                            "acme: loaded certificate for {} from {} (serial {}, expires {}, renewal due {})",
                            m.spec.names.join(", "),
                            self.storage.describe(&m.spec.id),
                            leaf.serial,
                            rfc3339(leaf.not_after),
                            rfc3339(leaf.renew_at())
                        );
                    } else {
                        log::warn!(
                            "acme: the stored certificate of \"{}\" was issued for other names or by another CA; it serves until a new one is obtained",
                            m.spec.id
                        );
                    }
                    m.ari_next = Some(now);
                    m.leaf = Some(leaf);
                    return m;
                }
                Err(e) => log::error!(
                    "acme: the stored certificate in {} is unusable ({e}); ordering a new one",
                    self.storage.describe(&m.spec.id)
                ),
            }
        }
        match crate::tls::self_signed(&m.spec.names.iter().map(String::as_str).collect::<Vec<_>>())
        {
            Ok(key) => self
                .runtime
                .set_acme_cert(&m.spec.id, &m.spec.names, Some(key)),
            Err(e) => log::error!("acme: {e}"),
        }
        log::warn!(
            "acme: {} wait(s) for a first certificate; a self-signed certificate serves meanwhile (status \"pending\")",
            m.spec.names.join(", ")
        );
        m
    }

    /// Shows a certificate's state in the API and the metrics.
    fn publish(&self, m: &Managed) {
        let now = unix(SystemTime::now());
        let status = match (&m.leaf, m.ordering, m.failures) {
            (_, true, _) => CertState::Renewing,
            (None, _, _) => CertState::Pending,
            (Some(l), _, _) if l.not_after <= now => CertState::Expired,
            (Some(_), _, 0) => CertState::Valid,
            (Some(_), _, _) => CertState::Failing,
        };
        let next = unix(m.next_attempt);
        let view = CertStatus {
            id: m.spec.id.clone(),
            names: m.spec.names.clone(),
            challenge: m.spec.challenge.as_str().to_string(),
            status,
            issuer: m.leaf.as_ref().map(|l| l.issuer.clone()),
            serial: m.leaf.as_ref().map(|l| l.serial.clone()),
            not_before: m.leaf.as_ref().map(|l| rfc3339(l.not_before)),
            not_after: m.leaf.as_ref().map(|l| rfc3339(l.not_after)),
            not_after_unix: m.leaf.as_ref().map(|l| l.not_after),
            next_attempt: Some(rfc3339(next)),
            next_attempt_unix: Some(next),
            failures: m.failures,
            last_error: m.last_error.clone(),
            orders: m.orders,
            stored_at: self.storage.describe(&m.spec.id),
        };
        self.acme.metrics.show(&view);
        self.acme.status.lock().insert(view.id.clone(), view);
    }

    /// The ids whose order is due now (renewal requests included).
    fn due(&self) -> Vec<String> {
        let requested = self.acme.take_renew_requests();
        let now = SystemTime::now();
        let mut certs = self.certs.lock();
        for id in requested {
            if let Some(m) = certs.get_mut(&id) {
                log::info!("acme: renewal of \"{id}\" requested through the admin API");
                m.next_attempt = now;
            }
        }
        certs
            .values()
            .filter(|m| m.next_attempt <= now)
            .map(|m| m.spec.id.clone())
            .collect()
    }

    /// How long to sleep: until the earliest due order, at most [`TICK`].
    fn idle_time(&self) -> Duration {
        let now = SystemTime::now();
        self.certs
            .lock()
            .values()
            .flat_map(|m| [Some(m.next_attempt), m.ari_next])
            .flatten()
            .map(|t| t.duration_since(now).unwrap_or_default())
            .min()
            .unwrap_or(TICK)
            .min(TICK)
    }

    async fn account(&self, cfg: &AcmeConfig) -> Result<Account, AcmeError> {
        if let Some((dir, account)) = &*self.account.lock() {
            if dir == &cfg.directory {
                return Ok(account.clone());
            }
        }
        let account = client::account(cfg, self.storage.as_ref()).await?;
        *self.account.lock() = Some((cfg.directory.clone(), account.clone()));
        Ok(account)
    }

    async fn order(
        &self,
        cfg: &AcmeConfig,
        spec: &AcmeCertificate,
    ) -> Result<StoredCert, AcmeError> {
        let account = self.account(cfg).await?;
        let issued = client::order(&account, cfg, spec, &self.acme).await?;
        let (_, leaf) = parse(&issued.chain_pem, &issued.key_pem)?;
        if !leaf.covers(&spec.names) {
            return Err(AcmeError::BadCertificate(format!(
                "it covers {} instead of {}",
                leaf.names.join(", "),
                spec.names.join(", ")
            )));
        }
        Ok(StoredCert {
            meta: CertMeta::new(
                &cfg.directory,
                &spec.names,
                leaf.serial,
                unix(SystemTime::now()),
            ),
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
        })
    }

    /// The ids whose renewal window (ARI) should be asked for now.
    fn ari_due(&self) -> Vec<String> {
        let now = SystemTime::now();
        self.certs
            .lock()
            .values()
            .filter(|m| m.ari_next.is_some_and(|t| t <= now))
            .map(|m| m.spec.id.clone())
            .collect()
    }

    /// Asks the CA for the renewal window of `id` and renews earlier if it says so (best
    /// effort: a CA without ARI or a failed request leaves the schedule as it is).
    async fn ari(&self, id: &str) {
        let Some(cfg) = self.config() else {
            return;
        };
        let no_ari = self.no_ari.lock().as_deref() == Some(cfg.directory.as_str());
        let ari_id = {
            let mut certs = self.certs.lock();
            let Some(m) = certs.get_mut(id) else {
                return;
            };
            m.ari_next = None;
            match m.leaf.as_ref().and_then(|l| l.ari_id.clone()) {
                Some(ari_id) if !no_ari => ari_id,
                _ => return,
            }
        };
        let answer = match self.account(&cfg).await {
            Ok(account) => ari::window(&account, &ari_id).await,
            Err(e) => Err(e),
        };
        let now = SystemTime::now();
        let mut certs = self.certs.lock();
        let Some(m) = certs.get_mut(id) else {
            return;
        };
        match answer {
            Ok(None) => {
                log::info!(
                    "acme: {} offers no renewal information (ARI); renewing with a third of the lifetime left",
                    cfg.directory
                );
                *self.no_ari.lock() = Some(cfg.directory.clone());
            }
            Ok(Some(window)) => {
                m.ari_next = Some(now + window.poll_after);
                let at = ari::pick(&window, unix(now));
                let at_time = std::time::UNIX_EPOCH + Duration::from_secs(at);
                if m.failures == 0 && at_time < m.next_attempt {
                    log::info!(
                        "acme: the CA suggests renewing {} from {} to {}{}: renewal moved to {}",
                        m.spec.names.join(", "),
                        rfc3339(window.start),
                        rfc3339(window.end),
                        window
                            .explanation
                            .as_deref()
                            .map(|u| format!(" ({u})"))
                            .unwrap_or_default(),
                        rfc3339(at)
                    );
                    m.next_attempt = at_time;
                    self.publish(m);
                }
            }
            Err(e) => {
                log::warn!("acme: renewal information for \"{id}\" unavailable: {e}");
                m.ari_next = Some(now + ari::MIN_POLL);
            }
        }
    }

    /// Counts a failed order of `m` and schedules the next one (backoff).
    fn note_failure(&self, m: &mut Managed, cfg: &AcmeConfig, e: &AcmeError, challenge: &str) {
        let id = m.spec.id.as_str();
        let reason = e.reason();
        self.acme.metrics.order(challenge, Some(reason));
        m.failures += 1;
        let mut delay = backoff(cfg, m.failures);
        if e.rate_limited() {
            delay = delay.max(RATE_LIMITED_PAUSE.min(cfg.backoff_max));
        }
        m.next_attempt = SystemTime::now() + delay;
        m.last_error = Some(e.to_string());
        let names = m.spec.names.join(", ");
        let retry_in = delay.as_secs_f64();
        tracing::error!(
            target: "switchyard::acme",
            event = "order_failed",
            certificate = id,
            names,
            challenge,
            reason,
            error = %e,
            failures = m.failures,
            retry_in,
            "acme: order for {names} failed ({reason}): {e}; {} serves meanwhile; next attempt in {retry_in:.1}s (failure {} in a row)",
            if m.leaf.is_some() { "the current certificate" } else { "a self-signed certificate" },
            m.failures
        );
    }

    /// A failure before an order was placed (the fleet's lock): counted like a failed order.
    fn failed(&self, id: &str, cfg: &AcmeConfig, e: AcmeError, challenge: &str) {
        let mut certs = self.certs.lock();
        let Some(m) = certs.get_mut(id) else {
            return;
        };
        m.ordering = false;
        self.note_failure(m, cfg, &e, challenge);
        // Not saved (as before): the store it would go to, the fleet's, is what failed.
        self.publish(m);
    }

    /// Serves the certificate of `id` that the fleet's store holds if it is not the one this
    /// node serves (another node obtained it). Returns whether it did.
    fn adopt_from_fleet(&self, id: &str) -> bool {
        let stored = match self.storage.load_cert(id) {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                log::warn!("acme: {e}");
                return false;
            }
        };
        let Some(directory) = self.config().map(|c| c.directory) else {
            return false;
        };
        let mut certs = self.certs.lock();
        let Some(m) = certs.get_mut(id) else {
            return false;
        };
        if m.leaf
            .as_ref()
            .is_some_and(|l| l.serial == stored.meta.serial)
            || stored.meta.directory != directory
        {
            return false;
        }
        let (key, leaf) = match parse(&stored.chain_pem, &stored.key_pem) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("acme: the fleet's certificate for \"{id}\" is unusable: {e}");
                return false;
            }
        };
        if !leaf.covers(&m.spec.names) || leaf.renew_at() <= unix(SystemTime::now()) {
            return false;
        }
        self.runtime.set_acme_cert(id, &m.spec.names, Some(key));
        log::info!(
            "acme: serving the certificate for {} another node obtained (serial {}, expires {})",
            m.spec.names.join(", "),
            leaf.serial,
            rfc3339(leaf.not_after)
        );
        m.next_attempt = std::time::UNIX_EPOCH + Duration::from_secs(leaf.renew_at());
        m.leaf = Some(leaf);
        m.failures = 0;
        m.last_error = None;
        m.ari_next = Some(SystemTime::now() + ari::MIN_POLL);
        self.publish(m);
        true
    }

    /// Places the order for `id` and applies the outcome.
    async fn attempt(&self, id: &str) {
        let Some(cfg) = self.config() else {
            return;
        };
        let spec = {
            let mut certs = self.certs.lock();
            let Some(m) = certs.get_mut(id) else {
                return;
            };
            m.ordering = true;
            m.orders += 1;
            self.publish(m);
            m.spec.clone()
        };
        // In a fleet one node orders a certificate: it takes the lock, then looks again, since
        // another node may have stored a new one while this one waited.
        let _lock = match &self.fleet {
            Some(fleet) => match fleet.lock(id).await {
                Ok(lock) => {
                    if self.adopt_from_fleet(id) {
                        let mut certs = self.certs.lock();
                        if let Some(m) = certs.get_mut(id) {
                            m.ordering = false;
                            m.orders -= 1;
                            self.publish(m);
                        }
                        return;
                    }
                    Some(lock)
                }
                Err(e) => {
                    self.failed(id, &cfg, AcmeError::Fleet(e), spec.challenge.as_str());
                    return;
                }
            },
            None => None,
        };
        let started = std::time::Instant::now();
        let mut result = self.order(&cfg, &spec).await;
        if result.as_ref().is_err_and(AcmeError::account_gone) {
            log::warn!("acme: the CA no longer knows our account; registering its key again");
            *self.account.lock() = None;
            result = self.order(&cfg, &spec).await;
        }
        let result = result.and_then(|stored| {
            let (key, leaf) = parse(&stored.chain_pem, &stored.key_pem)?;
            self.storage.save_cert(id, &stored)?;
            Ok((key, leaf))
        });
        let challenge = spec.challenge.as_str();
        let mut certs = self.certs.lock();
        let Some(m) = certs.get_mut(id) else {
            return;
        };
        m.ordering = false;
        match result {
            Ok((key, leaf)) => {
                self.acme.metrics.order(challenge, None);
                // The swap: handshakes from now on get the new certificate; running ones keep theirs.
                self.runtime.set_acme_cert(id, &m.spec.names, Some(key));
                let names = m.spec.names.join(", ");
                let seconds = started.elapsed().as_secs_f64();
                let expires = rfc3339(leaf.not_after);
                tracing::info!(
                    target: "switchyard::acme",
                    event = "certificate_obtained",
                    certificate = id,
                    names,
                    challenge,
                    seconds,
                    serial = %leaf.serial,
                    expires,
                    "acme: obtained a certificate for {names} in {seconds:.2}s (serial {}, expires {expires}); serving it",
                    leaf.serial,
                );
                m.next_attempt = std::time::UNIX_EPOCH + Duration::from_secs(leaf.renew_at());
                m.leaf = Some(leaf);
                m.failures = 0;
                m.last_error = None;
                m.ari_next = Some(SystemTime::now() + ari::MIN_POLL);
            }
            Err(e) => self.note_failure(m, &cfg, &e, challenge),
        }
        let retry = m.last_error.as_ref().map(|e| RetryState {
            failures: m.failures,
            next_attempt: unix(m.next_attempt),
            last_error: e.clone(),
        });
        drop(certs);
        // Saved (outside the lock) before it is published: a status that shows a failure is on
        // disk before anyone can see it, so a restart right after keeps the backoff.
        if let Err(e) = self.storage.save_retry(id, retry.as_ref()) {
            log::error!("acme: {e}");
        }
        if let Some(m) = self.certs.lock().get(id) {
            self.publish(m);
        }
    }
}

/// The delay after the `failures`-th failure in a row: `backoff_min` doubled each time, capped
/// at `backoff_max`, times a random factor in [0.75, 1.25) (never past the cap) so instances do
/// not retry in step.
fn backoff(cfg: &AcmeConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = cfg
        .backoff_min
        .saturating_mul(1u32 << exp)
        .min(cfg.backoff_max);
    base.mul_f64(0.75 + fastrand::f64() / 2.0)
        .min(cfg.backoff_max)
}

/// A PEM chain and key as a rustls key pair (the key must match the leaf), and the leaf's facts.
fn parse(chain_pem: &str, key_pem: &str) -> Result<(Arc<CertifiedKey>, Leaf), AcmeError> {
    let bad = |e: String| AcmeError::BadCertificate(e);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("PEM chain: {e}")))?;
    let first = chain.first().ok_or_else(|| bad("no certificate".into()))?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(first).map_err(|e| bad(format!("leaf: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let leaf = Leaf {
        not_before: u64::try_from(x509.validity().not_before.timestamp()).unwrap_or(0),
        not_after: u64::try_from(x509.validity().not_after.timestamp()).unwrap_or(0),
        serial: x509.raw_serial_as_string().replace(':', ""),
        issuer: x509.issuer().to_string(),
        names,
        ari_id: ari::cert_id(&x509),
    };
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(format!("key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| bad(format!("key and certificate: {e}")))?;
    Ok((Arc::new(certified), leaf))
}

#[async_trait::async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut published = self.published.clone();
        let mut seen = self.first.clone();
        let mut stored_elsewhere = self.stored_elsewhere.lock().take();
        loop {
            // A reload publishes a new config (a weight change only a new generation of it).
            let next = published.borrow_and_update().clone();
            if !Arc::ptr_eq(&seen.config, &next.config) {
                self.reconcile(Some(&seen), &next);
            }
            seen = next;
            for id in self.due() {
                if *shutdown.borrow() {
                    return;
                }
                self.attempt(&id).await;
            }
            for id in self.ari_due() {
                if *shutdown.borrow() {
                    return;
                }
                self.ari(&id).await;
            }
            let idle = self.idle_time();
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = self.acme.wake.notified() => {}
                Some(id) = async {
                    match stored_elsewhere.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Another node stored a certificate (or this one did: then nothing changes).
                    self.adopt_from_fleet(&id);
                }
                _ = published.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: u64, max: u64) -> AcmeConfig {
        AcmeConfig {
            directory: "https://ca/dir".into(),
            ca_root: None,
            email: None,
            eab: None,
            dns_hook: None,
            dns_hook_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_secs(min),
            backoff_max: Duration::from_secs(max),
            certificates: Vec::new(),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let c = cfg(60, 6 * 3600);
        for _ in 0..100 {
            let first = backoff(&c, 1).as_secs_f64();
            assert!((45.0..75.0).contains(&first), "{first}");
            let third = backoff(&c, 3).as_secs_f64();
            assert!((180.0..300.0).contains(&third), "{third}");
            assert!(backoff(&c, 40) <= Duration::from_secs(6 * 3600));
        }
    }

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        let leaf = Leaf {
            not_before: 1000,
            not_after: 1000 + 90 * 86400,
            serial: "01".into(),
            issuer: "x".into(),
            names: vec!["a.example".into()],
            ari_id: None,
        };
        assert_eq!(leaf.renew_at(), 1000 + 60 * 86400);
        assert!(leaf.covers(&["a.example".into()]));
        assert!(!leaf.covers(&["b.example".into()]));
    }

    #[test]
    fn parse_rejects_a_key_of_another_certificate() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).expect("a");
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).expect("b");
        let (_, leaf) = parse(&a.cert.pem(), &a.key_pair.serialize_pem()).expect("a's pair");
        assert_eq!(leaf.names, vec!["a.example".to_string()]);
        assert!(parse(&a.cert.pem(), &b.key_pair.serialize_pem()).is_err());
    }
}
