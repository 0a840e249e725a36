//! Leases for fleet-wide zones: a node takes a few of a key's requests from Redis at once and spends them locally, within a stated slack.
//!
//! A `scope = "cluster"` zone that asks Redis once per request costs a round trip per request. A
//! zone large enough to allow it asks for a *lease* instead: up to `batch` of the key's requests,
//! taken from the fleet's count in one call, spent by this node until they run out or the lease
//! expires. The fleet never admits a request Redis did not count, so the lease can only shift
//! admissions in time, and the sizes keep that shift within [`SLACK_PERCENT`] of the zone's
//! capacity each way:
//! - *under*: requests leased to nodes but not spent yet are unavailable to the others: at most
//!   `nodes × (batch − 1)`, and `batch = capacity × 5 % / nodes`;
//! - *over*: a request leased at `t` may be spent up to `lifetime` later, when the key's count
//!   has recovered by `lifetime × rate`, and `lifetime` is at most 5 % of the time the zone takes
//!   to recover its whole capacity (and at most [`MAX_LIFETIME`]).
//!
//! A zone too small for a batch of 2 (under 40 requests of capacity per node) gets no plan and
//! asks Redis for every request, exactly. A lease asks for twice what the key's last lease spent
//! (one for a key new to the node, up to `batch`), so a key that comes back rarely takes little
//! and a busy key soon takes a whole batch. An expired lease's unspent requests go back to Redis:
//! with the key's next lease, or in one call at the zones' periodic sweep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::ZoneKind;

/// How far (in % of the zone's capacity) leasing may move a key's count each way.
pub const SLACK_PERCENT: u64 = 5;

/// The most requests one lease holds.
pub const MAX_BATCH: u32 = 64;

/// The longest a lease lives.
pub const MAX_LIFETIME: Duration = Duration::from_secs(5);

const SHARDS: usize = 64;

/// How a zone leases on a fleet of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Requests asked for per lease (≥ 2).
    pub batch: u32,
    pub lifetime: Duration,
}

impl Plan {
    /// What to ask for when the key's last lease on this node spent `used` (0: none known).
    pub fn want(&self, used: u32) -> u32 {
        used.saturating_mul(2).clamp(1, self.batch)
    }
}

/// The plan for a zone of `kind` on a fleet of `nodes`, or `None` where the zone is too small to
/// lease within the slack (every request then asks Redis).
pub fn plan(kind: ZoneKind, nodes: usize) -> Option<Plan> {
    // recovery: the time a key takes to get its whole capacity back.
    let recovery = match kind {
        ZoneKind::Rate { rate, .. } => rate.interval().saturating_mul(kind.capacity()),
        ZoneKind::Window { rate } => rate.per,
        ZoneKind::Concurrency { .. } => return None,
    };
    let capacity = u64::from(kind.capacity());
    let nodes = u64::try_from(nodes.max(1)).unwrap_or(u64::MAX);
    let batch = (capacity * SLACK_PERCENT / 100 / nodes).min(u64::from(MAX_BATCH));
    let lifetime = (recovery.saturating_mul(SLACK_PERCENT as u32) / 100).min(MAX_LIFETIME);
    (batch >= 2 && !lifetime.is_zero()).then_some(Plan {
        batch: batch as u32,
        lifetime,
    })
}

/// One key's lease.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Requests Redis granted for it (the asking request's one included).
    granted: u32,
    /// Requests left to spend.
    left: u32,
    expires: Instant,
    /// What Redis said was left for the key (beyond this lease) when it was taken.
    remaining: u32,
    /// When the key's count is whole again, as Redis said then.
    reset_at: Instant,
}

/// What a check found in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// One request spent from a live lease: the headers' `remaining` and `reset`.
    Spent { remaining: u32, reset: Duration },
    /// No live lease: ask Redis, giving back `unspent` requests of an expired one; the key's
    /// last lease here spent `used` (0: none known).
    Ask { unspent: u32, used: u32 },
}

/// A zone's leases, by key: sharded, bounded by the zone's `max_keys`.
#[derive(Debug)]
pub struct Leases {
    shards: Box<[Mutex<HashMap<u64, Lease>>]>,
    per_shard: usize,
}

