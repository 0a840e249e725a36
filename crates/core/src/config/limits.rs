//! The `[limits]` table: rate-limit zones, trusted proxies, connection caps, exempt paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{Bytes, Text};
use super::{serialize, Validator};
use crate::limits::client_ip::{IpNet, TrustedProxies};
use crate::limits::conn::ConnCaps;
use crate::limits::{KeyKind, Rate, Scope, ZoneKind, ZoneSpec, DEFAULT_STATUS};

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
    pub max_request_line: Option<Spanned<Bytes>>,
    pub max_header_line: Option<Spanned<Bytes>>,
    pub max_header_size: Option<Spanned<Bytes>>,
    /// The status of every zone's refusal unless the zone sets its own (429 by default).
    pub status: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    /// `"rate"` (GCRA, the default), `"window"` or `"concurrency"`.
    pub kind: Option<Spanned<Text>>,
    pub key: Option<Spanned<Text>>,
    pub rate: Option<Spanned<Text>>,
    pub burst: Option<Spanned<u32>>,
    /// Requests in progress at once per key (`concurrency`).
    pub max: Option<Spanned<u32>>,
    pub max_keys: Option<Spanned<usize>>,
    pub status: Option<Spanned<u16>>,
    /// `"node"` (the default) or `"cluster"` (counters in `[cluster] redis`).
    pub scope: Option<Spanned<Text>>,
}

/// The validated `[limits]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LimitsConfig {
    #[serde(serialize_with = "serialize::trusted_proxies")]
    pub trusted_proxies: TrustedProxies,
    /// Shown as `max_connections` and `max_connections_per_ip`, the config's keys.
    #[serde(flatten, serialize_with = "serialize::conn_caps")]
    pub connections: ConnCaps,
    /// Path prefixes no zone applies to (on every host).
    pub exempt_paths: Vec<String>,
    #[serde(serialize_with = "serialize::zones")]
    pub zones: Vec<ZoneSpec>,
    /// RateLimit-Limit/Remaining/Reset on responses that passed (a 429 always has them).
    pub rate_limit_headers: bool,
    /// Size limits on an HTTP/1 request head (the h2 header list is bounded by `total`).
    pub head: HeadLimits,
    /// The refusal status of zones that do not set their own.
    pub status: u16,
}

/// Size limits on a request head, in bytes: nginx's `large_client_header_buffers 4 8k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeadLimits {
    /// The request line; longer is answered 414.
    pub request_line: usize,
    /// Each header line; longer is answered 431.
    pub header_line: usize,
    /// The request line and all header lines together; larger is answered 431.
    pub total: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            request_line: 8 << 10,
            header_line: 8 << 10,
            total: 32 << 10,
        }
    }
}

