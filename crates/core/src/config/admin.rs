//! The `[admin]` table: where the admin API listens, the token it wants, and its TLS (certificate, client CA for mTLS).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::RawConfig;
use super::values::Text;
use super::{certs, serialize, transport, Validator};
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<Spanned<Text>>,
    pub token: Option<Text>,
    pub token_file: Option<Spanned<Text>>,
    #[serde(default)]
    pub metrics_require_token: bool,
    /// `tls = { cert = "...", key = "...", client_ca = "..." }`: HTTPS instead of plain HTTP.
    pub tls: Option<Spanned<RawAdminTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert: Spanned<Text>,
    pub key: Spanned<Text>,
    /// PEM CA(s) that client certificates must chain to (mTLS); without it, no client certificate
    /// is asked for.
    pub client_ca: Option<Spanned<Text>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Bearer token; from `token`, else `token_file`, else $SWITCHYARD_TOKEN.
    pub token: Option<Secret>,
    /// Whether `GET /metrics` needs the token too (default: scrapable without it).
    pub metrics_require_token: bool,
    /// HTTPS on the admin listener (fixed at start, like its address).
    pub tls: Option<AdminTls>,
}

/// The admin listener's TLS: its certificate, the CA of client certificates when mTLS is on, and
/// the rustls config built from them (ring, TLS 1.2 and 1.3, HTTP/1.1).
#[derive(Clone, Serialize)]
pub struct AdminTls {
    #[serde(serialize_with = "serialize::path")]
    pub cert: PathBuf,
    #[serde(serialize_with = "serialize::opt_path")]
    pub client_ca: Option<PathBuf>,
    /// The chain and key as read, to compare configs; never shown.
    #[serde(skip)]
    pub key: Secret<Arc<CertifiedKey>>,
    #[serde(skip)]
    pub config: Arc<ServerConfig>,
}

impl fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTls")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

/// The same files with the same certificate chain.
impl PartialEq for AdminTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.client_ca == other.client_ca
            && self.key.expose().cert == other.key.expose().cert
    }
}

impl Eq for AdminTls {}

/// The default admin API address, when `[admin]` gives none.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9900";

impl Validator {
    pub(super) fn admin(&mut self, raw: &RawConfig) -> Option<AdminConfig> {
        let spanned = raw.admin.as_ref()?;
        let a = spanned.get_ref();
        let address = match &a.address {
            Some(addr) => self.socket_addr(addr)?,
            None => DEFAULT_ADMIN_ADDRESS.parse().ok()?,
        };
        let mut token = a.token.as_ref().map(|t| t.0.clone());
        if token.is_none() {
            if let Some(file) = &a.token_file {
                let path = self.resolve_path(file.get_ref());
                match crate::fsutil::read_regular_to_string(&path) {
                    Ok(t) => token = Some(t.trim().to_string()),
                    Err(e) => self.error(
                        file.span(),
                        format!("cannot read token file \"{}\": {e}", path.display()),
                    ),
                }
            }
        }
        if token.is_none() {
            token = std::env::var("SWITCHYARD_TOKEN").ok();
        }
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() && !address.ip().is_loopback() {
            let span = a.address.as_ref().map_or(spanned.span(), |s| s.span());
            self.error(
                span,
                format!(
                    "the admin API on non-loopback address {address} needs a token (token, token_file or SWITCHYARD_TOKEN)"
                ),
            );
        }
        let tls = a.tls.as_ref().and_then(|t| self.admin_tls(t.get_ref()));
        Some(AdminConfig {
            address,
            token: token.map(Secret::new),
            metrics_require_token: a.metrics_require_token,
            tls,
        })
    }

    /// Loads `[admin] tls`'s files and builds the listener's rustls config; errors at the key
    /// that names the file.
    fn admin_tls(&mut self, t: &RawAdminTls) -> Option<AdminTls> {
        let cert = self.resolve_path(t.cert.get_ref());
        let key_path = self.resolve_path(t.key.get_ref());
        let key = match certs::load_certified_key(&cert, &key_path) {
            Ok((key, _)) => key,
            Err(e) => {
                let span = if e.is_about_the_key() {
                    t.key.span()
                } else {
                    t.cert.span()
                };
                self.error(span, format!("[admin] tls: {e}"));
                return None;
            }
        };
        let client_ca = t.client_ca.as_ref().map(|c| self.resolve_path(c.get_ref()));
        let roots = match (&client_ca, &t.client_ca) {
            (Some(path), Some(spanned)) => match transport::load_roots(path) {
                Ok(roots) => Some(roots),
                Err(e) => {
                    self.error(spanned.span(), format!("[admin] tls client_ca: {e}"));
                    return None;
                }
            },
            _ => None,
        };
        match server_config(key.clone(), roots) {
            Ok(config) => Some(AdminTls {
                cert,
                client_ca,
                key: Secret::new(key),
                config,
            }),
            Err(e) => {
                self.error(t.cert.span(), format!("[admin] tls: {e}"));
                None
            }
        }
    }
}

/// The admin listener's rustls config: ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN; with `roots`, a
/// client certificate chaining to them is required.
fn server_config(
    key: Arc<CertifiedKey>,
    roots: Option<Arc<rustls::RootCertStore>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
