//! Connection limits: concurrent client connections in total and per client IP, checked at accept.
//!
//! The counts live here for the whole process; the caps are config and come from the snapshot at
//! each accept. The listener wrapper that admits connections is `server::listeners::LimitedApp`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

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

/// Live connection counts, kept for the whole process: a reload changes the caps, counts carry on.
#[derive(Debug, Default)]
pub struct ConnLimits {
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

    /// Counts a new connection from `ip`, or refuses it when it would exceed `caps`.
    pub fn admit(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        caps: ConnCaps,
    ) -> Result<ConnGuard, Refused> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_ip_and_releases_on_drop() {
        let limits = Arc::new(ConnLimits::default());
        let caps = ConnCaps {
            total: Some(3),
            per_ip: Some(2),
        };
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = limits.admit(Some(a), caps).expect("a1");
        let a2 = limits.admit(Some(a), caps).expect("a2");
        assert_eq!(limits.admit(Some(a), caps).err(), Some(Refused::PerIp));
        let b1 = limits.admit(Some(b), caps).expect("b1");
        assert_eq!(limits.admit(Some(b), caps).err(), Some(Refused::Total));
        assert_eq!(limits.open(), 3);
        drop(a1);
        let _a3 = limits.admit(Some(a), caps).expect("a slot is free again");
        drop((a2, b1));
        assert_eq!(limits.open(), 1);
        assert_eq!(limits.tracked_ips(), 1);
        assert_eq!(limits.refused(), (1, 1));
    }
}
