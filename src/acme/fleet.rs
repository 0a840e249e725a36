//! ACME for a fleet: accounts and certificates in etcd (keys encrypted), one order per name under an etcd lock, HTTP-01 tokens any node answers, certificates every node picks up.
//!
//! Keys under `PREFIX/acme/`:
//!
//! ```text
//! accounts/<host>-<sha256(directory), 16 hex>   sealed account credentials (they hold its key)
//! certs/<id>                                     {meta, chain_pem, key: sealed PKCS#8 PEM}
//! retry/<id>                                     failed orders in a row, next attempt
//! locks/<id>                                     etcd lock held while a node orders <id>
//! http01/<token>                                 key authorization, on a lease, while pending
//! ```
//!
//! Secrets are sealed with `[cluster] encryption_key` ([`Sealer`]): nothing secret is stored in
//! plain text in etcd.
//!
//! Every call runs on a runtime of this module's own (one thread), which also holds the etcd
//! connection: the manager's sync storage calls block its thread while they wait, never the
//! runtime that answers them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, LockOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::storage::{CertMeta, CertStorage, RetryState, StorageError, StoredCert};
use super::AcmeState;
use crate::config::ClusterConfig;
use crate::etcd::{bounded, list_then_watch, next_events, Client, Sealer};

const NO_KEY: &str = "[cluster] has no encryption_key";

/// How long a pending HTTP-01 token lives in etcd if its node dies before withdrawing it.
const TOKEN_TTL: i64 = 600;
/// The TTL of an order lock's lease (renewed while the order runs).
const LOCK_TTL: i64 = 15;
/// How long an order waits for another node's order of the same certificate.
const LOCK_WAIT: Duration = Duration::from_secs(300);
/// A pause after publishing a token, so that every node's watch has it before the CA dials.
pub const TOKEN_SPREAD: Duration = Duration::from_millis(250);

/// The fleet's ACME store and coordination (see the module docs).
pub struct FleetAcme {
    /// Made once per process and kept for its life (a runtime cannot be dropped in async code).
    runtime: &'static tokio::runtime::Runtime,
    client: tokio::sync::Mutex<Option<Client>>,
    cfg: ClusterConfig,
    prefix: String,
    /// Absent on a node without `[acme]` (which only answers the fleet's challenges).
    sealer: Option<Sealer>,
    /// When a call last failed: for [`FAIL_FAST`] after it, sync calls fail at once, so a start
    /// with etcd away does not wait `timeout` for every certificate.
    failed_at: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// How long after a failed call sync calls fail without trying.
const FAIL_FAST: Duration = Duration::from_secs(5);

/// A certificate as stored in etcd.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertEntry {
    meta: CertMeta,
    chain_pem: String,
    /// The sealed key PEM.
    key: String,
}

