//! The `[tls]` table: protocol versions, cipher suites and key-exchange groups of the TLS listeners (by IANA or OpenSSL name), session resumption and OCSP stapling.
//!
//! Names are sorted into three kinds of refusal, each its own error: a name nobody knows, a
//! known name that is weak (CBC, RC4, 3DES, NULL, EXPORT, anonymous or static-RSA key exchange),
//! and a known, sound name this build cannot offer (rustls with ring has the AES-GCM and
//! ChaCha20-Poly1305 suites with ECDHE, and the X25519, P-256 and P-384 groups).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, NamedGroup, SupportedProtocolVersion};

pub use super::tls_names::{cipher_suite, kx_group, NameError};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use super::values::{self, Text};
use super::Validator;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub min_version: Option<Spanned<Text>>,
    pub cipher_suites: Option<Spanned<Names>>,
    pub kx_groups: Option<Spanned<Names>>,
    pub session_cache: Option<Spanned<i64>>,
    pub session_tickets: Option<bool>,
    pub ticket_rotation: Option<Spanned<values::Duration>>,
    pub ocsp_stapling: Option<bool>,
}

/// A list of names: a TOML array of strings, or one string with names separated by `:` (as
/// nginx's `ssl_ciphers` and `ssl_ecdh_curve` write them).
#[derive(Debug)]
pub enum Names {
    List(Vec<Spanned<Text>>),
    Joined(Text),
}

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamesVisitor;
        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = Names;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of names, or one string of names separated by \":\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Names, E> {
                Text::expand(s).map(Names::Joined).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<Spanned<Text>>()? {
                    out.push(name);
                }
                Ok(Names::List(out))
            }
        }
        d.deserialize_any(NamesVisitor)
    }
}

/// The lowest protocol version offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

/// The validated `[tls]` table: what every TLS listener offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsPolicy {
    pub min_version: TlsVersion,
    /// In order of preference; empty: the defaults. A protocol version none of whose suites is
    /// listed keeps its default suites (as OpenSSL's cipher list leaves TLS 1.3 alone).
    #[serde(serialize_with = "debug_names")]
    pub cipher_suites: Vec<CipherSuite>,
    /// In order of preference; empty: the defaults (X25519, P-256, P-384).
    #[serde(serialize_with = "debug_names")]
    pub kx_groups: Vec<NamedGroup>,
    /// Sessions kept for resumption by session id (TLS 1.2) and stateful tickets (TLS 1.3); 0: none.
    pub session_cache: usize,
    /// Stateless session tickets, their keys shared by every worker and rotated every
    /// `ticket_rotation` (a ticket is accepted for twice that).
    pub session_tickets: bool,
    #[serde(serialize_with = "super::serialize::duration")]
    pub ticket_rotation: Duration,
    /// Staple OCSP responses to certificates that name a responder (fetched in the background).
    pub ocsp_stapling: bool,
}

fn debug_names<T: fmt::Debug, S: Serializer>(list: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|n| format!("{n:?}")))
}

/// Sessions kept by default (nginx's `ssl_session_cache shared:SSL:5m` holds about 20,000).
pub const DEFAULT_SESSION_CACHE: usize = 20_000;
/// How often ticket keys change by default.
pub const DEFAULT_TICKET_ROTATION: Duration = Duration::from_secs(12 * 3600);
/// Tickets are accepted for twice the rotation, and RFC 8446 allows at most 7 days.
const MAX_TICKET_ROTATION: Duration = Duration::from_secs(84 * 3600);

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            min_version: TlsVersion::Tls12,
            cipher_suites: Vec::new(),
            kx_groups: Vec::new(),
            session_cache: DEFAULT_SESSION_CACHE,
            session_tickets: true,
            ticket_rotation: DEFAULT_TICKET_ROTATION,
            ocsp_stapling: true,
        }
    }
}

impl TlsPolicy {
    /// The protocol versions offered.
    pub fn versions(&self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: &[&SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self.min_version {
            TlsVersion::Tls12 => BOTH,
            TlsVersion::Tls13 => TLS13,
        }
    }

    /// The ring provider with the listed suites and groups, in the listed order.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let defaults = provider.cipher_suites.clone();
            let listed = |tls13: bool| {
                let mine: Vec<_> = self
                    .cipher_suites
                    .iter()
                    .filter_map(|s| defaults.iter().find(|d| d.suite() == *s))
                    .filter(|d| d.tls13().is_some() == tls13)
                    .copied()
                    .collect();
                if mine.is_empty() {
                    defaults
                        .iter()
                        .filter(|d| d.tls13().is_some() == tls13)
                        .copied()
                        .collect()
                } else {
                    mine
                }
            };
            provider.cipher_suites = listed(true);
            provider.cipher_suites.extend(listed(false));
        }
        if !self.kx_groups.is_empty() {
            let all = rustls::crypto::ring::ALL_KX_GROUPS;
            provider.kx_groups = self
                .kx_groups
                .iter()
                .filter_map(|g| all.iter().find(|k| k.name() == *g).copied())
                .collect();
        }
        Arc::new(provider)
    }
}

