//! Certificates by SNI: a store swapped at runtime (at reload, and by ACME) and the rustls resolver over it; the listeners' rustls configs (`policy`).

pub mod ocsp;
pub mod policy;
pub mod ticketer;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;

pub use crate::config::certs::TlsError;
use crate::config::CertificateConfig;
pub use policy::{ConfigCell, PolicyError, TlsConfigs};

/// A self-signed certificate for handshakes no configured certificate covers.
pub fn self_signed(names: &[&str]) -> Result<Arc<CertifiedKey>, TlsError> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(Arc::new(certified))
}

/// The certificates in force: exact names, wildcard suffixes, and the fallback.
#[derive(Clone)]
pub struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Arc<CertifiedKey>,
}

impl fmt::Debug for CertMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertMap")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CertMap {
    /// Builds the map from configured certificates; `generated` is used when none is the fallback.
    pub fn build(certs: &[CertificateConfig], generated: Arc<CertifiedKey>) -> CertMap {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut fallback = generated;
        // Later certificates do not steal a name from earlier ones: first listed wins.
        for c in certs {
            for name in &c.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name.clone()),
                }
                .or_insert_with(|| c.key.expose().clone());
            }
            if c.fallback {
                fallback = c.key.expose().clone();
            }
        }
        CertMap {
            exact,
            wildcard,
            fallback,
        }
    }

    /// Adds certificates for names no configured certificate covers (ACME certificates).
    fn overlay<'a>(
        &mut self,
        extra: impl IntoIterator<Item = (&'a [String], &'a Arc<CertifiedKey>)>,
    ) {
        for (names, key) in extra {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => self.wildcard.entry(suffix.to_string()),
                    None => self.exact.entry(name.clone()),
                }
                .or_insert_with(|| key.clone());
            }
        }
    }

    /// Staples `staples` (leaf DER → OCSP response) onto the certificates they are for.
    fn staple(&mut self, staples: &HashMap<Vec<u8>, Vec<u8>>) {
        let mut done: HashMap<*const CertifiedKey, Arc<CertifiedKey>> = HashMap::new();
        let all = self.exact.values_mut().chain(self.wildcard.values_mut());
        for key in all.chain(std::iter::once(&mut self.fallback)) {
            let Some(response) = key.cert.first().and_then(|leaf| staples.get(leaf.as_ref()))
            else {
                continue;
            };
            let stapled = done.entry(Arc::as_ptr(key)).or_insert_with(|| {
                let mut k = (**key).clone();
                k.ocsp = Some(response.clone());
                Arc::new(k)
            });
            *key = stapled.clone();
        }
    }

    /// Every certificate served, once each (by leaf).
    pub fn certificates(&self) -> Vec<Arc<CertifiedKey>> {
        let mut seen = std::collections::HashSet::new();
        let all = self.exact.values().chain(self.wildcard.values());
        all.chain(std::iter::once(&self.fallback))
            .filter(|k| {
                k.cert
                    .first()
                    .is_some_and(|l| seen.insert(l.as_ref().to_vec()))
            })
            .cloned()
            .collect()
    }

    /// The certificate for a server name: exact match, then a wildcard one label up, then the fallback.
    pub fn lookup(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else {
            return &self.fallback;
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(c) = self.exact.get(name) {
            return c;
        }
        // A certificate wildcard covers exactly one label (RFC 6125).
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(parent) {
                return c;
            }
        }
        &self.fallback
    }
}

/// The store the TLS listeners read on every handshake: the one ArcSwap besides the snapshot.
/// Only the runtime's writer stores into it, from [`CertSources`] it keeps under its lock.
pub struct CertStore {
    current: ArcSwap<CertMap>,
}

/// What the served map is built from: the configured certificates (replaced at reload) and the
/// ACME certificates by certificate id (replaced one at a time by the ACME manager). Either
/// change rebuilds the whole map, stored in one swap.
#[derive(Debug)]
pub struct CertSources {
    pub configured: CertMap,
    /// ACME certificate id → (names, key).
    acme: std::collections::BTreeMap<String, (Vec<String>, Arc<CertifiedKey>)>,
    /// OCSP responses to staple, by leaf certificate (DER): kept across reloads and renewals
    /// while the leaf is served.
    staples: HashMap<Vec<u8>, Vec<u8>>,
}

impl CertSources {
    pub fn new(configured: CertMap) -> CertSources {
        CertSources {
            configured,
            acme: Default::default(),
            staples: HashMap::new(),
        }
    }

    /// Serves `key` for `names` under ACME certificate `id` (replacing what `id` served before),
    /// or stops serving `id` when `key` is `None`.
    pub fn set_acme(&mut self, id: &str, names: &[String], key: Option<Arc<CertifiedKey>>) {
        match key {
            Some(k) => self.acme.insert(id.to_string(), (names.to_vec(), k)),
            None => self.acme.remove(id),
        };
    }

    /// Staples `response` to the certificate whose leaf is `leaf` (or stops, with `None`).
    pub fn set_staple(&mut self, leaf: &[u8], response: Option<Vec<u8>>) {
        match response {
            Some(r) => self.staples.insert(leaf.to_vec(), r),
            None => self.staples.remove(leaf),
        };
    }

    /// The map to serve.
    pub fn build(&self) -> CertMap {
        let mut map = self.configured.clone();
        map.overlay(self.acme.values().map(|(n, k)| (n.as_slice(), k)));
        if !self.staples.is_empty() {
            map.staple(&self.staples);
        }
        map
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.current.load().fmt(f)
    }
}

impl CertStore {
    pub fn new(map: CertMap) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(map),
        })
    }

    /// Serves `map` from now on. Handshakes already running keep the old keys.
    pub fn store(&self, map: CertMap) {
        self.current.store(Arc::new(map));
    }

    /// Every certificate served now, once each.
    pub fn certificates(&self) -> Vec<Arc<CertifiedKey>> {
        self.current.load().certificates()
    }

    /// The certificate a handshake for `name` gets now.
    pub fn lookup(&self, name: &str) -> Arc<CertifiedKey> {
        self.current.load().lookup(Some(name)).clone()
    }

    pub fn resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(SniResolver(self.clone()))
    }
}

#[derive(Debug)]
struct SniResolver(Arc<CertStore>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().lookup(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> Arc<CertifiedKey> {
        self_signed(names).expect("generate")
    }

    #[test]
    fn lookup_prefers_exact_then_one_label_wildcard_then_fallback() {
        let a = cert(&["a.example.com"]);
        let w = cert(&["*.example.com"]);
        let fb = cert(&["fallback"]);
        let configs = vec![
            CertificateConfig {
                cert_path: "a".into(),
                names: vec!["a.example.com".into()],
                key: crate::secret::Secret::new(a.clone()),
                fallback: false,
            },
            CertificateConfig {
                cert_path: "w".into(),
                names: vec!["*.example.com".into()],
                key: crate::secret::Secret::new(w.clone()),
                fallback: false,
            },
        ];
        let map = CertMap::build(&configs, fb.clone());
        assert!(Arc::ptr_eq(map.lookup(Some("a.example.com")), &a));
        assert!(Arc::ptr_eq(map.lookup(Some("A.Example.COM")), &a));
        assert!(Arc::ptr_eq(map.lookup(Some("b.example.com")), &w));
        assert!(Arc::ptr_eq(map.lookup(Some("x.b.example.com")), &fb));
        assert!(Arc::ptr_eq(map.lookup(Some("example.com")), &fb));
        assert!(Arc::ptr_eq(map.lookup(None), &fb));
    }
}