impl FleetAcme {
    /// Builds the store for `cfg` (with `[acme]`, the config makes sure it has a key).
    pub fn new(cfg: &ClusterConfig) -> Result<Arc<FleetAcme>, String> {
        let sealer = cfg.encryption_key.as_ref().map(|k| Sealer::new(k.expose()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("acme-fleet")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the fleet ACME runtime: {e}"))?;
        Ok(Arc::new(FleetAcme {
            runtime: Box::leak(Box::new(runtime)),
            client: tokio::sync::Mutex::new(None),
            prefix: format!("{}/acme/", cfg.prefix),
            cfg: cfg.clone(),
            sealer,
            failed_at: parking_lot::Mutex::new(None),
        }))
    }

    fn k(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The connected client (connecting if needed).
    async fn client(&self) -> Result<Client, String> {
        let mut slot = self.client.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = crate::etcd::connect(&self.cfg).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after a failure, so the next call connects again.
    async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// Runs `call` on this module's runtime and waits for it (sync callers).
    fn block<T: Send + 'static, F>(
        self: &Arc<Self>,
        call: impl FnOnce(Arc<Self>) -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        if let Some(at) = *self.failed_at.lock() {
            if at.elapsed() < FAIL_FAST {
                return Err(format!(
                    "etcd unreachable (a call failed {:.1}s ago)",
                    at.elapsed().as_secs_f64()
                ));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = call(self.clone());
        let this = self.clone();
        self.runtime.spawn(async move {
            let r = fut.await;
            if r.is_err() {
                this.reset().await;
            }
            let _ = tx.send(r);
        });
        let result = rx
            .recv_timeout(self.cfg.timeout * 2)
            .unwrap_or_else(|_| Err("etcd did not answer in time".into()));
        *self.failed_at.lock() = result.is_err().then(std::time::Instant::now);
        result
    }

    /// Runs `call` on this module's runtime (async callers on other runtimes).
    async fn on_runtime<T: Send + 'static, F>(
        self: &Arc<Self>,
        call: impl FnOnce(Arc<Self>) -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let fut = call(self.clone());
        let this = self.clone();
        match self
            .runtime
            .spawn(async move {
                let r = fut.await;
                if r.is_err() {
                    this.reset().await;
                }
                r
            })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(format!("fleet ACME task: {e}")),
        }
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, String> {
        let mut c = self.client().await?;
        let resp = bounded(self.cfg.timeout, "get", c.get(key, None)).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: String, value: Vec<u8>, lease: Option<i64>) -> Result<(), String> {
        let mut c = self.client().await?;
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        bounded(self.cfg.timeout, "put", c.put(key, value, options))
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: String) -> Result<(), String> {
        let mut c = self.client().await?;
        bounded(self.cfg.timeout, "delete", c.delete(key, None))
            .await
            .map(|_| ())
    }

    fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, String> {
        self.sealer.as_ref().ok_or(NO_KEY)?.seal(aad, plain)
    }

    fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, String> {
        self.sealer.as_ref().ok_or(NO_KEY)?.open(aad, sealed)
    }

    fn account_key(&self, directory: &str) -> String {
        self.k(&format!(
            "accounts/{}",
            super::storage::account_name(directory)
        ))
    }

    /// Takes the fleet's lock on ordering `id`: waits while another node holds it. The lock is
    /// on a lease renewed while the guard lives, so a node that dies mid-order frees it.
    pub async fn lock(self: &Arc<Self>, id: &str) -> Result<OrderLock, String> {
        let name = self.k(&format!("locks/{id}"));
        self.on_runtime(move |this| async move {
            let mut c = this.client().await?;
            let lease = bounded(
                this.cfg.timeout,
                "lease grant",
                c.lease_grant(LOCK_TTL, None),
            )
            .await?
            .id();
            let (mut keeper, mut renewals) = bounded(
                this.cfg.timeout,
                "lease keep-alive",
                c.lease_keep_alive(lease),
            )
            .await?;
            let renew = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs((LOCK_TTL / 3).max(1) as u64)).await;
                    if keeper.keep_alive().await.is_err() || renewals.message().await.is_err() {
                        return;
                    }
                }
            });
            let locked = tokio::time::timeout(
                LOCK_WAIT,
                c.lock(name.clone(), Some(LockOptions::new().with_lease(lease))),
            )
            .await;
            match locked {
                Ok(Ok(resp)) => Ok(OrderLock {
                    fleet: this.clone(),
                    key: resp.key().to_vec(),
                    lease,
                    renew: Some(renew),
                }),
                Ok(Err(e)) => {
                    renew.abort();
                    let _ = c.lease_revoke(lease).await;
                    Err(format!("etcd lock {name}: {e}"))
                }
                Err(_) => {
                    renew.abort();
                    let _ = c.lease_revoke(lease).await;
                    Err(format!(
                        "etcd lock {name}: another node held it for {LOCK_WAIT:?}"
                    ))
                }
            }
        })
        .await
    }

