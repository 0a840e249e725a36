//! `[services.NAME]`: pools of servers, their weights, and active and passive health checks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::RawConfig;
use super::rollout;
use super::values::{self, Text, Weight, MAX_WEIGHT};
use super::{serialize, transport, Validator};

#[derive(Debug, Deserialize, Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub pools: BTreeMap<String, Spanned<RawPool>>,
    pub health: Option<Spanned<RawHealth>>,
    pub passive: Option<RawPassive>,
    pub rollout: Option<super::rollout::RawRollout>,
    pub sticky: Option<super::rollout::RawSticky>,
    pub pool_override: Option<Spanned<super::rollout::RawPoolOverride>>,
    pub affinity: Option<Spanned<super::affinity::RawAffinity>>,
    pub upstream: Option<super::upstream_conn::RawUpstreamConn>,
    /// Bodies of the service's routes' error answers, under the routes' own.
    pub error_pages: Option<BTreeMap<String, Spanned<super::error_pages::RawErrorPage>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub weight: Option<Spanned<u32>>,
    #[serde(default)]
    pub servers: Vec<Spanned<RawServerEntry>>,
    /// This pool's own active check, instead of the service's.
    pub health: Option<Spanned<RawHealth>>,
    /// TLS to the servers and its settings, and the HTTP version (`transport.rs`).
    pub tls: Option<Spanned<bool>>,
    pub protocol: Option<Spanned<transport::Protocol>>,
    pub sni: Option<Spanned<Text>>,
    pub ca: Option<Spanned<Text>>,
    pub verify: Option<Spanned<bool>>,
    pub client_cert: Option<Spanned<Text>>,
    pub client_key: Option<Spanned<Text>>,
}

/// A pool member: `"host:port"` or `{ address = "host:port", weight = 2, backup = true }`.
#[derive(Debug)]
pub struct RawServerEntry {
    pub address: Text,
    pub weight: u32,
    pub backup: bool,
}

impl<'de> Deserialize<'de> for RawServerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawServerEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""host:port" or { address = "host:port", weight = N }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServerEntry, E> {
                Ok(RawServerEntry {
                    address: Text::expand(v).map_err(E::custom)?,
                    weight: 1,
                    backup: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawServerEntry, A::Error> {
                let mut address = None;
                let mut weight = 1;
                let mut backup = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => address = Some(map.next_value::<Text>()?),
                        "weight" => weight = map.next_value::<u32>()?,
                        "backup" => backup = map.next_value::<bool>()?,
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["address", "weight", "backup"],
                            ))
                        }
                    }
                }
                let address = address.ok_or_else(|| de::Error::missing_field("address"))?;
                Ok(RawServerEntry {
                    address,
                    weight,
                    backup,
                })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<Spanned<Text>>,
    /// The Host of the probes, instead of the server's name.
    pub host: Option<Spanned<Text>>,
    pub expect_status: Option<Spanned<u16>>,
    pub interval: Option<values::Duration>,
    pub timeout: Option<values::Duration>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<values::Duration>,
}

/// Active health checks: every server of every pool of the service is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub path: String,
    /// The Host of the probes; the server's name (and port) when absent.
    pub host: Option<String>,
    /// The status that counts as healthy; any 2xx or 3xx when absent.
    pub expect_status: Option<u16>,
    #[serde(serialize_with = "serialize::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive checks on the request path, like nginx's max_fails/fail_timeout: `max_fails` connect
/// errors or timeouts in a row eject a server for `fail_timeout`. `max_fails = 0` turns them off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassivePolicy {
    pub max_fails: u32,
    #[serde(serialize_with = "serialize::duration")]
    pub fail_timeout: Duration,
}

