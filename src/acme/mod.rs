//! Automatic TLS: certificates obtained and renewed over ACME, answered challenges, hot-swapped into the SNI resolver.
//!
//! - [`AcmeState`] (in `Runtime.acme`) is what the rest of the process shares with ACME: pending
//!   HTTP-01 tokens (read by the proxy's `request_filter`), TLS-ALPN-01 certificates (read by the
//!   pre-TLS hook, [`alpn`]), each certificate's status (admin API, `ctl certs`), renewal
//!   requests, and the metrics.
//! - [`AcmeManager`] is the background service that owns the orders: it loads certificates from
//!   [`storage`] before the listeners accept, orders what is missing or due, renews, backs off.

pub mod alpn;
mod ari;
mod client;
mod dns;
pub mod fleet;
mod manager;
mod metrics;
pub mod storage;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rustls::sign::CertifiedKey;

pub use manager::AcmeManager;
pub use view::CertStatus;

/// The path prefix of HTTP-01 challenge requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Why an order (or getting ready for one) failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{}", with_sources(.0))]
    Ca(#[from] instant_acme::Error),
    #[error("the CA did not validate {name}: {detail}")]
    Validation { name: String, detail: String },
    #[error("the order became invalid: {0}")]
    OrderInvalid(String),
    #[error("the CA offers no {challenge} challenge for {name}")]
    NoChallenge {
        challenge: &'static str,
        name: String,
    },
    #[error("dns hook: {0}")]
    DnsHook(String),
    #[error("cannot build a key, request or certificate: {0}")]
    Crypto(String),
    #[error("the CA returned an unusable certificate: {0}")]
    BadCertificate(String),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("cannot read ca_root: {0}")]
    CaRoot(String),
    #[error("the fleet (etcd): {0}")]
    Fleet(String),
}

impl AcmeError {
    /// The `reason` label of `switchyard_acme_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AcmeError::Ca(instant_acme::Error::Api(p)) => {
                match p.r#type.as_deref().and_then(|t| t.rsplit(':').next()) {
                    Some("rateLimited") => "rate_limited",
                    Some("badNonce") => "bad_nonce",
                    Some("accountDoesNotExist") => "account",
                    Some("unauthorized" | "incorrectResponse" | "connection" | "dns" | "tls") => {
                        "validation"
                    }
                    Some("rejectedIdentifier" | "caa" | "malformed" | "unsupportedIdentifier") => {
                        "rejected"
                    }
                    _ => "ca_error",
                }
            }
            AcmeError::Ca(instant_acme::Error::Timeout(_)) => "timeout",
            AcmeError::Ca(_) => "ca_unreachable",
            AcmeError::Validation { .. } | AcmeError::OrderInvalid(_) => "validation",
            AcmeError::NoChallenge { .. } => "no_challenge",
            AcmeError::DnsHook(_) => "dns_hook",
            AcmeError::Crypto(_) | AcmeError::BadCertificate(_) => "certificate",
            AcmeError::Storage(_) => "storage",
            AcmeError::CaRoot(_) => "config",
            AcmeError::Fleet(_) => "fleet",
        }
    }

    /// The CA forgot our account (its database was reset): register the same key again.
    fn account_gone(&self) -> bool {
        self.reason() == "account"
    }

    /// The CA asked us to slow down: wait at least an hour.
    fn rate_limited(&self) -> bool {
        self.reason() == "rate_limited"
    }
}

