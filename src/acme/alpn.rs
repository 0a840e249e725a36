//! TLS-ALPN-01 on the HTTPS listener: a pre-TLS hook that answers `acme-tls/1` handshakes itself.
//!
//! pingora's TLS settings cannot offer `acme-tls/1`, so the hook (chained after the handshake
//! watch, `metrics::TlsWatch::hook`) peeks the ClientHello while a challenge is pending, rewinds
//! the bytes, and when the client asks for `acme-tls/1` completes that handshake with a server
//! config of its own holding the challenge certificate (RFC 8737), then ends the connection.
//! Every other connection continues to pingora's handshake untouched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::{PreTlsCallback, PreTlsProcess};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_error::{Error, ErrorType};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{AcmeError, AcmeState};

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long a client may take to send its ClientHello while a challenge is pending.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The hook to chain into the TLS listeners' pre-TLS callback.
pub fn responder(state: Arc<AcmeState>) -> PreTlsCallback {
    Arc::new(AlpnResponder { state })
}

struct AlpnResponder {
    state: Arc<AcmeState>,
}

/// The challenge certificate for `name`: self-signed, with the critical acmeIdentifier
/// extension holding the SHA-256 of the key authorization.
pub fn challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let crypto = |e: rcgen::Error| AcmeError::Crypto(e.to_string());
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(crypto)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(crypto)?;
    let cert = params.self_signed(&key).map_err(crypto)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| AcmeError::Crypto(e.to_string()))?;
    // Not `CertifiedKey::from_der`: its consistency check parses the certificate, and the
    // critical acmeIdentifier extension makes that parser refuse it.
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn refuse(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HandshakeError, why)
}

#[async_trait]
impl PreTlsProcess for AlpnResponder {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        if !self.state.alpn_active() {
            return Ok(());
        }
        let mut acceptor = Acceptor::default();
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        let accepted = loop {
            let read = tokio::time::timeout(HELLO_TIMEOUT, stream.read(&mut buf)).await;
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                // EOF, an error or a silent client: pingora's own handshake reports it.
                _ => {
                    stream.rewind(&seen);
                    return Ok(());
                }
            };
            seen.extend_from_slice(&buf[..n]);
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                if acceptor.read_tls(&mut chunk).is_err() {
                    stream.rewind(&seen);
                    return Ok(());
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => continue,
                Err(_) => {
                    stream.rewind(&seen);
                    return Ok(());
                }
            }
        };
        stream.rewind(&seen);
        let hello = accepted.client_hello();
        let wants_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !wants_acme {
            return Ok(());
        }
        let name = hello.server_name().map(str::to_ascii_lowercase);
        let Some(cert) = name.as_deref().and_then(|n| self.state.alpn_cert(n)) else {
            log::warn!(
                "acme: an acme-tls/1 handshake for {:?} but no TLS-ALPN-01 challenge is pending for it",
                name
            );
            return Err(refuse("acme-tls/1 handshake without a pending challenge"));
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|_| refuse("no TLS versions for acme-tls/1"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(cert)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let acceptor = pingora_rustls::TlsAcceptor::from(Arc::new(config));
        match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(&mut *stream)).await {
            Ok(Ok(mut tls)) => {
                log::info!(
                    "acme: answered a TLS-ALPN-01 challenge for {}",
                    name.as_deref().unwrap_or("?")
                );
                let _ = tls.shutdown().await;
            }
            Ok(Err(e)) => log::warn!("acme: acme-tls/1 handshake failed: {e}"),
            Err(_) => log::warn!("acme: acme-tls/1 handshake timed out"),
        }
        // The connection was only for the challenge: pingora must not go on with it.
        Err(refuse("answered an ACME TLS-ALPN-01 challenge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_cert_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = challenge_cert("a.example", &digest).expect("cert");
        let (_, cert) = x509_parser::parse_x509_certificate(&key.cert[0]).expect("parse");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // DER OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
    }
}
