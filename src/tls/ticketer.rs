//! Session-ticket keys: one rotating ticketer per process, shared by every listener and worker and kept across reloads, so a ticket stays good until its key retires.
//!
//! rustls' own ring ticketer rotates every 6 hours and cannot be told otherwise; this one puts
//! rustls' `TicketRotator` (a current key for new tickets, the previous one still accepted) over
//! a ChaCha20-Poly1305 key drawn from ring's system random source.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::crypto::GetRandomFailed;
use rustls::server::ProducesTickets;
use rustls::ticketer::TicketRotator;

/// A ticketer whose key changes every `rotation`; a ticket is accepted for twice that.
pub fn rotating(rotation: Duration) -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    let secs = u32::try_from(rotation.as_secs()).unwrap_or(u32::MAX).max(1);
    Ok(Arc::new(TicketRotator::new(secs, AeadTicketer::generate)?))
}

/// The ticket keys a fleet shares (`[cluster]` with an encryption key): one per epoch
/// (Unix time / `ticket_rotation`), made once by whichever node needs it first and kept in etcd,
/// so a ticket one node issued resumes on any node. Empty on a node of its own.
#[derive(Default)]
pub struct FleetKeys(arc_swap::ArcSwap<Vec<(u64, AeadTicketer)>>);

impl FleetKeys {
    /// The keys in force, by epoch (older ones are dropped by whoever sets them).
    pub fn set(&self, keys: &[(u64, [u8; 32])]) {
        let list = keys
            .iter()
            .filter_map(|(epoch, key)| Some((*epoch, AeadTicketer::from_key(key)?)))
            .collect();
        self.0.store(Arc::new(list));
    }

    pub fn epochs(&self) -> Vec<u64> {
        self.0.load().iter().map(|(e, _)| *e).collect()
    }
}

/// Issues tickets with the fleet's key of the current epoch when there is one, else with this
/// process's own rotating key; opens tickets of either.
pub struct FleetTicketer {
    fleet: Arc<FleetKeys>,
    rotation: Duration,
    local: Arc<dyn ProducesTickets>,
}

impl fmt::Debug for FleetTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetTicketer").finish_non_exhaustive()
    }
}

/// [`rotating`] under the fleet's keys (see [`FleetTicketer`]).
pub fn fleet(
    rotation: Duration,
    fleet: Arc<FleetKeys>,
) -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    Ok(Arc::new(FleetTicketer {
        fleet,
        rotation,
        local: rotating(rotation)?,
    }))
}

/// The epoch of `unix_secs` under `rotation`.
pub fn epoch(unix_secs: u64, rotation: Duration) -> u64 {
    unix_secs / rotation.as_secs().max(1)
}

impl ProducesTickets for FleetTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.local.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let current = epoch(now, self.rotation);
        let keys = self.fleet.0.load();
        match keys.iter().find(|(e, _)| *e == current) {
            Some((_, key)) => key.encrypt(plain),
            None => self.local.encrypt(plain),
        }
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let keys = self.fleet.0.load();
        keys.iter()
            .find(|(_, k)| cipher.starts_with(&k.name))
            .and_then(|(_, k)| k.decrypt(cipher))
            .or_else(|| self.local.decrypt(cipher))
    }
}

/// One key: tickets are `key name (16) | nonce (12) | ciphertext and tag`, the name as AAD.
pub struct AeadTicketer {
    key: LessSafeKey,
    name: [u8; 16],
}

impl fmt::Debug for AeadTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadTicketer").finish_non_exhaustive()
    }
}

impl AeadTicketer {
    /// A key every node derives the same way from the same bytes (its name from a hash of it).
    fn from_key(key: &[u8; 32]) -> Option<AeadTicketer> {
        let mut input = b"switchyard ticket key name".to_vec();
        input.extend_from_slice(key);
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let name: [u8; 16] = digest.as_ref()[..16].try_into().ok()?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).ok()?;
        Some(AeadTicketer {
            key: LessSafeKey::new(key),
            name,
        })
    }

    fn generate() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        let mut name = [0u8; 16];
        rng.fill(&mut key).map_err(|_| GetRandomFailed)?;
        rng.fill(&mut name).map_err(|_| GetRandomFailed)?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| GetRandomFailed)?;
        Ok(Box::new(AeadTicketer {
            key: LessSafeKey::new(key),
            name,
        }))
    }
}

impl ProducesTickets for AeadTicketer {
    fn enabled(&self) -> bool {
        true
    }

    /// Not used: the rotator states the lifetime.
    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(16 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let rest = cipher.strip_prefix(&self.name[..])?;
        if rest.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&self.name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_foreign_ones_fail() {
        let a = rotating(Duration::from_secs(3600)).expect("ticketer");
        let b = rotating(Duration::from_secs(3600)).expect("ticketer");
        assert_eq!(a.lifetime(), 7200, "accepted for twice the rotation");
        let ticket = a.encrypt(b"session state").expect("encrypt");
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        assert_eq!(b.decrypt(&ticket), None, "another process's key");
        let mut tampered = ticket.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(a.decrypt(&tampered), None);
        assert_eq!(a.decrypt(&ticket[..20]), None);
    }

    #[test]
    fn fleet_tickets_open_on_every_node_with_the_same_keys() {
        let rotation = Duration::from_secs(3600);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let current = epoch(now, rotation);
        let keys = [(current, [3u8; 32]), (current + 1, [4u8; 32])];
        let (ka, kb) = (
            Arc::new(FleetKeys::default()),
            Arc::new(FleetKeys::default()),
        );
        let a = fleet(rotation, ka.clone()).expect("a");
        let b = fleet(rotation, kb.clone()).expect("b");
        // Without fleet keys each node's own key: b cannot open a's ticket.
        let own = a.encrypt(b"s").expect("encrypt");
        assert_eq!(b.decrypt(&own), None);
        ka.set(&keys);
        kb.set(&keys);
        let shared = a.encrypt(b"state").expect("encrypt");
        assert_eq!(b.decrypt(&shared).as_deref(), Some(&b"state"[..]));
        // Tickets of the node's own key still open on it after the fleet's keys arrive.
        assert_eq!(a.decrypt(&own).as_deref(), Some(&b"s"[..]));
        // A key dropped from the set no longer opens its tickets.
        kb.set(&keys[1..]);
        assert_eq!(b.decrypt(&shared), None);
        assert_eq!(kb.epochs(), vec![current + 1]);
    }
}