/// ACME state shared with the request path, the TLS hook and the admin API.
pub struct AcmeState {
    /// HTTP-01: token → key authorization.
    http01: RwLock<HashMap<String, String>>,
    /// HTTP-01 answers of the whole fleet (`[cluster]`), mirrored from etcd: any node answers
    /// the CA, whichever placed the order.
    pub(crate) fleet_http01: RwLock<HashMap<String, String>>,
    /// The fleet's ACME store, once the manager has made it (`[cluster]` only).
    pub(crate) fleet: std::sync::OnceLock<Arc<fleet::FleetAcme>>,
    /// TLS-ALPN-01: name → the challenge certificate.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// How many TLS-ALPN-01 challenges are pending: the TLS hook looks at nothing while 0.
    alpn_pending: AtomicUsize,
    /// Each ACME certificate's status, by certificate id.
    status: Mutex<BTreeMap<String, CertStatus>>,
    /// Certificate ids whose renewal was asked for (admin API), and the wake-up for the manager.
    renew_requests: Mutex<BTreeSet<String>>,
    wake: tokio::sync::Notify,
    pub(crate) metrics: metrics::AcmeMetrics,
}

impl std::fmt::Debug for AcmeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeState")
            .field("certificates", &self.status.lock().len())
            .finish_non_exhaustive()
    }
}

impl AcmeState {
    /// Registers the ACME metrics in `registry` (Switchyard's own).
    pub fn new(registry: &prometheus::Registry) -> Arc<AcmeState> {
        Arc::new(AcmeState {
            http01: RwLock::default(),
            fleet_http01: RwLock::default(),
            fleet: std::sync::OnceLock::new(),
            alpn: RwLock::default(),
            alpn_pending: AtomicUsize::new(0),
            status: Mutex::default(),
            renew_requests: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            metrics: metrics::AcmeMetrics::new(registry),
        })
    }

    /// The key authorization to answer `GET /.well-known/acme-challenge/{token}` with, if pending.
    pub fn http01_response(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        if let Some(answer) = self.http01.read().get(token) {
            return Some(answer.clone());
        }
        self.fleet_http01.read().get(token).cloned()
    }

    fn alpn_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.read().get(name).cloned()
    }

    fn alpn_active(&self) -> bool {
        self.alpn_pending.load(Ordering::Acquire) > 0
    }

    /// Every ACME certificate's status, in id order.
    pub fn certificates(&self) -> Vec<CertStatus> {
        self.status.lock().values().cloned().collect()
    }

    /// Asks the manager to renew the certificate that covers `name` (a name or a certificate
    /// id) now; returns its id, or `None` when no ACME certificate covers the name.
    pub fn request_renewal(&self, name: &str) -> Option<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let id = {
            let status = self.status.lock();
            status
                .values()
                .find(|s| s.id == name || s.names.contains(&name))?
                .id
                .clone()
        };
        self.renew_requests.lock().insert(id.clone());
        self.wake.notify_one();
        Some(id)
    }

    fn take_renew_requests(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.renew_requests.lock())
    }
}

/// A pending challenge answer; removed from [`AcmeState`] when dropped, whatever the outcome.
enum ChallengeGuard {
    Http01(Arc<AcmeState>, String),
    TlsAlpn01(Arc<AcmeState>, String),
}

impl ChallengeGuard {
    fn http01(state: &Arc<AcmeState>, token: &str, key_authorization: &str) -> ChallengeGuard {
        state
            .http01
            .write()
            .insert(token.to_string(), key_authorization.to_string());
        ChallengeGuard::Http01(state.clone(), token.to_string())
    }

    fn tls_alpn01(state: &Arc<AcmeState>, name: &str, cert: Arc<CertifiedKey>) -> ChallengeGuard {
        state.alpn.write().insert(name.to_string(), cert);
        state.alpn_pending.fetch_add(1, Ordering::AcqRel);
        ChallengeGuard::TlsAlpn01(state.clone(), name.to_string())
    }
}

impl Drop for ChallengeGuard {
    fn drop(&mut self) {
        match self {
            ChallengeGuard::Http01(state, token) => {
                state.http01.write().remove(token.as_str());
            }
            ChallengeGuard::TlsAlpn01(state, name) => {
                state.alpn.write().remove(name.as_str());
                state.alpn_pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// An error and its causes, `outer: inner: innermost` (hyper's "client error (Connect)" alone
/// does not say that the CA's certificate was not trusted).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