impl Leases {
    pub fn new(max_keys: usize) -> Leases {
        Leases {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, Lease>> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// Spends one request of `key`'s live lease, or says what to give back with the next ask
    /// (an expired lease is removed here).
    pub fn spend(&self, key: u64, now: Instant) -> Held {
        let mut map = self.shard(key).lock();
        let Some(lease) = map.get_mut(&key) else {
            return Held::Ask {
                unspent: 0,
                used: 0,
            };
        };
        if lease.expires > now && lease.left > 0 {
            lease.left -= 1;
            return Held::Spent {
                remaining: lease.remaining.saturating_add(lease.left),
                reset: lease.reset_at.saturating_duration_since(now),
            };
        }
        let unspent = if lease.expires > now { 0 } else { lease.left };
        let used = lease.granted - unspent;
        map.remove(&key);
        Held::Ask { unspent, used }
    }

    /// Whether a new lease for `key` fits (its shard has room, or already holds the key).
    pub fn has_room(&self, key: u64) -> bool {
        let map = self.shard(key).lock();
        map.len() < self.per_shard || map.contains_key(&key)
    }

    /// Keeps the `granted` requests Redis gave for `key`, less the one the asking request spent
    /// (a lease of none still remembers what the key used). Two requests that asked at once both
    /// keep theirs: a live lease gets them added and keeps its own (earlier) expiry; a full shard
    /// keeps nothing, and the caller gives back what is left.
    pub fn keep(
        &self,
        key: u64,
        granted: u32,
        remaining: u32,
        reset: Duration,
        lifetime: Duration,
        now: Instant,
    ) -> Result<(), u32> {
        let left = granted.saturating_sub(1);
        let mut map = self.shard(key).lock();
        let full = map.len() >= self.per_shard;
        match map.get_mut(&key) {
            Some(lease) if lease.expires > now => {
                lease.granted = lease.granted.saturating_add(granted);
                lease.left = lease.left.saturating_add(left);
                lease.remaining = remaining;
                lease.reset_at = now + reset;
                Ok(())
            }
            Some(_) => Err(left),
            None if full => Err(left),
            None => {
                map.insert(
                    key,
                    Lease {
                        granted,
                        left,
                        expires: now + lifetime,
                        remaining,
                        reset_at: now + reset,
                    },
                );
                Ok(())
            }
        }
    }

    /// Takes back one request counted for `key` into its live lease (another zone refused the
    /// request); false when there is none and Redis must be told.
    pub fn give_back(&self, key: u64, now: Instant) -> bool {
        let mut map = self.shard(key).lock();
        match map.get_mut(&key) {
            Some(lease) if lease.expires > now => {
                lease.left = lease.left.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    /// Removes the expired leases and returns their unspent requests by key (to give back).
    pub fn expire(&self, now: Instant) -> Vec<(u64, u32)> {
        let mut unspent = Vec::new();
        for shard in self.shards.iter() {
            shard.lock().retain(|key, lease| {
                let live = lease.expires > now;
                if !live && lease.left > 0 {
                    unspent.push((*key, lease.left));
                }
                live
            });
        }
        unspent
    }

    /// Leases held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Rate;

    fn rate(s: &str) -> Rate {
        Rate::parse(s).expect("a rate")
    }

    #[test]
    fn plans_keep_the_slack_and_small_zones_ask_every_time() {
        // 100 at once for the fleet of 3: 5 % is 5, under 2 per node: no lease.
        let small = ZoneKind::Rate {
            rate: rate("100r/m"),
            burst: 99,
        };
        assert_eq!(plan(small, 3), None);
        assert_eq!(plan(ZoneKind::Concurrency { max: 10_000 }, 1), None);
        // 3000 per hour for 3 nodes: 150 / 3 = 50 each, for 5 % of the hour, capped at 5 s.
        let window = ZoneKind::Window {
            rate: rate("3000r/h"),
        };
        assert_eq!(
            plan(window, 3),
            Some(Plan {
                batch: 50,
                lifetime: MAX_LIFETIME
            })
        );
        // 100 r/s with 200 more at once: 201 recover in 2.01 s; 5 % of that is 100.5 ms.
        let api = ZoneKind::Rate {
            rate: rate("100r/s"),
            burst: 200,
        };
        let p = plan(api, 1).expect("a plan");
        assert_eq!(p.batch, 10);
        assert_eq!(p.lifetime, Duration::from_micros(100_500));
        // A node more shrinks the batch, never the lifetime; the batch is capped.
        assert_eq!(plan(api, 5).expect("a plan").batch, 2);
        assert_eq!(plan(api, 6), None);
        let huge = ZoneKind::Rate {
            rate: rate("1r/m"),
            burst: 1_000_000,
        };
        assert_eq!(plan(huge, 2).expect("a plan").batch, MAX_BATCH);
        // The worst case each way stays within the slack of the capacity.
        for (kind, capacity, per_capacity) in [
            (window, 3000.0, 3600.0),
            (api, 201.0, 2.01),
            (huge, 1_000_001.0, 60.0 * 1_000_001.0),
        ] {
            for nodes in 1..=8 {
                if let Some(p) = plan(kind, nodes) {
                    let under = (nodes as f64) * f64::from(p.batch - 1);
                    let over = p.lifetime.as_secs_f64() * capacity / per_capacity;
                    assert!(under <= capacity * 0.05, "{kind:?} {nodes}: {under}");
                    assert!(over <= capacity * 0.05 + 1e-9, "{kind:?} {nodes}: {over}");
                }
            }
        }
    }

    #[test]
    fn a_lease_is_spent_then_expires_and_gives_back_what_is_left() {
        let leases = Leases::new(1000);
        let now = Instant::now();
        let life = Duration::from_secs(1);
        let ask = |unspent, used| Held::Ask { unspent, used };
        assert_eq!(leases.spend(7, now), ask(0, 0));
        // Redis granted 3: the request spent one, 2 are kept.
        leases
            .keep(7, 3, 40, Duration::from_secs(9), life, now)
            .expect("kept");
        assert_eq!(
            leases.spend(7, now),
            Held::Spent {
                remaining: 41,
                reset: Duration::from_secs(9)
            }
        );
        // A refused request's count comes back into the lease.
        assert!(leases.give_back(7, now));
        assert!(matches!(leases.spend(7, now), Held::Spent { .. }));
        assert!(matches!(leases.spend(7, now), Held::Spent { .. }));
        // Spent out: ask again, nothing to give back, all 3 used.
        assert_eq!(leases.spend(7, now), ask(0, 3));
        assert!(leases.is_empty());
        // Expired with 3 of 5 unspent: the next ask gives them back.
        leases.keep(8, 5, 40, life, life, now).expect("kept");
        assert!(matches!(leases.spend(8, now), Held::Spent { .. }));
        let later = now + life;
        assert!(!leases.give_back(8, later));
        assert_eq!(leases.spend(8, later), ask(3, 2));
        // A lease of none remembers the key: its next ask knows it used 1.
        leases.keep(11, 1, 40, life, life, now).expect("kept");
        assert_eq!(leases.spend(11, now), ask(0, 1));
        // Or the sweep gives back what expired leases left.
        leases.keep(9, 6, 40, life, life, now).expect("kept");
        leases.keep(10, 2, 40, life, life, later).expect("kept");
        leases.keep(12, 1, 40, life, life, now).expect("kept");
        assert_eq!(leases.expire(later), vec![(9, 5)]);
        assert_eq!(leases.len(), 1);
    }

    #[test]
    fn a_lease_asks_for_twice_what_the_last_one_spent() {
        let p = Plan {
            batch: 50,
            lifetime: MAX_LIFETIME,
        };
        // New to the node: one, exactly as without leases.
        assert_eq!(p.want(0), 1);
        // A busy key doubles up to the batch; a rare one asks for 2 and gives 1 back later.
        assert_eq!(p.want(1), 2);
        assert_eq!(p.want(16), 32);
        assert_eq!(p.want(32), 50);
        assert_eq!(p.want(u32::MAX), 50);
    }

    #[test]
    fn two_grants_at_once_add_up_and_a_full_store_keeps_none() {
        let leases = Leases::new(1);
        let now = Instant::now();
        let life = Duration::from_secs(1);
        leases.keep(0, 4, 10, life, life, now).expect("kept");
        leases
            .keep(0, 5, 6, life, life, now + Duration::from_millis(10))
            .expect("kept");
        let mut spent = 0;
        while let Held::Spent { .. } = leases.spend(0, now) {
            spent += 1;
        }
        assert_eq!(spent, 7);
        // One key per shard: key 64 shares key 0's shard, which holds key 0 again.
        leases.keep(0, 2, 10, life, life, now).expect("kept");
        assert!(!leases.has_room(64));
        assert_eq!(leases.keep(64, 4, 10, life, life, now), Err(3));
        assert!(leases.has_room(0));
    }
}
