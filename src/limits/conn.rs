//! Connection limits: concurrent client connections in total and per client IP, checked at accept.
//!
//! The proxy's app is wrapped: pingora calls `process_new` once per client connection (after the
//! TLS handshake on TLS listeners) and its HTTP app returns only when the connection closes (it
//! loops over keep-alive requests and h2 streams itself), so a guard held across the call counts
//! the connection exactly. Over a limit, a plain-HTTP client gets a 503 and the connection is
//! closed; a TLS client (possibly speaking h2) is just closed after the handshake.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Shutdown, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

const SHARDS: usize = 16;

/// The two caps; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCaps {
    pub total: Option<usize>,
    pub per_ip: Option<usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

/// Live connection counts. The caps may change at reload; counts carry on.
#[derive(Debug, Default)]
pub struct ConnLimits {
    caps: parking_lot::RwLock<ConnCaps>,
    total: AtomicUsize,
    per_ip: [parking_lot::Mutex<HashMap<IpAddr, usize>>; SHARDS],
    refused_total: AtomicU64,
    refused_per_ip: AtomicU64,
}

fn shard_of(ip: &IpAddr) -> usize {
    let n = match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    };
    (n as usize ^ (n >> 64) as usize) % SHARDS
}

/// One admitted connection; dropping it releases the counts.
#[derive(Debug)]
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self.limits.per_ip[shard_of(&ip)].lock();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl ConnLimits {
    pub fn set_caps(&self, caps: ConnCaps) {
        *self.caps.write() = caps;
    }

    pub fn caps(&self) -> ConnCaps {
        *self.caps.read()
    }

    /// Open client connections.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections refused so far: (over the total cap, over the per-IP cap).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_total.load(Ordering::Relaxed),
            self.refused_per_ip.load(Ordering::Relaxed),
        )
    }

    /// Counts a new connection from `ip`, or refuses it.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnGuard, Refused> {
        let caps = self.caps();
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        if caps.total.is_some_and(|cap| total > cap) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        if let Some(ip) = ip {
            let mut map = self.per_ip[shard_of(&ip)].lock();
            let n = map.entry(ip).or_insert(0);
            if caps.per_ip.is_some_and(|cap| *n >= cap) {
                if *n == 0 {
                    map.remove(&ip);
                }
                drop(map);
                self.total.fetch_sub(1, Ordering::Relaxed);
                self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PerIp);
            }
            *n += 1;
        }
        Ok(ConnGuard {
            limits: self.clone(),
            ip,
        })
    }

    /// Client IPs with at least one open connection.
    pub fn tracked_ips(&self) -> usize {
        self.per_ip.iter().map(|m| m.lock().len()).sum()
    }
}

/// Wraps a pingora app (the proxy) with connection admission.
pub struct LimitedApp<A> {
    inner: Arc<A>,
    limits: Arc<ConnLimits>,
}

impl<A> LimitedApp<A> {
    pub fn new(inner: A, limits: Arc<ConnLimits>) -> Self {
        LimitedApp {
            inner: Arc::new(inner),
            limits,
        }
    }
}

const REFUSED_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 61\r\nconnection: close\r\n\r\n\
{\"error\":\"too many connections\",\"status\":503,\"request_id\":\"\"}";

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for LimitedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        match self.limits.admit(ip) {
            Ok(_guard) => self.inner.process_new(stream, shutdown).await,
            Err(reason) => {
                log::debug!("connection from {ip:?} refused: {reason:?}");
                if stream.get_ssl_digest().is_none() {
                    let _ = stream.write_all(REFUSED_503).await;
                    let _ = stream.flush().await;
                }
                Shutdown::shutdown(stream.as_mut()).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }

    fn handshake_timeout(&self) -> std::time::Duration {
        self.inner.handshake_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_ip_and_releases_on_drop() {
        let limits = Arc::new(ConnLimits::default());
        limits.set_caps(ConnCaps {
            total: Some(3),
            per_ip: Some(2),
        });
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = limits.admit(Some(a)).expect("a1");
        let a2 = limits.admit(Some(a)).expect("a2");
        assert_eq!(limits.admit(Some(a)).err(), Some(Refused::PerIp));
        let b1 = limits.admit(Some(b)).expect("b1");
        assert_eq!(limits.admit(Some(b)).err(), Some(Refused::Total));
        assert_eq!(limits.open(), 3);
        drop(a1);
        let _a3 = limits.admit(Some(a)).expect("a slot is free again");
        drop((a2, b1));
        assert_eq!(limits.open(), 1);
        assert_eq!(limits.tracked_ips(), 1);
        assert_eq!(limits.refused(), (1, 1));
    }

    #[test]
    fn the_refusal_body_length_is_right() {
        let text = std::str::from_utf8(REFUSED_503).expect("ascii");
        let (_, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert_eq!(body.len(), 61);
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["status"], 503);
    }
}
