//! A pool's transport to its servers (HTTP/1.1, h2 over TLS, h2c) and its TLS client settings, loaded into one rustls config per config load.
//!
//! The pool keys `tls`, `protocol`, `sni`, `ca`, `verify`, `client_cert` and `client_key` (or
//! `https://` before a server address) become a [`Transport`]. Its rustls client config (root
//! store, client certificate, verifier, ALPN) is built here, once per load, so that neither the
//! request path nor the health checks read a file or build a config per connection.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::services::RawPool;
use super::{certs, serialize, Validator};

/// The HTTP version spoken to a pool's servers.
#[derive(Debug, Deserialize, Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (over TLS when the pool has TLS).
    #[default]
    H1,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2,
    /// HTTP/2 over plain TCP, with prior knowledge.
    H2c,
}

/// The scheme written before a server address: `https://10.0.0.5:8443`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Splits `https://host:port` into its scheme and address. An address written with a scheme
/// and without a port gets the scheme's port (443, 80).
pub fn split_scheme(text: &str) -> (Option<Scheme>, String) {
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return (None, text.to_string());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let has_port = match rest.rfind(']') {
        Some(end) => rest[end..].contains(':'),
        None => rest.contains(':'),
    };
    let address = if has_port {
        rest.to_string()
    } else {
        let port = if scheme == Scheme::Https { 443 } else { 80 };
        format!("{rest}:{port}")
    };
    (Some(scheme), address)
}

/// How a pool reaches its servers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transport {
    pub protocol: Protocol,
    /// TLS to the servers; `None`: plain TCP.
    pub tls: Option<TlsClient>,
}

impl Transport {
    /// The text of `Host` (and of `:authority`) for a request to `name` on `port` that names no
    /// host of its own: `name`, with `:port` unless it is the scheme's default (like curl).
    pub fn authority(&self, name: &str, port: u16) -> String {
        let default = if self.tls.is_some() { 443 } else { 80 };
        let name = if name.contains(':') && !name.starts_with('[') {
            format!("[{name}]")
        } else {
            name.to_string()
        };
        if port == default {
            name
        } else {
            format!("{name}:{port}")
        }
    }
}

/// TLS to a pool's servers.
#[derive(Clone, Serialize)]
pub struct TlsClient {
    /// The name sent as SNI and verified in the server's certificate, instead of the server's own.
    pub sni: Option<String>,
    /// Whether server certificates are verified (off: any certificate is accepted, warned at load).
    pub verify: bool,
    /// The roots certificates are verified against; the system's when absent.
    #[serde(serialize_with = "serialize::opt_path")]
    pub ca: Option<PathBuf>,
    /// The certificate presented to the servers (mTLS).
    #[serde(serialize_with = "serialize::opt_path")]
    pub client_cert: Option<PathBuf>,
    /// Everything above as rustls uses it, with the ALPN of the pool's protocol.
    #[serde(skip)]
    pub config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

/// Why a pool's TLS settings cannot be used (reported at the key's file:line:col).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read CA file \"{path}\": {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate found in CA file \"{path}\"")]
    NoCa { path: PathBuf },
    #[error("CA file \"{path}\" has a certificate that cannot be a trust anchor: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("no system root certificates could be loaded ({0}); set `ca` to a CA file")]
    NoSystemRoots(String),
    #[error("client certificate: {0}")]
    ClientCert(certs::TlsError),
    #[error("cannot build the TLS client: {0}")]
    Build(rustls::Error),
}

