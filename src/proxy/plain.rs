//! Plain HTTP sent to a TLS listener gets a 400 that says so (as nginx does), not a TLS alert the client cannot show.
//!
//! A pre-TLS hook reads the connection's first byte: a TLS record starts with 0x16 (handshake),
//! an HTTP request with a method's upper-case letter. A TLS connection is handed on untouched
//! (the byte rewound); an HTTP one is answered and closed. Anything else goes on to the TLS
//! handshake, which fails and is counted there.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::{PreTlsCallback, PreTlsProcess};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::GetSocketDigest;
use pingora_error::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ListenerInfo;
use crate::metrics::ClientError;
use crate::runtime::Runtime;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long the rest of the client's request is read (and dropped) after the answer, so that
/// closing does not reset the connection before the client has read it.
const LINGER: Duration = Duration::from_secs(1);

/// The hook; `next` (another pre-TLS hook, e.g. ACME TLS-ALPN-01) runs for TLS connections.
pub fn guard(
    runtime: Arc<Runtime>,
    listeners: Vec<ListenerInfo>,
    next: Option<PreTlsCallback>,
) -> PreTlsCallback {
    Arc::new(PlainHttpGuard {
        runtime,
        listeners,
        next,
    })
}

struct PlainHttpGuard {
    runtime: Arc<Runtime>,
    listeners: Vec<ListenerInfo>,
    next: Option<PreTlsCallback>,
}

impl PlainHttpGuard {
    fn listener_name(&self, stream: &L4Stream) -> &str {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        super::listener_at(&self.listeners, local).map_or("", |l| &l.name)
    }
}

#[async_trait]
impl PreTlsProcess for PlainHttpGuard {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        let mut first = [0u8; 1];
        // The listening service bounds this wait with the handshake timeout.
        let n = stream.read(&mut first).await.unwrap_or(0);
        if n == 0 {
            // Closed or failed before a byte: the TLS handshake reports it.
            return Ok(());
        }
        stream.rewind(&first);
        if first[0] == TLS_HANDSHAKE || !first[0].is_ascii_uppercase() {
            return match &self.next {
                Some(next) => next.process(stream).await,
                None => Ok(()),
            };
        }
        let listener = self.listener_name(stream).to_string();
        if self.runtime.snapshot().config.server.metrics {
            self.runtime
                .metrics
                .record_client_error(&listener, ClientError::PlainHttpOnTls);
        }
        log::debug!("plain HTTP on TLS listener \"{listener}\": answered 400");
        let id = super::request_id::RequestId::new();
        let body = serde_json::json!({
            "error": "plain HTTP request sent to a TLS port",
            "status": 400,
            "request_id": id.as_str(),
        })
        .to_string()
            + "\n";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Request-Id: {id}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_ok() && stream.flush().await.is_ok() {
            let _ = stream.shutdown().await;
            // Read what the client still sends until it closes, briefly.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        // Ends the connection here: pingora does not start a handshake.
        Err(Error::explain(
            ErrorType::HandshakeError,
            "plain HTTP on a TLS listener (answered 400)",
        ))
    }
}
