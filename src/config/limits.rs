//! The `[limits]` table: rate-limit zones, trusted proxies, connection caps, exempt paths.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::values::Text;
use super::Validator;
use crate::limits::client_ip::{IpNet, TrustedProxies};
use crate::limits::conn::ConnCaps;
use crate::limits::{KeyKind, Rate, ZoneSpec};

/// Keys a zone holds at most by default: about 2 MB per zone (see docs/limits.md).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<Text>>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_connections_per_ip: Option<Spanned<usize>>,
    #[serde(default)]
    pub exempt_paths: Vec<Spanned<Text>>,
    #[serde(default)]
    pub zones: BTreeMap<String, Spanned<RawZone>>,
    #[serde(default)]
    pub rate_limit_headers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    pub key: Option<Spanned<Text>>,
    pub rate: Spanned<Text>,
    #[serde(default)]
    pub burst: u32,
    pub max_keys: Option<Spanned<usize>>,
}

/// The validated `[limits]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    pub trusted_proxies: TrustedProxies,
    pub connections: ConnCaps,
    /// Path prefixes no zone applies to (on every host).
    pub exempt_paths: Vec<String>,
    pub zones: Vec<ZoneSpec>,
    /// RateLimit-Limit/Remaining/Reset on responses that passed (a 429 always has them).
    pub rate_limit_headers: bool,
}

impl Validator {
    pub(super) fn limits(&mut self, raw: &RawLimits) -> LimitsConfig {
        let mut trusted = Vec::new();
        for net in &raw.trusted_proxies {
            match IpNet::parse(net.get_ref()) {
                Ok(n) => trusted.push(n),
                Err(e) => self.error(net.span(), e),
            }
        }
        let mut cap = |v: &Option<Spanned<usize>>| match v {
            Some(n) if *n.get_ref() == 0 => {
                self.error(
                    n.span(),
                    "a connection cap must be at least 1 (leave it out for none)",
                );
                None
            }
            Some(n) => Some(*n.get_ref()),
            None => None,
        };
        let connections = ConnCaps {
            total: cap(&raw.max_connections),
            per_ip: cap(&raw.max_connections_per_ip),
        };
        let mut exempt_paths = Vec::new();
        for p in &raw.exempt_paths {
            if p.get_ref().starts_with('/') {
                exempt_paths.push(p.get_ref().trim_end_matches('/').to_string());
            } else {
                self.error(
                    p.span(),
                    format!("exempt path \"{}\" must start with /", p.get_ref()),
                );
            }
        }
        let mut zones = Vec::new();
        for (name, zone) in &raw.zones {
            let z = zone.get_ref();
            let key = match z.key.as_ref().map(|k| (k.span(), k.get_ref().0.as_str())) {
                None | Some((_, "client_ip")) => KeyKind::ClientIp,
                Some((_, "client_ip_route")) => KeyKind::ClientIpRoute,
                Some((span, other)) => match other.strip_prefix("header:") {
                    Some(h)
                        if http::header::HeaderName::from_bytes(h.trim().as_bytes()).is_ok() =>
                    {
                        KeyKind::Header(h.trim().to_ascii_lowercase())
                    }
                    _ => {
                        self.error(
                            span,
                            format!(
                                "invalid zone key \"{other}\" (expected \"client_ip\", \"client_ip_route\" or \"header:NAME\")"
                            ),
                        );
                        continue;
                    }
                },
            };
            let rate = match Rate::parse(z.rate.get_ref()) {
                Ok(r) => r,
                Err(e) => {
                    self.error(z.rate.span(), e);
                    continue;
                }
            };
            let max_keys = match &z.max_keys {
                Some(m) if *m.get_ref() < 64 => {
                    self.error(m.span(), "max_keys must be at least 64");
                    continue;
                }
                Some(m) => *m.get_ref(),
                None => DEFAULT_MAX_KEYS,
            };
            zones.push(ZoneSpec {
                name: name.clone(),
                key,
                rate,
                burst: z.burst,
                max_keys,
            });
        }
        LimitsConfig {
            trusted_proxies: TrustedProxies(trusted),
            connections,
            exempt_paths,
            zones,
            rate_limit_headers: raw.rate_limit_headers,
        }
    }
}
