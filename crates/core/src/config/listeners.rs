//! `[[listeners]]` and `[[certificates]]`: where connections are accepted and what TLS presents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::RawConfig;
use super::values::Text;
use super::{certs, redirect, serialize, Validator};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<Text>,
    pub address: Spanned<Text>,
    #[serde(default)]
    pub tls: bool,
    pub h2: Option<bool>,
    /// HTTP/2 with prior knowledge on a plain listener (gRPC inside a cluster).
    pub h2c: Option<Spanned<bool>>,
    #[serde(default)]
    pub redirect_https: bool,
    pub https_port: Option<u16>,
    /// The status of the redirect to HTTPS (`redirect.rs`).
    pub redirect_code: Option<Spanned<u16>>,
    /// Read a PROXY protocol (v1/v2) header from every connection (peers in `trusted_proxies`).
    pub proxy_protocol: Option<Spanned<bool>>,
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

#[derive(Debug, Clone, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub tls: bool,
    pub h2: bool,
    /// Plain listeners: HTTP/2 with prior knowledge besides HTTP/1.1.
    pub h2c: bool,
    pub redirect_https: bool,
    pub https_port: u16,
    /// The status of this listener's redirects to HTTPS (its own and its routes').
    pub redirect_code: u16,
    /// Every connection starts with a PROXY header from a `[limits] trusted_proxies` peer,
    /// whose client address stands for the connection's peer.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertificateConfig {
    #[serde(rename = "cert", serialize_with = "serialize::path")]
    pub cert_path: PathBuf,
    pub names: Vec<String>,
    /// The chain and its private key, as TLS serves them: never shown (`GET /v1/config` names
    /// the certificate's file instead).
    #[serde(skip)]
    pub key: Secret<Arc<CertifiedKey>>,
    pub fallback: bool,
}

impl Validator {
    pub(super) fn listeners(&mut self, raw: &RawConfig) -> Vec<ListenerConfig> {
        if raw.listeners.is_empty() {
            self.error(0..0, "no [[listeners]]: at least one listener is needed");
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::new();
        for l in &raw.listeners {
            let span = l.span();
            let l = l.get_ref();
            let name = l.name.get_ref().0.clone();
            if let Some(first) = names.insert(name.clone(), span.start) {
                let (line, _) = self.line_col(first);
                self.error(
                    l.name.span(),
                    format!("duplicate listener name \"{name}\" (first defined at line {line})"),
                );
            }
            let Some(address) = self.socket_addr(&l.address) else {
                continue;
            };
            if let Some(first) = addrs.insert(address, span.start) {
                let (line, _) = self.line_col(first);
                self.error(
                    l.address.span(),
                    format!("duplicate listener address {address} (first defined at line {line})"),
                );
            }
            let proxy_protocol = match &l.proxy_protocol {
                Some(p)
                    if *p.get_ref()
                        && raw
                            .limits
                            .as_ref()
                            .is_none_or(|l| l.trusted_proxies.is_empty()) =>
                {
                    self.error(
                        p.span(),
                        "proxy_protocol = true needs [limits] trusted_proxies: the load balancers allowed to send a PROXY header",
                    );
                    false
                }
                Some(p) => *p.get_ref(),
                None => false,
            };
            let h2c = l.h2c.as_ref().is_some_and(|h| *h.get_ref());
            if let Some(h) = l.h2c.as_ref().filter(|_| h2c && l.tls) {
                self.error(
                    h.span(),
                    "h2c is HTTP/2 without TLS; a TLS listener offers HTTP/2 by ALPN (`h2`)",
                );
            }
            out.push(ListenerConfig {
                name,
                proxy_protocol,
                address,
                tls: l.tls,
                h2: l.h2.unwrap_or(true),
                h2c,
                redirect_https: l.redirect_https,
                https_port: l.https_port.unwrap_or(443),
                redirect_code: self.redirect_code(
                    l.redirect_code.as_ref(),
                    &redirect::HTTPS_CODES,
                    redirect::DEFAULT_HTTPS_CODE,
                ),
            });
        }
        out
    }

    pub(super) fn certificates(&mut self, raw: &RawConfig) -> Vec<CertificateConfig> {
        let mut out = Vec::new();
        let mut fallback_seen = None;
        for c in &raw.certificates {
            let span = c.span();
            let c = c.get_ref();
            if c.fallback {
                if let Some(first) = fallback_seen {
                    let (line, _) = self.line_col(first);
                    self.error(
                        span.clone(),
                        format!("only one certificate may be the fallback (first at line {line})"),
                    );
                }
                fallback_seen = Some(span.start);
            }
            let cert_path = self.resolve_path(c.cert.get_ref());
            let key_path = self.resolve_path(c.key.get_ref());
            match certs::load_certified_key(&cert_path, &key_path) {
                Ok((key, san_names)) => {
                    let names = match &c.names {
                        Some(list) => list
                            .iter()
                            .map(|n| n.get_ref().to_ascii_lowercase())
                            .collect(),
                        None => san_names,
                    };
                    if names.is_empty() && !c.fallback {
                        self.error(
                            c.cert.span(),
                            format!(
                                "certificate \"{}\" names no DNS host; set `names` or `fallback = true`",
                                c.cert.get_ref()
                            ),
                        );
                    }
                    out.push(CertificateConfig {
                        cert_path,
                        names,
                        key: Secret::new(key),
                        fallback: c.fallback,
                    });
                }
                Err(e) => {
                    let span = if e.is_about_the_key() {
                        c.key.span()
                    } else {
                        c.cert.span()
                    };
                    self.error(span, e.to_string());
                }
            }
        }
        out
    }
}
