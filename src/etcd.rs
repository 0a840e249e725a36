//! The etcd client as the fleet uses it: connection options from `[cluster]`, calls bounded by its timeout, and the key layout under its prefix.

use std::time::Duration;

use base64::Engine;
use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, TlsOptions, WatchOptions};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::ClusterConfig;

pub use etcd_client::Client;

/// The etcd keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(cfg: &ClusterConfig) -> Keys {
        Keys {
            prefix: cfg.prefix.clone(),
        }
    }

    pub fn services(&self) -> String {
        format!("{}/services/", self.prefix)
    }
    pub fn service(&self, name: &str) -> String {
        format!("{}/services/{name}", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }
    pub fn tickets(&self) -> String {
        format!("{}/tls/tickets/", self.prefix)
    }
    pub fn windows(&self) -> String {
        format!("{}/windows/", self.prefix)
    }
    pub fn window(&self, node: &str) -> String {
        format!("{}/windows/{node}", self.prefix)
    }
    pub fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }
}

/// An etcd call bounded by `timeout`, its error as text.
pub async fn bounded<T>(
    timeout: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what}: {e}")),
        Err(_) => Err(format!(
            "etcd {what}: no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// The etcd client's options: the connect timeout, HTTP/2 keep-alive (so a dead etcd is noticed
/// while idle), user and password, TLS files. Calls are bounded one by one ([`bounded`]), not
/// here: a campaign waits as long as another node leads.
pub fn options(cfg: &ClusterConfig) -> Result<ConnectOptions, String> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(cfg.timeout)
        .with_keep_alive(Duration::from_secs(1), cfg.timeout)
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        o = o.with_user(user.clone(), password.expose().clone());
    }
    if cfg.etcd.iter().any(|e| e.starts_with("https://")) {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("cannot read \"{}\": {e}", p.display()))
        };
        let mut tls = TlsOptions::new();
        if let Some(ca) = &cfg.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        } else {
            tls = tls.with_native_roots();
        }
        if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        o = o.with_tls(tls);
    }
    Ok(o)
}

/// Lists the keys under `prefix`, then watches them from the listing's revision on.
pub async fn list_then_watch(
    client: &mut Client,
    timeout: Duration,
    what: &str,
    prefix: &str,
) -> Result<(etcd_client::GetResponse, etcd_client::WatchStream), String> {
    let listing = bounded(
        timeout,
        &format!("{what}list"),
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = listing.header().map_or(0, |h| h.revision());
    let watch = watch_from(client, timeout, what, prefix, revision + 1).await?;
    Ok((listing, watch))
}

/// Says a watch ended because etcd compacted the history it was to start from (in the error
/// [`next_events`] returns): the follower must list the whole state again.
pub const COMPACTED: &str = "history compacted";

/// Watches the keys under `prefix` from the revision after `seen` (the last one this node
/// applied), so every change made since comes on the watch, deletions included, without
/// listing the whole state again; `None` where etcd has compacted its history past `seen` (a
/// read at `seen` says so first; a compaction after that read ends the watch with
/// [`COMPACTED`]).
pub async fn resume_watch(
    client: &mut Client,
    timeout: Duration,
    prefix: &str,
    seen: i64,
) -> Result<Option<etcd_client::WatchStream>, String> {
    let check = client.get(
        prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_revision(seen),
        ),
    );
    match bounded(timeout, "history check", check).await {
        Err(e) if e.contains("compacted") => Ok(None),
        Err(e) => Err(e),
        Ok(_) => watch_from(client, timeout, "", prefix, seen + 1)
            .await
            .map(Some),
    }
}

/// A watch of the keys under `prefix` from `revision` on.
async fn watch_from(
    client: &mut Client,
    timeout: Duration,
    what: &str,
    prefix: &str,
    revision: i64,
) -> Result<etcd_client::WatchStream, String> {
    bounded(
        timeout,
        &format!("{what}watch"),
        client.watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision),
            ),
        ),
    )
    .await
}

/// The next answer of a watch; a watch that ended, failed or was canceled (its start revision
/// compacted) is an error naming it (`what`: "" or "window ", as [`list_then_watch`] takes it).
pub async fn next_events(
    watch: &mut etcd_client::WatchStream,
    what: &str,
) -> Result<etcd_client::WatchResponse, String> {
    match watch.message().await {
        Ok(Some(resp)) if resp.canceled() && resp.compact_revision() > 0 => Err(format!(
            "etcd {what}watch: {COMPACTED} (to revision {})",
            resp.compact_revision()
        )),
        Ok(Some(resp)) if resp.canceled() => Err(format!(
            "etcd {what}watch canceled: {}",
            resp.cancel_reason()
        )),
        Ok(Some(resp)) => Ok(resp),
        Ok(None) => Err(format!("etcd {what}watch: the stream ended")),
        Err(e) => Err(format!("etcd {what}watch: {e}")),
    }
}

/// Connects to the fleet's etcd (bounded by `[cluster] timeout`).
pub async fn connect(cfg: &ClusterConfig) -> Result<Client, String> {
    bounded(
        cfg.timeout,
        "connect",
        Client::connect(&cfg.etcd, Some(options(cfg)?)),
    )
    .await
}

/// Secrets the fleet keeps in etcd, sealed with `[cluster] encryption_key`: AES-256-GCM with the
/// etcd key as associated data (a sealed value cannot be moved to another key) and a random
/// nonce, written `v1:` + base64(nonce || ciphertext || tag).
pub struct Sealer(LessSafeKey);

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!());
        Sealer(LessSafeKey::new(unbound))
    }

    pub fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce")?;
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "sealing failed")?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "v1:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let body = sealed
            .strip_prefix("v1:")
            .ok_or("not a sealed value (no v1: prefix)")?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("not base64: {e}"))?;
        if bytes.len() < 12 + 16 {
            return Err("too short".into());
        }
        let mut rest = bytes.split_off(12);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| "bad nonce")?;
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut rest)
            .map_err(|_| {
                "cannot decrypt: another encryption_key sealed it, or it was altered".to_string()
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let a = Sealer::new(&[7; 32]);
        let sealed = a.seal("/p/acme/certs/x", b"secret").expect("seal");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("secret"));
        assert_eq!(a.open("/p/acme/certs/x", &sealed).expect("open"), b"secret");
        assert!(
            a.open("/p/acme/certs/y", &sealed).is_err(),
            "moved to another key"
        );
        assert!(Sealer::new(&[8; 32])
            .open("/p/acme/certs/x", &sealed)
            .is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(a.open("/p/acme/certs/x", &tampered).is_err());
        assert!(a.open("/p/acme/certs/x", "plain").is_err());
    }
}
