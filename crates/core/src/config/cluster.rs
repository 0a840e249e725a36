//! The `[cluster]` table: the etcd endpoints (and Redis) a fleet of nodes shares its runtime state through.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::RawConfig;
use super::values::{self, Text};
use super::{serialize, Validator};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub etcd: Option<Vec<Spanned<Text>>>,
    pub prefix: Option<Spanned<Text>>,
    pub node: Option<Spanned<Text>>,
    pub username: Option<Text>,
    pub password: Option<Text>,
    pub ca: Option<Spanned<Text>>,
    pub cert: Option<Spanned<Text>>,
    pub key: Option<Spanned<Text>>,
    pub lease_ttl: Option<values::Duration>,
    pub timeout: Option<values::Duration>,
    pub redis: Option<Spanned<Text>>,
    pub redis_ca: Option<Spanned<Text>>,
    pub redis_cert: Option<Spanned<Text>>,
    pub redis_key: Option<Spanned<Text>>,
    pub redis_timeout: Option<values::Duration>,
    pub encryption_key: Option<Spanned<Text>>,
}

/// How this node joins its fleet (absent: the node is on its own, as without `[cluster]`).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://host:2379` or `https://`), tried in turn.
    pub etcd: Vec<String>,
    /// Every key the fleet writes lives under this prefix (no trailing `/`).
    pub prefix: String,
    /// This node's name in the fleet (default: the host name).
    pub node: String,
    /// etcd user and password (etcd's own auth), if it needs them.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The CA that signs etcd's certificate (https endpoints); none: the system's roots.
    #[serde(serialize_with = "serialize::opt_path")]
    pub ca: Option<PathBuf>,
    /// A client certificate and key for etcd's mTLS.
    #[serde(serialize_with = "serialize::opt_path")]
    pub cert: Option<PathBuf>,
    #[serde(serialize_with = "serialize::opt_path")]
    pub key: Option<PathBuf>,
    /// The TTL of this node's lease: its entry in the node list and its leadership end this long
    /// after it stops renewing them.
    #[serde(serialize_with = "serialize::duration")]
    pub lease_ttl: Duration,
    /// The longest an etcd call may take (a write, a read); past it the node counts etcd as
    /// unreachable.
    #[serde(serialize_with = "serialize::duration")]
    pub timeout: Duration,
    /// Redis for `scope = "cluster"` zones (`redis://` or `rediss://`).
    pub redis: Option<Secret>,
    /// The CA that signs Redis's certificate (`rediss://`); none: the system's roots.
    #[serde(serialize_with = "serialize::opt_path")]
    pub redis_ca: Option<PathBuf>,
    /// A client certificate and key for Redis's mTLS (`tls-auth-clients`).
    #[serde(serialize_with = "serialize::opt_path")]
    pub redis_cert: Option<PathBuf>,
    #[serde(serialize_with = "serialize::opt_path")]
    pub redis_key: Option<PathBuf>,
    /// The most a Redis call may add to a request; past it the zone falls back to a local limit.
    #[serde(serialize_with = "serialize::duration")]
    pub redis_timeout: Duration,
    /// The key (AES-256-GCM) that ACME account and certificate keys are encrypted with in etcd:
    /// 32 bytes as 64 hex digits or base64. Needed with `[acme]`.
    pub encryption_key: Option<Secret<[u8; 32]>>,
}

