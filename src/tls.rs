//! Certificates by SNI: a store swapped at runtime (at reload, and by ACME) and the rustls resolver over it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertificateConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate \"{path}\": {source}")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate found in \"{path}\"")]
    NoCert { path: PathBuf },
    #[error("cannot read key \"{path}\": {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM private key found in \"{path}\"")]
    NoKey { path: PathBuf },
    #[error("unusable private key \"{path}\": {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("certificate \"{path}\" does not match its key: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("certificate \"{path}\" cannot be parsed: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot generate the fallback certificate: {0}")]
    Generate(String),
}

/// Loads a PEM chain and key into a rustls key pair, and returns the DNS names its leaf covers.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsError> {
    let cert_pem = crate::fsutil::read_regular(cert_path).map_err(|source| TlsError::ReadCert {
        path: cert_path.into(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCert {
            path: cert_path.into(),
        });
    };
    let names = dns_names(leaf).map_err(|reason| TlsError::Parse {
        path: cert_path.into(),
        reason,
    })?;
    let key_pem = crate::fsutil::read_regular(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.into(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key_path.into(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(k) => TlsError::Mismatch {
            path: cert_path.into(),
            reason: format!("{k:?}"),
        },
        other => TlsError::BadKey {
            path: key_path.into(),
            reason: other.to_string(),
        },
    })?;
    Ok((Arc::new(certified), names))
}

/// DNS subjectAltName entries of a leaf certificate, lowercase (IP entries are skipped).
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

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
                .or_insert_with(|| c.key.clone());
            }
            if c.fallback {
                fallback = c.key.clone();
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

/// The swappable store the TLS listeners read on every handshake.
///
/// What it serves is the configured map (replaced at reload) plus the ACME certificates by
/// certificate id (replaced one at a time by the ACME manager); both sources are kept so either
/// change rebuilds the whole map, swapped in one store.
pub struct CertStore {
    current: ArcSwap<CertMap>,
    sources: parking_lot::Mutex<Sources>,
}

struct Sources {
    configured: CertMap,
    /// ACME certificate id → (names, key).
    acme: std::collections::BTreeMap<String, (Vec<String>, Arc<CertifiedKey>)>,
}

impl Sources {
    fn build(&self) -> CertMap {
        let mut map = self.configured.clone();
        map.overlay(self.acme.values().map(|(n, k)| (n.as_slice(), k)));
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
            current: ArcSwap::from_pointee(map.clone()),
            sources: parking_lot::Mutex::new(Sources {
                configured: map,
                acme: Default::default(),
            }),
        })
    }

    /// Replaces the configured certificates; ACME certificates stay.
    pub fn swap(&self, map: CertMap) {
        let mut sources = self.sources.lock();
        sources.configured = map;
        self.current.store(Arc::new(sources.build()));
    }

    /// Serves `key` for `names` under ACME certificate `id` (replacing what `id` served before),
    /// or stops serving `id` when `key` is `None`. Handshakes already running keep the old key.
    pub fn set_acme(&self, id: &str, names: &[String], key: Option<Arc<CertifiedKey>>) {
        let mut sources = self.sources.lock();
        match key {
            Some(k) => sources.acme.insert(id.to_string(), (names.to_vec(), k)),
            None => sources.acme.remove(id),
        };
        self.current.store(Arc::new(sources.build()));
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
                key: a.clone(),
                fallback: false,
            },
            CertificateConfig {
                cert_path: "w".into(),
                names: vec!["*.example.com".into()],
                key: w.clone(),
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