impl Validator {
    pub(super) fn tls_policy(&mut self, raw: Option<&RawTls>) -> TlsPolicy {
        let mut policy = TlsPolicy::default();
        let Some(raw) = raw else {
            return policy;
        };
        if let Some(v) = &raw.min_version {
            match v.get_ref().trim().trim_start_matches("TLSv") {
                "1.2" => policy.min_version = TlsVersion::Tls12,
                "1.3" => policy.min_version = TlsVersion::Tls13,
                "1" | "1.0" | "1.1" => self.error(
                    v.span(),
                    format!(
                        "min_version \"{}\": TLS 1.0 and 1.1 are weak and not offered; use \"1.2\" or \"1.3\"",
                        v.get_ref()
                    ),
                ),
                other => self.error(
                    v.span(),
                    format!("min_version \"{other}\" is not a TLS version: \"1.2\" or \"1.3\""),
                ),
            }
        }
        if let Some(names) = &raw.cipher_suites {
            policy.cipher_suites = self.names(names, cipher_suite);
            let tls12 = policy
                .cipher_suites
                .iter()
                .any(|s| !format!("{s:?}").starts_with("TLS13_"));
            if tls12 && policy.min_version == TlsVersion::Tls13 {
                self.error(
                    names.span(),
                    "cipher_suites lists TLS 1.2 suites but min_version = \"1.3\" never offers them",
                );
            }
        }
        if let Some(names) = &raw.kx_groups {
            policy.kx_groups = self.names(names, kx_group);
        }
        if let Some(n) = &raw.session_cache {
            match usize::try_from(*n.get_ref()) {
                Ok(size) if size <= 10_000_000 => policy.session_cache = size,
                _ => self.error(
                    n.span(),
                    format!(
                        "session_cache = {} must be from 0 (off) to 10000000 sessions",
                        n.get_ref()
                    ),
                ),
            }
        }
        if let Some(t) = raw.session_tickets {
            policy.session_tickets = t;
        }
        if let Some(r) = &raw.ticket_rotation {
            let d = r.get_ref().0;
            if d < Duration::from_secs(60) || d > MAX_TICKET_ROTATION {
                self.error(
                    r.span(),
                    format!(
                        "ticket_rotation {d:?} must be from 1m to 84h (a ticket is accepted for twice that, and at most 7 days)"
                    ),
                );
            } else {
                policy.ticket_rotation = d;
            }
        }
        if let Some(o) = raw.ocsp_stapling {
            policy.ocsp_stapling = o;
        }
        policy
    }

    /// Each name of `names` through `parse`, every refusal reported where the name is written.
    fn names<T: PartialEq>(
        &mut self,
        names: &Spanned<Names>,
        parse: fn(&str) -> Result<T, NameError>,
    ) -> Vec<T> {
        let spans: Vec<(Range<usize>, String)> = match names.get_ref() {
            Names::List(list) => list
                .iter()
                .map(|n| (n.span(), n.get_ref().0.clone()))
                .collect(),
            Names::Joined(text) => self.joined(names.span(), text),
        };
        if spans.is_empty() {
            self.error(
                names.span(),
                "an empty list: leave the key out for the defaults",
            );
        }
        let mut out = Vec::new();
        for (span, name) in spans {
            match parse(&name) {
                Ok(v) if out.contains(&v) => {
                    self.error(span, format!("\"{name}\" is listed twice"))
                }
                Ok(v) => out.push(v),
                Err(e) => self.error(span, e.to_string()),
            }
        }
        out
    }

    /// The names of a `:`-separated string, each with its place in the file when the string is
    /// written plainly (else the string's).
    fn joined(&self, span: Range<usize>, text: &Text) -> Vec<(Range<usize>, String)> {
        let literal = self.text.get(span.clone()).unwrap_or_default();
        let plain =
            literal.len() == text.len() + 2 && literal.get(1..literal.len() - 1) == Some(text);
        let mut out = Vec::new();
        let mut offset = 0;
        for part in text.split([':', ',', ' ']) {
            let start = if plain {
                span.start + 1 + offset
            } else {
                span.start
            };
            offset += part.len() + 1;
            if !part.is_empty() {
                out.push((start..start + part.len(), part.to_string()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_keeps_the_listed_order_and_defaults_per_version() {
        let policy = TlsPolicy {
            cipher_suites: vec![
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ],
            kx_groups: vec![NamedGroup::secp256r1],
            ..TlsPolicy::default()
        };
        let p = policy.provider();
        let names: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        // TLS 1.3 keeps its three defaults, then the two listed TLS 1.2 suites.
        assert_eq!(names.len(), 5);
        assert_eq!(names[3], CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
        assert_eq!(names[4], CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384);
        assert_eq!(p.kx_groups.len(), 1);
        assert_eq!(p.kx_groups[0].name(), NamedGroup::secp256r1);
    }
}