impl Validator {
    pub(super) fn cluster(&mut self, raw: &RawConfig) -> Option<ClusterConfig> {
        let c = raw.cluster.as_ref()?;
        let header = c.span();
        let c = c.get_ref();
        let mut etcd = Vec::new();
        match &c.etcd {
            None => self.error(
                header.clone(),
                "[cluster] needs etcd = [\"http://HOST:2379\", ...]",
            ),
            Some(list) if list.is_empty() => {
                self.error(header.clone(), "[cluster] etcd lists no endpoint")
            }
            Some(list) => {
                for e in list {
                    let text: &str = e.get_ref();
                    let ok = text.parse::<http::Uri>().ok().filter(|u| {
                        matches!(u.scheme_str(), Some("http" | "https"))
                            && u.host().is_some()
                            && u.path() == "/"
                    });
                    match ok {
                        Some(_) => etcd.push(text.trim_end_matches('/').to_string()),
                        None => self.error(
                            e.span(),
                            format!(
                                "etcd endpoint \"{text}\" is not an http:// or https:// URL with a host and no path"
                            ),
                        ),
                    }
                }
            }
        }
        let prefix = match &c.prefix {
            None => "/switchyard".to_string(),
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                if !text.starts_with('/') || text.len() < 2 || text.contains("//") {
                    self.error(
                        p.span(),
                        format!("prefix \"{}\" must start with / and name at least one segment, without empty segments", p.get_ref().0),
                    );
                }
                text.to_string()
            }
        };
        let node = match &c.node {
            Some(n) => {
                let text: &str = n.get_ref();
                if !valid_node_name(text) {
                    self.error(
                        n.span(),
                        format!("node \"{text}\" must be 1 to 63 letters, digits, '-', '_' or '.'"),
                    );
                }
                text.to_string()
            }
            None => match host_name() {
                Some(h) if valid_node_name(&h) => h,
                _ => {
                    self.error(
                        header.clone(),
                        "[cluster] node is not set and the host name cannot serve as one; set node = \"NAME\"",
                    );
                    String::new()
                }
            },
        };
        if c.password.is_some() != c.username.is_some() {
            self.error(
                header.clone(),
                "[cluster] username and password go together",
            );
        }
        if c.cert.is_some() != c.key.is_some() {
            self.error(header.clone(), "[cluster] cert and key go together");
        }
        let tls_files = [&c.ca, &c.cert, &c.key];
        let any_https = etcd.iter().any(|e| e.starts_with("https://"));
        if !any_https {
            if let Some(f) = tls_files.iter().copied().flatten().next() {
                self.error(
                    f.span(),
                    "ca, cert and key apply to https:// etcd endpoints; none is https://",
                );
            }
        }
        let mut file = |f: &Option<Spanned<Text>>| {
            f.as_ref().map(|f| {
                let path = self.resolve_path(f.get_ref());
                if !path.is_file() {
                    self.error(
                        f.span(),
                        format!("cannot read \"{}\": no such file", path.display()),
                    );
                }
                path
            })
        };
        let (ca, cert, key) = (file(&c.ca), file(&c.cert), file(&c.key));
        let (redis_ca, redis_cert, redis_key) =
            (file(&c.redis_ca), file(&c.redis_cert), file(&c.redis_key));
        let lease_ttl = c.lease_ttl.map_or(Duration::from_secs(5), |d| d.0);
        if lease_ttl < Duration::from_secs(2) || lease_ttl > Duration::from_secs(300) {
            let span = self.header_span("lease_ttl");
            self.error(span, "lease_ttl must be between 2s and 300s");
        }
        let timeout = c.timeout.map_or(Duration::from_secs(2), |d| d.0);
        if timeout.is_zero() {
            let span = self.header_span("timeout");
            self.error(span, "timeout must be above 0");
        }
        let redis = c.redis.as_ref().map(|r| {
            let text: &str = r.get_ref();
            let tcp = text.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("redis" | "rediss")) && u.host().is_some()
            });
            // A Redis on the same machine, over its Unix socket (cheaper than loopback TCP).
            let unix = ["unix://", "redis+unix://"]
                .iter()
                .any(|s| text.strip_prefix(s).is_some_and(|p| p.starts_with('/')));
            if !tcp && !unix {
                self.error(
                    r.span(),
                    "redis must be a redis:// or rediss:// URL with a host, or unix:///PATH (a socket)",
                );
            }
            Secret::new(text.to_string())
        });
        if c.redis_cert.is_some() != c.redis_key.is_some() {
            self.error(
                header.clone(),
                "[cluster] redis_cert and redis_key go together",
            );
        }
        let rediss = c
            .redis
            .as_ref()
            .is_some_and(|r| r.get_ref().0.starts_with("rediss://"));
        if !rediss {
            if let Some(f) = [&c.redis_ca, &c.redis_cert, &c.redis_key]
                .into_iter()
                .flatten()
                .next()
            {
                self.error(
                    f.span(),
                    "redis_ca, redis_cert and redis_key apply to a rediss:// redis",
                );
            }
        }
        let redis_timeout = c.redis_timeout.map_or(Duration::from_millis(5), |d| d.0);
        if redis_timeout.is_zero() {
            let span = self.header_span("redis_timeout");
            self.error(span, "redis_timeout must be above 0");
        }
        let encryption_key = c.encryption_key.as_ref().and_then(|k| {
            let key = parse_key(k.get_ref());
            if key.is_none() {
                self.error(
                    k.span(),
                    "encryption_key must be 32 bytes as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)",
                );
            }
            key.map(Secret::new)
        });
        if raw.acme.is_some() && c.encryption_key.is_none() {
            self.error(
                header.clone(),
                "[cluster] with [acme] needs encryption_key: the fleet keeps ACME keys in etcd, encrypted with it",
            );
        }
        Some(ClusterConfig {
            encryption_key,
            etcd,
            prefix,
            node,
            username: c.username.as_ref().map(|u| u.0.clone()),
            password: c.password.as_ref().map(|p| Secret::new(p.0.clone())),
            ca,
            cert,
            key,
            lease_ttl,
            timeout,
            redis,
            redis_ca,
            redis_cert,
            redis_key,
            redis_timeout,
        })
    }
}

/// Node names go into etcd keys and metric labels: a DNS label's characters (plus `_`, `.`).
fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// 32 bytes from 64 hex digits or standard base64.
fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes: Vec<u8> = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<_>>()?
    } else {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    bytes.try_into().ok()
}