    /// Publishes an HTTP-01 answer for every node to serve; withdrawn when the guard drops (or
    /// its lease ends).
    pub async fn share_token(
        self: &Arc<Self>,
        token: &str,
        key_authorization: &str,
    ) -> Result<SharedToken, String> {
        let key = self.k(&format!("http01/{token}"));
        let value = key_authorization.as_bytes().to_vec();
        let lease = self
            .on_runtime({
                let key = key.clone();
                move |this| async move {
                    let mut c = this.client().await?;
                    let lease = bounded(
                        this.cfg.timeout,
                        "lease grant",
                        c.lease_grant(TOKEN_TTL, None),
                    )
                    .await?
                    .id();
                    this.put(key, value, Some(lease)).await?;
                    Ok(lease)
                }
            })
            .await?;
        Ok(SharedToken {
            fleet: self.clone(),
            lease,
        })
    }

    /// Follows the fleet's ACME keys for this node: HTTP-01 tokens into `state` (so any node
    /// answers the CA) and the ids of certificates another node stored, sent on `stored`.
    /// Runs until the process ends, listing again after any failure.
    pub fn follow(
        self: &Arc<Self>,
        state: Arc<AcmeState>,
        stored: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let this = self.clone();
        self.runtime.spawn(async move {
            loop {
                if let Err(e) = this.follow_once(&state, &stored).await {
                    crate::lograte::warn(
                        "acme-fleet-watch",
                        format_args!(
                            "acme: following the fleet's certificates and tokens: {e}; again in 1s"
                        ),
                    );
                }
                this.reset().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn follow_once(
        &self,
        state: &AcmeState,
        stored: &tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<(), String> {
        let mut c = self.client().await?;
        let tokens_prefix = self.k("http01/");
        let certs_prefix = self.k("certs/");
        // The whole ACME prefix (a few keys): its tokens now, then every token and certificate.
        let (listing, mut watch) =
            list_then_watch(&mut c, self.cfg.timeout, "acme ", &self.prefix).await?;
        let mut tokens = HashMap::new();
        for kv in listing.kvs() {
            if let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) {
                if let Some(token) = k.strip_prefix(&tokens_prefix) {
                    tokens.insert(token.to_string(), v.to_string());
                }
            }
        }
        *state.fleet_http01.write() = tokens;
        loop {
            let resp = next_events(&mut watch, "acme ").await?;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                if let Some(token) = key.strip_prefix(&tokens_prefix) {
                    let mut map = state.fleet_http01.write();
                    match ev.event_type() {
                        EventType::Put => {
                            map.insert(token.to_string(), kv.value_str().unwrap_or("").to_string());
                        }
                        EventType::Delete => {
                            map.remove(token);
                        }
                    }
                } else if let Some(id) = key.strip_prefix(&certs_prefix) {
                    if ev.event_type() == EventType::Put {
                        let _ = stored.send(id.to_string());
                    }
                }
            }
        }
    }
}

/// The fleet's lock on ordering one certificate; released when dropped.
pub struct OrderLock {
    fleet: Arc<FleetAcme>,
    key: Vec<u8>,
    lease: i64,
    renew: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for OrderLock {
    fn drop(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        let key = std::mem::take(&mut self.key);
        let lease = self.lease;
        let fleet = self.fleet.clone();
        self.fleet.runtime.spawn(async move {
            if let Ok(mut c) = fleet.client().await {
                let _ = c.unlock(key).await;
                let _ = c.lease_revoke(lease).await;
            }
        });
    }
}

/// An HTTP-01 answer published to the fleet; withdrawn (its lease revoked) when dropped.
pub struct SharedToken {
    fleet: Arc<FleetAcme>,
    lease: i64,
}

impl Drop for SharedToken {
    fn drop(&mut self) {
        let lease = self.lease;
        let fleet = self.fleet.clone();
        self.fleet.runtime.spawn(async move {
            if let Ok(mut c) = fleet.client().await {
                let _ = c.lease_revoke(lease).await;
            }
        });
    }
}

fn storage_err(path: String, e: String) -> StorageError {
    StorageError::Corrupt {
        path: path.into(),
        reason: e,
    }
}

/// [`CertStorage`] in etcd (see the module docs): the manager's calls are sync, so each waits on
/// this module's runtime.
pub struct EtcdStorage(pub Arc<FleetAcme>);

impl EtcdStorage {
    fn unreachable(&self, key: &str, e: String) -> StorageError {
        StorageError::Read {
            path: key.into(),
            source: std::io::Error::other(e),
        }
    }
}

impl CertStorage for EtcdStorage {
    fn load_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let key = self.0.account_key(directory);
        let got = self
            .0
            .block({
                let key = key.clone();
                |f| async move { f.get(key).await }
            })
            .map_err(|e| self.unreachable(&key, e))?;
        match got {
            None => Ok(None),
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.0
                    .open(&key, &text)
                    .map(Some)
                    .map_err(|e| storage_err(key, e))
            }
        }
    }

    fn save_account(&self, directory: &str, credentials: &[u8]) -> Result<(), StorageError> {
        let key = self.0.account_key(directory);
        let sealed = self
            .0
            .seal(&key, credentials)
            .map_err(|e| storage_err(key.clone(), e))?;
        self.0
            .block({
                let key = key.clone();
                |f| async move { f.put(key, sealed.into_bytes(), None).await }
            })
            .map_err(|e| StorageError::Write {
                path: key.into(),
                source: std::io::Error::other(e),
            })
    }

    fn load_cert(&self, id: &str) -> Result<Option<StoredCert>, StorageError> {
        let key = self.0.k(&format!("certs/{id}"));
        let got = self
            .0
            .block({
                let key = key.clone();
                |f| async move { f.get(key).await }
            })
            .map_err(|e| self.unreachable(&key, e))?;
        let Some(bytes) = got else {
            return Ok(None);
        };
        let entry: CertEntry =
            serde_json::from_slice(&bytes).map_err(|e| storage_err(key.clone(), e.to_string()))?;
        let key_pem = self
            .0
            .open(&key, &entry.key)
            .map_err(|e| storage_err(key.clone(), e))?;
        Ok(Some(StoredCert {
            chain_pem: entry.chain_pem,
            key_pem: String::from_utf8(key_pem).map_err(|e| storage_err(key, e.to_string()))?,
            meta: entry.meta,
        }))
    }

    fn save_cert(&self, id: &str, cert: &StoredCert) -> Result<(), StorageError> {
        let key = self.0.k(&format!("certs/{id}"));
        let entry = CertEntry {
            meta: cert.meta.clone(),
            chain_pem: cert.chain_pem.clone(),
            key: self
                .0
                .seal(&key, cert.key_pem.as_bytes())
                .map_err(|e| storage_err(key.clone(), e))?,
        };
        let value = serde_json::to_vec(&entry).unwrap_or_default();
        self.0
            .block({
                let key = key.clone();
                |f| async move { f.put(key, value, None).await }
            })
            .map_err(|e| StorageError::Write {
                path: key.into(),
                source: std::io::Error::other(e),
            })
    }

    fn describe(&self, id: &str) -> String {
        format!("etcd {}", self.0.k(&format!("certs/{id}")))
    }

    fn load_retry(&self, id: &str) -> Result<Option<RetryState>, StorageError> {
        let key = self.0.k(&format!("retry/{id}"));
        let got = self
            .0
            .block({
                let key = key.clone();
                |f| async move { f.get(key).await }
            })
            .map_err(|e| self.unreachable(&key, e))?;
        got.map(|b| serde_json::from_slice(&b).map_err(|e| storage_err(key.clone(), e.to_string())))
            .transpose()
    }

    fn save_retry(&self, id: &str, retry: Option<&RetryState>) -> Result<(), StorageError> {
        let key = self.0.k(&format!("retry/{id}"));
        let value = retry.map(|r| serde_json::to_vec(r).unwrap_or_default());
        self.0
            .block({
                let key = key.clone();
                |f| async move {
                    match value {
                        Some(v) => f.put(key, v, None).await,
                        None => f.delete(key).await,
                    }
                }
            })
            .map_err(|e| StorageError::Write {
                path: key.into(),
                source: std::io::Error::other(e),
            })
    }
}
