//! The one callback pingora runs on every accepted connection before its handshake (vendor patch 14): PROXY protocol, then on TLS listeners the handshake watch, plain-HTTP detection and ACME TLS-ALPN-01.
//!
//! Order matters: a load balancer's PROXY header comes first on the wire, before the
//! ClientHello (or the HTTP request), and once it is read the connection's peer is the client
//! for everything after. The listener is found by the socket's local address; whether it
//! takes PROXY headers and which peers may send them are read from the snapshot in force,
//! so a reload changes them for new connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::{PreTlsCallback, PreTlsProcess};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::GetSocketDigest;
use pingora_error::{Error, ErrorType};

use super::proxy_protocol;
use crate::metrics::ClientError;
use crate::proxy::bound_to;
use crate::runtime::Runtime;

/// The callback for every endpoint of the proxy service. `tls_endpoints` are the addresses
/// bound with TLS (fixed at start, like the sockets); `tls` (the handshake watch and what it
/// chains) runs on connections to those only.
pub fn callback(
    runtime: Arc<Runtime>,
    tls_endpoints: Vec<SocketAddr>,
    tls: Option<PreTlsCallback>,
) -> PreTlsCallback {
    Arc::new(PreHandshake {
        runtime,
        tls_endpoints,
        tls,
    })
}

struct PreHandshake {
    runtime: Arc<Runtime>,
    tls_endpoints: Vec<SocketAddr>,
    tls: Option<PreTlsCallback>,
}

impl PreHandshake {
    /// The name of the listener at `local` when the snapshot in force has it take PROXY
    /// headers.
    fn proxy_listener(&self, local: SocketAddr) -> Option<String> {
        let snap = self.runtime.snapshot();
        snap.config
            .listeners
            .iter()
            .find(|l| bound_to(l.address, local))
            .filter(|l| l.proxy_protocol)
            .map(|l| l.name.clone())
    }

    /// Reads the PROXY header of a connection on a `proxy_protocol` listener; an error ends
    /// the connection (counted, logged at debug).
    async fn proxy_header(
        &self,
        stream: &mut L4Stream,
        listener: &str,
    ) -> pingora_error::Result<()> {
        let peer = peer_ip(stream);
        let trusted = peer.is_some_and(|ip| {
            self.runtime
                .snapshot()
                .config
                .limits
                .trusted_proxies
                .contains(ip)
        });
        if !trusted {
            self.count(listener, ClientError::ProxyProtocolUntrusted);
            log::debug!(
                "listener \"{listener}\": connection from {peer:?} refused: not in [limits] trusted_proxies (proxy_protocol = true)"
            );
            return Err(Error::explain(
                ErrorType::HandshakeError,
                "PROXY protocol listener: peer not trusted",
            ));
        }
        match proxy_protocol::read(stream).await {
            Ok(source) => {
                log::trace!(
                    "listener \"{listener}\": PROXY header from {peer:?}: client {source:?}"
                );
                Ok(())
            }
            Err(e) => {
                self.count(listener, ClientError::ProxyProtocolInvalid);
                log::debug!("listener \"{listener}\": connection from {peer:?} refused: {e}");
                Err(Error::because(
                    ErrorType::HandshakeError,
                    "PROXY protocol listener: no valid header",
                    e,
                ))
            }
        }
    }

    fn count(&self, listener: &str, kind: ClientError) {
        if self.runtime.snapshot().config.server.metrics {
            self.runtime.metrics.record_client_error(listener, kind);
        }
    }
}

fn peer_ip(stream: &L4Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr()?.as_inet().map(|a| a.ip())
}

#[async_trait]
impl PreTlsProcess for PreHandshake {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        let Some(local) = local else {
            // Not expected (every accepted TCP socket has a local address): untouched.
            return Ok(());
        };
        if let Some(listener) = self.proxy_listener(local) {
            self.proxy_header(stream, &listener).await?;
        }
        let tls_endpoint = self.tls_endpoints.iter().any(|a| bound_to(*a, local));
        match &self.tls {
            Some(tls) if tls_endpoint => tls.process(stream).await,
            _ => Ok(()),
        }
    }
}