/// The smallest and largest head limit accepted: below 1 KB ordinary browsers fail, above 1 MB
/// is more than the HTTP parser reads.
const HEAD_LIMIT_RANGE: (u64, u64) = (1 << 10, 1 << 20);

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
                if self.normal_path(p).is_some() {
                    exempt_paths.push(p.get_ref().trim_end_matches('/').to_string());
                }
            } else {
                self.error(
                    p.span(),
                    format!("exempt path \"{}\" must start with /", p.get_ref()),
                );
            }
        }
        let status = raw
            .status
            .as_ref()
            .map_or(DEFAULT_STATUS, |s| self.refusal_status(s));
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
            let Some(kind) = self.zone_kind(name, zone.span(), z) else {
                continue;
            };
            let scope = match z.scope.as_ref().map(|s| (s.span(), s.get_ref().0.as_str())) {
                None | Some((_, "node")) => Scope::Node,
                Some((span, "cluster")) => {
                    if matches!(kind, ZoneKind::Concurrency { .. }) {
                        self.error(
                            span,
                            format!("concurrency zone \"{name}\" cannot be scope = \"cluster\" (requests in progress are counted per node; only rate and window zones are shared)"),
                        );
                        continue;
                    }
                    self.cluster_zones.push((name.clone(), span));
                    Scope::Cluster
                }
                Some((span, other)) => {
                    self.error(
                        span,
                        format!(
                            "unknown zone scope \"{other}\" (expected \"node\" or \"cluster\")"
                        ),
                    );
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
                kind,
                max_keys,
                status: z.status.as_ref().map_or(status, |s| self.refusal_status(s)),
                scope,
            });
        }
        LimitsConfig {
            trusted_proxies: TrustedProxies(trusted),
            connections,
            exempt_paths,
            zones,
            rate_limit_headers: raw.rate_limit_headers,
            head: self.head_limits(raw),
            status,
        }
    }

    /// A refusal status: 400 to 599 (nginx's `limit_req_status` range).
    fn refusal_status(&mut self, s: &Spanned<u16>) -> u16 {
        let v = *s.get_ref();
        if (400..=599).contains(&v) {
            v
        } else {
            self.error(s.span(), format!("status {v} must be between 400 and 599"));
            DEFAULT_STATUS
        }
    }

    /// A zone's kind and what it counts: `rate` + `burst`, `window` + `rate`, `concurrency` +
    /// `max`, each refusing the others' keys.
    fn zone_kind(
        &mut self,
        name: &str,
        span: std::ops::Range<usize>,
        z: &RawZone,
    ) -> Option<ZoneKind> {
        let kind = z.kind.as_ref().map_or("rate", |k| k.get_ref().0.as_str());
        let kind_span = z.kind.as_ref().map_or(span.clone(), |k| k.span());
        let rate = |this: &mut Self| match &z.rate {
            None => {
                this.error(
                    span.clone(),
                    format!("{kind} zone \"{name}\" needs a `rate`"),
                );
                None
            }
            Some(r) => match Rate::parse(r.get_ref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    this.error(r.span(), e);
                    None
                }
            },
        };
        let refuse = |this: &mut Self, key: &str, present: Option<std::ops::Range<usize>>| {
            if let Some(at) = present {
                this.error(at, format!("`{key}` does not apply to a {kind} zone"));
            }
        };
        match kind {
            "rate" => {
                refuse(self, "max", z.max.as_ref().map(|m| m.span()));
                let burst = z.burst.as_ref().map_or(0, |b| *b.get_ref());
                Some(ZoneKind::Rate {
                    rate: rate(self)?,
                    burst,
                })
            }
            "window" => {
                refuse(self, "max", z.max.as_ref().map(|m| m.span()));
                refuse(self, "burst", z.burst.as_ref().map(|b| b.span()));
                Some(ZoneKind::Window { rate: rate(self)? })
            }
            "concurrency" => {
                refuse(self, "rate", z.rate.as_ref().map(|r| r.span()));
                refuse(self, "burst", z.burst.as_ref().map(|b| b.span()));
                match &z.max {
                    Some(m) if *m.get_ref() >= 1 => {
                        Some(ZoneKind::Concurrency { max: *m.get_ref() })
                    }
                    Some(m) => {
                        self.error(m.span(), "max must be at least 1");
                        None
                    }
                    None => {
                        self.error(span, format!("concurrency zone \"{name}\" needs `max`"));
                        None
                    }
                }
            }
            other => {
                self.error(
                    kind_span,
                    format!("unknown zone kind \"{other}\" (expected \"rate\", \"window\" or \"concurrency\")"),
                );
                None
            }
        }
    }

    fn head_limits(&mut self, raw: &RawLimits) -> HeadLimits {
        let default = HeadLimits::default();
        let mut size = |key: &str, v: &Option<Spanned<Bytes>>, default: usize| match v {
            Some(b) if !(HEAD_LIMIT_RANGE.0..=HEAD_LIMIT_RANGE.1).contains(&b.get_ref().0) => {
                self.error(
                    b.span(),
                    format!(
                        "{key} must be between 1KB and 1MB, not {} bytes",
                        b.get_ref().0
                    ),
                );
                default
            }
            Some(b) => b.get_ref().0 as usize,
            None => default,
        };
        let head = HeadLimits {
            request_line: size(
                "max_request_line",
                &raw.max_request_line,
                default.request_line,
            ),
            header_line: size("max_header_line", &raw.max_header_line, default.header_line),
            total: size("max_header_size", &raw.max_header_size, default.total),
        };
        let smallest = head.request_line.max(head.header_line);
        if head.total < smallest {
            let span = raw
                .max_header_size
                .as_ref()
                .or(raw.max_request_line.as_ref())
                .or(raw.max_header_line.as_ref())
                .map_or(0..0, |b| b.span());
            self.error(
                span,
                format!(
                    "max_header_size ({} bytes) must be at least max_request_line and max_header_line ({smallest} bytes)",
                    head.total
                ),
            );
        }
        head
    }
}