impl Validator {
    /// The transport of pool `pool` of `service`: its keys, and the schemes its server
    /// addresses were written with.
    pub(super) fn transport(
        &mut self,
        service: &str,
        pool: &str,
        raw: &Spanned<RawPool>,
        schemes: &[Spanned<Option<Scheme>>],
    ) -> Transport {
        let r = raw.get_ref();
        let https = schemes.iter().find(|s| *s.get_ref() == Some(Scheme::Https));
        let plain = schemes.iter().find(|s| *s.get_ref() != Some(Scheme::Https));
        if let (Some(_), Some(p)) = (https, plain) {
            self.error(
                p.span(),
                format!(
                    "pool \"{pool}\" of service \"{service}\" mixes https:// and plain servers; \
                     one pool has one transport"
                ),
            );
        }
        let tls = match (&r.tls, https) {
            (Some(t), Some(h)) if !*t.get_ref() => {
                self.error(
                    h.span(),
                    "an https:// server in a pool with `tls = false`".to_string(),
                );
                false
            }
            (Some(t), _) => *t.get_ref(),
            (None, h) => h.is_some(),
        };
        let protocol = r.protocol.as_ref().map_or_else(Protocol::default, |p| {
            let protocol = *p.get_ref();
            if protocol == Protocol::H2 && !tls {
                self.error(
                    p.span(),
                    "protocol \"h2\" is HTTP/2 over TLS: set `tls = true` (or use \"h2c\" for \
                     HTTP/2 without TLS)",
                );
            }
            if protocol == Protocol::H2c && tls {
                self.error(
                    p.span(),
                    "protocol \"h2c\" is HTTP/2 without TLS: use \"h2\" for HTTP/2 over TLS",
                );
            }
            protocol
        });
        if !tls {
            let tls_only = [
                ("sni", r.sni.as_ref().map(Spanned::span)),
                ("ca", r.ca.as_ref().map(Spanned::span)),
                ("verify", r.verify.as_ref().map(Spanned::span)),
                ("client_cert", r.client_cert.as_ref().map(Spanned::span)),
                ("client_key", r.client_key.as_ref().map(Spanned::span)),
            ];
            for (key, span) in tls_only {
                if let Some(span) = span {
                    self.error(
                        span,
                        format!("`{key}` needs TLS to the servers: set `tls = true`"),
                    );
                }
            }
            return Transport {
                protocol,
                tls: None,
            };
        }
        let tls = self.tls_client(service, pool, raw, protocol);
        Transport { protocol, tls }
    }

    fn tls_client(
        &mut self,
        service: &str,
        pool: &str,
        raw: &Spanned<RawPool>,
        protocol: Protocol,
    ) -> Option<TlsClient> {
        let r = raw.get_ref();
        let sni = r.sni.as_ref().and_then(|s| {
            let name = s.get_ref().to_ascii_lowercase();
            match ServerName::try_from(name.as_str()) {
                Ok(_) => Some(name),
                Err(_) => {
                    self.error(
                        s.span(),
                        format!("sni \"{}\" is not a DNS name or IP address", s.get_ref()),
                    );
                    None
                }
            }
        });
        let verify = r.verify.as_ref().is_none_or(|v| *v.get_ref());
        if !verify {
            let span = r.verify.as_ref().map_or(raw.span(), Spanned::span);
            let (line, column) = self.line_col(span.start);
            log::warn!(
                "{}:{line}:{column}: pool \"{pool}\" of service \"{service}\" does not verify \
                 its servers' certificates (verify = false): anyone on the path can pose as them",
                self.file
            );
        }
        let ca = r.ca.as_ref().map(|c| self.resolve_path(c.get_ref()));
        let roots = match (&ca, &r.ca) {
            (Some(path), Some(spanned)) => match load_roots(path) {
                Ok(roots) => roots,
                Err(e) => {
                    self.error(spanned.span(), e.to_string());
                    return None;
                }
            },
            // Not verifying: no roots are needed (and none may be installed).
            _ if !verify => Arc::new(RootCertStore::empty()),
            _ => match self.system_roots() {
                Ok(roots) => roots,
                Err(e) => {
                    self.error(raw.span(), e.to_string());
                    return None;
                }
            },
        };
        let identity = match (&r.client_cert, &r.client_key) {
            (None, None) => None,
            (Some(c), None) => {
                self.error(c.span(), "`client_cert` needs `client_key` beside it");
                return None;
            }
            (None, Some(k)) => {
                self.error(k.span(), "`client_key` needs `client_cert` beside it");
                return None;
            }
            (Some(c), Some(k)) => {
                let cert_path = self.resolve_path(c.get_ref());
                let key_path = self.resolve_path(k.get_ref());
                match certs::load_certified_key(&cert_path, &key_path) {
                    Ok((key, _)) => Some((cert_path, key)),
                    Err(e) => {
                        let span = if e.is_about_the_key() {
                            k.span()
                        } else {
                            c.span()
                        };
                        self.error(span, TransportError::ClientCert(e).to_string());
                        return None;
                    }
                }
            }
        };
        let (client_cert, key) = identity.unzip();
        match client_config(roots, verify, key, protocol) {
            Ok(config) => Some(TlsClient {
                sni,
                verify,
                ca,
                client_cert,
                config,
            }),
            Err(e) => {
                self.error(raw.span(), e.to_string());
                None
            }
        }
    }