impl Default for PassivePolicy {
    fn default() -> Self {
        PassivePolicy {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceConfig {
    pub name: String,
    pub balance: Balance,
    pub health: Option<HealthCheck>,
    pub passive: PassivePolicy,
    pub pools: Vec<PoolConfig>,
    /// Defaults of this service's rollouts, and its pools' live window.
    pub rollout: rollout::RolloutPolicy,
    /// Keep each client on one pool (by hash) while weights move.
    pub sticky: Option<rollout::StickyKey>,
    /// A header/cookie with which testers pick a pool.
    pub pool_override: Option<rollout::PoolOverride>,
    /// Keep each client on one server of its pool, with a cookie.
    pub affinity: Option<super::affinity::AffinityConfig>,
    /// Keep-alive and connection limits towards the servers (`[services.X.upstream]`).
    pub upstream: super::upstream_conn::UpstreamConn,
    /// Error pages of the service's routes, under each route's own (`error_pages.rs`).
    pub error_pages: super::ErrorPages,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolConfig {
    pub name: String,
    /// Checked by [`values::Weight`] when read.
    pub weight: u32,
    pub servers: Vec<ServerConfig>,
    /// The pool's own active check; `None` uses the service's.
    pub health: Option<HealthCheck>,
    /// How the servers are reached: protocol and TLS.
    #[serde(flatten)]
    pub transport: transport::Transport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    pub address: ServerAddress,
    pub weight: u32,
    /// Takes requests only while every other server of its pool is down (nginx `backup`).
    pub backup: bool,
    /// Where the entry is written (line, column), for `check`'s warnings about names.
    #[serde(skip)]
    pub at: (usize, usize),
}

/// Where a server is: an IP address, or a DNS name whose every address is a server of the pool,
/// re-resolved in the background.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddress {
    Ip(SocketAddr),
    Name { host: Arc<str>, port: u16 },
}

impl ServerAddress {
    /// An IP `address:port`, or `name:port` with a valid DNS name and a port above 0.
    pub fn parse(text: &str) -> Result<ServerAddress, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ServerAddress::Ip(addr));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("server \"{text}\" needs a port (host:port)"))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "server \"{text}\": \"{port}\" is not a port (1-65535)"
                ))
            }
        };
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return Err(format!(
                "server \"{text}\" is not a valid address (an IPv6 address is written [addr]:port)"
            ));
        }
        valid_dns_name(host).map_err(|why| format!("server \"{text}\": {why}"))?;
        Ok(ServerAddress::Name {
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }

    /// The DNS name, for a named server.
    pub fn name(&self) -> Option<&Arc<str>> {
        match self {
            ServerAddress::Ip(_) => None,
            ServerAddress::Name { host, .. } => Some(host),
        }
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddress::Ip(a) => write!(f, "{a}"),
            ServerAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for ServerAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A host name as DNS writes it: labels of letters, digits, `-` and `_` (Docker Compose service
/// names), 1 to 63 bytes each, 253 in all, no label starting or ending with `-`.
fn valid_dns_name(host: &str) -> Result<(), String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return Err("a host name has 1 to 253 characters".into());
    }
    for label in host.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(format!(
                "\"{label}\" is not a DNS label (letters, digits, - and _, 1 to 63 of them)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("DNS label \"{label}\" starts or ends with -"));
        }
    }
    Ok(())
}

