//! The etcd client as the fleet uses it: connection options from `[cluster]`, calls bounded by its timeout, and the key layout under its prefix.

use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

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

/// Connects to the fleet's etcd (bounded by `[cluster] timeout`).
pub async fn connect(cfg: &ClusterConfig) -> Result<Client, String> {
    bounded(
        cfg.timeout,
        "connect",
        Client::connect(&cfg.etcd, Some(options(cfg)?)),
    )
    .await
}
