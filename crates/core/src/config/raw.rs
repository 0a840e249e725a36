//! The config file as written: a serde mirror of the TOML, with spans kept for error locations.
//!
//! Nothing here is validated beyond its type; `config::validate` turns it into the model.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::values::{Bytes, Duration, Text};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub certificates: Vec<Spanned<RawCertificate>>,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    /// Not `Spanned`: a service is often an implicit table (`[services.api.pools.blue]` only),
    /// which toml cannot span; its errors point at its pools or its header instead.
    pub services: BTreeMap<String, RawService>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub limits: Option<super::limits::RawLimits>,
    pub acme: Option<Spanned<super::acme::RawAcme>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<Spanned<Text>>,
    pub token: Option<Text>,
    pub token_file: Option<Spanned<Text>>,
    #[serde(default)]
    pub metrics_require_token: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<Spanned<Text>>,
    pub expect_status: Option<Spanned<u16>>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<Spanned<usize>>,
    pub drain_timeout: Option<Duration>,
    pub access_log: Option<Text>,
    pub upgrade_socket: Option<Text>,
    pub pid_file: Option<Text>,
    pub state_dir: Option<Text>,
    pub metrics: Option<bool>,
    pub merge_slashes: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<Text>,
    pub address: Spanned<Text>,
    #[serde(default)]
    pub tls: bool,
    pub h2: Option<bool>,
    #[serde(default)]
    pub redirect_https: bool,
    pub https_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<Text>,
    pub key: Spanned<Text>,
    #[serde(default)]
    pub fallback: bool,
    /// Names to serve this certificate for, instead of its subjectAltName entries.
    pub names: Option<Vec<Spanned<Text>>>,
}

/// Declares a struct with the per-route options, plus extra leading fields: the route defaults and
/// the routes share one list of options without serde's `flatten` (which defeats unknown-key errors).
macro_rules! with_route_options {
    ($(#[$meta:meta])* pub struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(pub $field: $ty,)*
            pub connect_timeout: Option<Duration>,
            pub read_timeout: Option<Duration>,
            pub send_timeout: Option<Duration>,
            pub max_body_size: Option<Bytes>,
            pub redirect_https: Option<bool>,
            pub compression: Option<bool>,
            pub websocket: Option<bool>,
            pub response_headers: Option<Spanned<BTreeMap<String, Text>>>,
            /// Rate-limit zones (by name) every request of the route must pass.
            pub limits: Option<Vec<Spanned<Text>>>,
            pub client_header_timeout: Option<Spanned<Duration>>,
            pub client_body_timeout: Option<Spanned<Duration>>,
            pub keepalive_timeout: Option<Spanned<Duration>>,
            pub forward_original_path: Option<bool>,
        }
    };
}

with_route_options! {
    /// `[defaults]`: the options every route starts from.
    pub struct RawDefaults {}
}

with_route_options! {
    /// One `[[routes]]` entry.
    pub struct RawRoute {
        host: Option<Spanned<Text>>,
        path: Option<Spanned<Text>>,
        strip_prefix: Option<bool>,
        service: Option<Spanned<Text>>,
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub weight: Option<Spanned<u32>>,
    #[serde(default)]
    pub servers: Vec<Spanned<RawServerEntry>>,
    /// This pool's own active check, instead of the service's.
    pub health: Option<Spanned<RawHealth>>,
}

/// A pool member: `"host:port"` or `{ address = "host:port", weight = 2 }`.
#[derive(Debug)]
pub struct RawServerEntry {
    pub address: Text,
    pub weight: u32,
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
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawServerEntry, A::Error> {
                let mut address = None;
                let mut weight = 1;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => address = Some(map.next_value::<Text>()?),
                        "weight" => weight = map.next_value::<u32>()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["address", "weight"]))
                        }
                    }
                }
                let address = address.ok_or_else(|| de::Error::missing_field("address"))?;
                Ok(RawServerEntry { address, weight })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}