impl Validator {
    pub(super) fn services(&mut self, raw: &RawConfig) -> Vec<ServiceConfig> {
        let mut out = Vec::new();
        for (name, svc) in &raw.services {
            let span = match svc.pools.values().next() {
                Some(first_pool) => first_pool.span(),
                None => self.header_span(&format!("[services.{name}]")),
            };
            if svc.pools.is_empty() {
                self.error(span.clone(), format!("service \"{name}\" has no pools"));
            }
            let mut pools = Vec::new();
            let mut sum: u64 = 0;
            for (pool_name, pool) in &svc.pools {
                let pool_spanned = pool;
                let pspan = pool.span();
                let pool = pool.get_ref();
                let weight = match &pool.weight {
                    Some(w) => match Weight::new(u64::from(*w.get_ref())) {
                        Ok(weight) => weight.get(),
                        Err(_) => {
                            self.error(
                                w.span(),
                                format!("pool weight must be at most {MAX_WEIGHT}"),
                            );
                            0
                        }
                    },
                    None => 1,
                };
                sum += u64::from(weight);
                if pool.servers.is_empty() {
                    self.error(
                        pspan.clone(),
                        format!("pool \"{pool_name}\" of service \"{name}\" has no servers"),
                    );
                }
                let mut servers = Vec::new();
                let mut schemes = Vec::new();
                for s in &pool.servers {
                    let sspan = s.span();
                    let entry = s.get_ref();
                    if !Weight::new(u64::from(entry.weight)).is_ok_and(|w| w.get() > 0) {
                        self.error(
                            sspan.clone(),
                            format!("server weight must be between 1 and {MAX_WEIGHT}"),
                        );
                        continue;
                    }
                    let (scheme, address) = transport::split_scheme(&entry.address);
                    schemes.push(Spanned::new(sspan.clone(), scheme));
                    match ServerAddress::parse(&address) {
                        Ok(address) => {
                            if servers.iter().any(|s: &ServerConfig| s.address == address) {
                                self.error(
                                    sspan.clone(),
                                    format!(
                                        "server {address} is listed twice in pool \"{pool_name}\""
                                    ),
                                );
                            }
                            servers.push(ServerConfig {
                                address,
                                weight: entry.weight,
                                backup: entry.backup,
                                at: self.line_col(sspan.start),
                            });
                        }
                        Err(why) => self.error(sspan.clone(), why),
                    }
                }
                let health = pool.health.as_ref().map(|h| self.health(h));
                let transport = self.transport(name, pool_name, pool_spanned, &schemes);
                pools.push(PoolConfig {
                    name: pool_name.clone(),
                    weight,
                    servers,
                    health,
                    transport,
                });
            }
            if !svc.pools.is_empty() && sum == 0 {
                self.error(
                    span,
                    format!(
                        "weights of service \"{name}\" sum to 0; at least one pool needs a weight above 0"
                    ),
                );
            }
            let health = svc.health.as_ref().map(|h| self.health(h));
            let defaults = PassivePolicy::default();
            let passive = svc
                .passive
                .as_ref()
                .map_or(defaults.clone(), |p| PassivePolicy {
                    max_fails: p.max_fails.unwrap_or(defaults.max_fails),
                    fail_timeout: p.fail_timeout.map_or(defaults.fail_timeout, |d| d.0),
                });
            let rollout = self.rollout_policy(svc.rollout.as_ref());
            let sticky = svc.sticky.as_ref().and_then(|s| self.sticky(s));
            let pool_override = svc
                .pool_override
                .as_ref()
                .and_then(|o| self.pool_override(o));
            let affinity = svc
                .affinity
                .as_ref()
                .and_then(|a| self.affinity(a, sticky.as_ref(), pool_override.as_ref()));
            let upstream = self.upstream_conn(svc.upstream.as_ref());
            let error_pages = svc
                .error_pages
                .as_ref()
                .map_or_else(Default::default, |p| self.error_pages(p));
            out.push(ServiceConfig {
                error_pages,
                upstream,
                name: name.clone(),
                balance: svc.balance,
                health,
                passive,
                pools,
                rollout,
                sticky,
                pool_override,
                affinity,
            });
        }
        out
    }

    fn health(&mut self, raw: &Spanned<RawHealth>) -> HealthCheck {
        let h = raw.get_ref();
        let path = match &h.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(
                    p.span(),
                    format!("health check path \"{}\" must start with /", p.get_ref()),
                );
                "/".to_string()
            }
            Some(p) => p.get_ref().0.clone(),
            None => "/health/ready".to_string(),
        };
        if let Some(s) = &h.expect_status {
            if !(100..=599).contains(s.get_ref()) {
                self.error(
                    s.span(),
                    format!("expect_status {} is not an HTTP status", s.get_ref()),
                );
            }
        }
        let host = h.host.as_ref().and_then(|host| {
            let text: &str = host.get_ref();
            let valid = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b));
            if !valid {
                self.error(
                    host.span(),
                    format!(
                        "health check host \"{text}\" is not a host name (with an optional :port)"
                    ),
                );
            }
            valid.then(|| text.to_string())
        });
        let interval = h.interval.map_or(Duration::from_secs(2), |d| d.0);
        let timeout = h.timeout.map_or(Duration::from_secs(1), |d| d.0);
        if interval.is_zero() || timeout.is_zero() {
            self.error(
                raw.span(),
                "health check interval and timeout must be above 0",
            );
        }
        let healthy_threshold = self.threshold(&h.healthy_threshold, 2);
        let unhealthy_threshold = self.threshold(&h.unhealthy_threshold, 3);
        HealthCheck {
            path,
            host,
            expect_status: h.expect_status.as_ref().map(|s| *s.get_ref()),
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    fn threshold(&mut self, t: &Option<Spanned<u32>>, default: u32) -> u32 {
        match t {
            Some(v) if *v.get_ref() == 0 => {
                self.error(v.span(), "thresholds must be at least 1");
                1
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }
}
