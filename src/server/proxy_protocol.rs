//! PROXY protocol v1/v2 on a listener behind a load balancer: the header's client address becomes the connection's peer.
//!
//! The header is parsed without I/O in the core crate (`switchyard_core::proxy_protocol`).
//! [`read`] reads it off a freshly accepted connection, rewinds whatever followed it (the TLS
//! ClientHello or the HTTP request), and replaces the stream's socket digest with one whose peer
//! address is the header's source, so `session.client_addr()` and every consumer of it
//! (connection caps, rate-limit keys, X-Forwarded-For/X-Real-IP, logs) see the client. A `LOCAL`
//! (v2) or `UNKNOWN` (v1) header, a load balancer's own health check, keeps the real peer.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use tokio::io::AsyncReadExt;

pub use crate::proxy_protocol::{parse, Parsed, ProxyHeaderError, MAX_HEADER};

/// Reads the PROXY header at the start of `stream` (the caller bounds the wait), hands the
/// bytes after it back to the stream, and makes the header's source the stream's peer.
/// Returns that source (`None`: a LOCAL/UNKNOWN header, the peer is left as it is).
pub async fn read(stream: &mut L4Stream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut seen: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let (len, source) = loop {
        // Never past what the longest header needs, so little is read ahead.
        let want = (MAX_HEADER - seen.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(if seen.is_empty() {
                ProxyHeaderError::Missing
            } else {
                ProxyHeaderError::Closed
            });
        }
        seen.extend_from_slice(&chunk[..n]);
        match parse(&seen)? {
            Parsed::Incomplete => continue,
            Parsed::Header { len, source } => break (len, source),
        }
    };
    stream.rewind(&seen[len..]);
    if let Some(source) = source {
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        // Fresh, so unset: the real local address is still read from the socket.
        let _ = digest.peer_addr.set(Some(PeerAddr::Inet(source)));
        stream.set_socket_digest(digest);
    }
    Ok(source)
}
