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

/// One key: tickets are `key name (16) | nonce (12) | ciphertext and tag`, the name as AAD.
struct AeadTicketer {
    key: LessSafeKey,
    name: [u8; 16],
}

impl fmt::Debug for AeadTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadTicketer").finish_non_exhaustive()
    }
}

impl AeadTicketer {
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
}