    /// The system's root certificates, read once per config load.
    fn system_roots(&mut self) -> Result<Arc<RootCertStore>, TransportError> {
        if let Some(roots) = &self.system_roots {
            return Ok(roots.clone());
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_string(), ToString::to_string);
            return Err(TransportError::NoSystemRoots(why));
        }
        let roots = Arc::new(roots);
        self.system_roots = Some(roots.clone());
        Ok(roots)
    }
}

/// The certificates of a PEM CA file as a root store.
pub(super) fn load_roots(path: &std::path::Path) -> Result<Arc<RootCertStore>, TransportError> {
    let pem = crate::fsutil::read_regular(path).map_err(|source| TransportError::ReadCa {
        path: path.into(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        any = true;
        roots.add(cert).map_err(|e| TransportError::BadCa {
            path: path.into(),
            reason: e.to_string(),
        })?;
    }
    if !any {
        return Err(TransportError::NoCa { path: path.into() });
    }
    Ok(Arc::new(roots))
}

/// The rustls client config of a pool: ring, TLS 1.2 and 1.3, the roots (or no verification),
/// the client certificate and the ALPN of `protocol`.
fn client_config(
    roots: Arc<RootCertStore>,
    verify: bool,
    identity: Option<Arc<CertifiedKey>>,
    protocol: Protocol,
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Build)?;
    let builder = if verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let mut config = match identity {
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientIdentity(key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::H1 | Protocol::H2c => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The one client certificate of a pool, offered to every server that asks.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify = false`: any certificate is accepted; the handshake's signatures are still checked
/// (the server holds the key of the certificate it sent, whoever issued it).
#[derive(Debug)]
pub struct NoVerification(Arc<CryptoProvider>);

impl NoVerification {
    /// A verifier that checks signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> NoVerification {
        NoVerification(provider)
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_split_off_with_default_ports() {
        assert_eq!(
            split_scheme("10.0.0.5:8000"),
            (None, "10.0.0.5:8000".into())
        );
        assert_eq!(
            split_scheme("https://10.0.0.5"),
            (Some(Scheme::Https), "10.0.0.5:443".into())
        );
        assert_eq!(
            split_scheme("https://api.internal:8443/"),
            (Some(Scheme::Https), "api.internal:8443".into())
        );
        assert_eq!(
            split_scheme("http://[::1]"),
            (Some(Scheme::Http), "[::1]:80".into())
        );
        assert_eq!(
            split_scheme("https://[::1]:9443"),
            (Some(Scheme::Https), "[::1]:9443".into())
        );
    }

    fn pool(keys: &str) -> Transport {
        let text = format!(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n\
             [services.api.pools.blue]\n{keys}\n"
        );
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../certs/x.toml");
        let cfg = super::super::parse(&text, std::path::Path::new(certs)).expect("valid");
        cfg.services[0].pools[0].transport.clone()
    }

    #[test]
    fn pools_compile_their_tls_client_once() {
        let plain = pool("servers = [\"127.0.0.1:9001\"]");
        assert!(plain.tls.is_none());
        assert_eq!(plain.protocol, Protocol::H1);
        let h2c = pool("servers = [\"127.0.0.1:9001\"]\nprotocol = \"h2c\"");
        assert!(h2c.tls.is_none());
        assert_eq!(h2c.protocol, Protocol::H2c);
        // `https://`, a CA file relative to the config, HTTP/2 by ALPN, a client certificate.
        let h2 = pool(
            "servers = [\"https://127.0.0.1\"]\nprotocol = \"h2\"\nca = \"test-ca.crt\"\n\
             client_cert = \"client.crt\"\nclient_key = \"client.key\"",
        );
        let tls = h2.tls.expect("tls");
        assert!(tls.verify && tls.sni.is_none());
        assert!(tls.ca.is_some_and(|p| p.ends_with("test-ca.crt")));
        assert_eq!(tls.config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(tls.config.client_auth_cert_resolver.has_certs());
        let h1 = pool(
            "servers = [\"127.0.0.1:9443\"]\ntls = true\nverify = false\nsni = \"API.internal\"",
        );
        let tls = h1.tls.expect("tls");
        assert!(!tls.verify);
        assert_eq!(tls.sni.as_deref(), Some("api.internal"));
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn authority_leaves_out_default_ports() {
        let plain = Transport::default();
        assert_eq!(plain.authority("api.internal", 80), "api.internal");
        assert_eq!(plain.authority("10.0.0.5", 8000), "10.0.0.5:8000");
        assert_eq!(plain.authority("::1", 8000), "[::1]:8000");
    }
}
