//! Server affinity's cookie values: an HMAC of each server's address under a key that outlives reloads and restarts, and the way back from a value to its server.
//!
//! A value says nothing about the server: it is the first 128 bits of HMAC-SHA256 over the
//! service name and the server's address, in hex. The key is the service's `secret` when it has
//! one (the same on every instance serving the same clients), else the process's own key, which
//! the runtime keeps in the state directory (so a value stays good across reloads, restarts and
//! binary upgrades). Without the key, an address cannot be tried against a value.

use std::fmt;
use std::time::Duration;

use ring::hmac;

use super::Pool;
use crate::config::affinity::AffinityConfig;

/// Bytes of HMAC-SHA256 kept in a cookie value.
const VALUE_BYTES: usize = 16;

/// The key cookie values are made with when a service has no `secret` of its own.
#[derive(Clone)]
pub struct AffinityKey(hmac::Key);

impl AffinityKey {
    pub fn new(bytes: &[u8]) -> AffinityKey {
        AffinityKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A fresh random key (the process's until the runtime sets the persisted one).
    pub fn random() -> AffinityKey {
        AffinityKey::new(&random_bytes())
    }
}

/// 32 random bytes from the system's generator.
pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // The system RNG failing leaves no safe way to run; fastrand's seed is the fallback so the
    // key is still unpredictable enough not to be a constant.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes
}

impl Default for AffinityKey {
    fn default() -> Self {
        AffinityKey::random()
    }
}

impl fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::secret::REDACTED)
    }
}

/// A service's affinity: its cookie and each server's value.
#[derive(Debug)]
pub struct Affinity {
    pub cookie: String,
    pub ttl: Duration,
    /// The value of each server, by pool then server, as the pools list them.
    values: Vec<Vec<Box<str>>>,
}

impl Affinity {
    /// Computes every server's value for `service` (one HMAC per server, once per snapshot).
    pub fn build(
        cfg: &AffinityConfig,
        service: &str,
        pools: &[Pool],
        key: &AffinityKey,
    ) -> Affinity {
        let own;
        let key = match &cfg.secret {
            Some(secret) => {
                own = AffinityKey::new(secret.expose().as_bytes());
                &own
            }
            None => key,
        };
        let values = pools
            .iter()
            .map(|p| {
                p.servers
                    .iter()
                    .map(|s| value(key, service, &s.addr.to_string()))
                    .collect()
            })
            .collect();
        Affinity {
            cookie: cfg.cookie.clone(),
            ttl: cfg.ttl,
            values,
        }
    }

    /// The cookie value naming `server` of `pool`.
    pub fn value(&self, pool: usize, server: usize) -> &str {
        &self.values[pool][server]
    }

    /// The server of `pool` that cookie value `v` names.
    pub fn find(&self, pool: usize, v: &str) -> Option<usize> {
        self.values.get(pool)?.iter().position(|x| **x == *v)
    }

    /// The first pool (in config order) with a server that `v` names, and that server.
    pub fn find_any(&self, v: &str) -> Option<(usize, usize)> {
        (0..self.values.len()).find_map(|pool| self.find(pool, v).map(|server| (pool, server)))
    }
}

/// The value for the server at `addr` of `service`.
fn value(key: &AffinityKey, service: &str, addr: &str) -> Box<str> {
    let mut ctx = hmac::Context::with_key(&key.0);
    ctx.update(b"switchyard affinity v1\0");
    ctx.update(service.as_bytes());
    ctx.update(b"\0");
    ctx.update(addr.as_bytes());
    let tag = ctx.sign();
    tag.as_ref()[..VALUE_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_the_key_service_and_address_and_hide_the_address() {
        let k = AffinityKey::new(b"k1");
        let a = value(&k, "api", "10.0.0.5:8080");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, value(&AffinityKey::new(b"k1"), "api", "10.0.0.5:8080"));
        assert_ne!(a, value(&AffinityKey::new(b"k2"), "api", "10.0.0.5:8080"));
        assert_ne!(a, value(&k, "web", "10.0.0.5:8080"));
        assert_ne!(a, value(&k, "api", "10.0.0.6:8080"));
        assert!(!a.contains("10.0.0.5") && !a.contains("8080"));
        assert_ne!(random_bytes(), random_bytes());
    }
}
