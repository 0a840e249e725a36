//! Certificate files: a PEM chain and key loaded and checked into a rustls key pair, for validation and serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

impl TlsError {
    /// Whether the key file is at fault (the error belongs at the `key` of the config), rather
    /// than the certificate.
    pub fn is_about_the_key(&self) -> bool {
        matches!(
            self,
            TlsError::ReadKey { .. } | TlsError::NoKey { .. } | TlsError::BadKey { .. }
        )
    }
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
