//! A bounded, sharded key → GCRA state store for governor: idle keys cost nothing and are dropped first.
//!
//! governor keeps one value per key: the theoretical arrival time (TAT) of the next request, in
//! nanoseconds since the limiter started. A key whose TAT is in the past has a full bucket, exactly
//! as if it had never been seen, so dropping it loses nothing. When a shard is full, the idle keys go
//! first; if that frees too little, the keys closest to idle go (an approximate LRU), which can
//! only make the limit more lenient for those keys, never stricter.

use std::collections::HashMap;
use std::time::Instant;

use governor::nanos::Nanos;
use governor::state::StateStore;
use parking_lot::Mutex;

const SHARDS: usize = 64;

#[derive(Debug)]
pub struct BoundedStore {
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    per_shard: usize,
    /// Created just before the limiter, so `now` here is never earlier than the limiter's.
    start: Instant,
}

impl BoundedStore {
    /// A store that holds at most about `max_keys` keys (rounded up to a multiple of the shards).
    pub fn new(max_keys: usize) -> BoundedStore {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(HashMap::with_capacity(per_shard.min(1024))))
            .collect();
        BoundedStore {
            shards,
            per_shard,
            start: Instant::now(),
        }
    }

    /// Keys held right now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the key tables have allocated: 16 bytes of entry and 1 control byte per bucket,
    /// where a table of capacity c has the next power of two above c * 8/7 buckets.
    pub fn memory_bytes(&self) -> usize {
        let buckets = |c: usize| {
            if c == 0 {
                0
            } else {
                (c * 8).div_ceil(7).next_power_of_two()
            }
        };
        self.shards
            .iter()
            .map(|s| buckets(s.lock().capacity()) * 17)
            .sum::<usize>()
            + SHARDS * std::mem::size_of::<Mutex<HashMap<u64, u64>>>()
    }

    /// The most keys this store will hold.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Moves `key`'s TAT back by one emission interval: the last request counted is taken back.
    pub fn refund(&self, key: u64, interval_nanos: u64) {
        let mut map = self.shards[(key as usize) % SHARDS].lock();
        if let Some(tat) = map.get_mut(&key) {
            *tat = tat.saturating_sub(interval_nanos);
        }
    }

    /// Drops every idle key (background upkeep).
    pub fn sweep(&self) {
        let now = self.now();
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|_, tat| *tat > now);
            if map.capacity() > 4 * map.len().max(64) {
                map.shrink_to_fit();
            }
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Makes room for one more key in a full shard.
    fn evict(&self, map: &mut HashMap<u64, u64>) {
        let now = self.now();
        map.retain(|_, tat| *tat > now);
        let target = self.per_shard - self.per_shard / 8 - 1;
        if map.len() > target {
            // Keep the keys furthest from idle; drop the rest (an eighth of the shard at least).
            let mut tats: Vec<u64> = map.values().copied().collect();
            let cut = map.len() - target;
            let (_, nth, _) = tats.select_nth_unstable(cut - 1);
            let threshold = *nth;
            let mut to_drop = cut;
            map.retain(|_, tat| {
                if to_drop > 0 && *tat <= threshold {
                    to_drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let shard = &self.shards[(*key as usize) % SHARDS];
        let mut map = shard.lock();
        let old = map.get(key).copied();
        let (outcome, tat) = f(old.map(Nanos::from))?;
        if old.is_none() && map.len() >= self.per_shard {
            self.evict(&mut map);
        }
        map.insert(*key, tat.as_u64());
        Ok(outcome)
    }
}

/// A shared handle, so the zone can report and sweep the store the limiter owns.
#[derive(Debug, Clone)]
pub struct StoreHandle(pub std::sync::Arc<BoundedStore>);

impl StateStore for StoreHandle {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_under_a_spray() {
        let store = BoundedStore::new(10_000);
        for key in 0..1_000_000u64 {
            let k = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            // Every key "busy" for an hour: nothing is idle, eviction must still bound the size.
            let _: Result<(), ()> =
                store.measure_and_replace(&k, |_| Ok(((), Nanos::from(3_600_000_000_000u64))));
        }
        assert!(
            store.len() <= store.capacity(),
            "{} > {}",
            store.len(),
            store.capacity()
        );
        assert!(store.capacity() < 10_100);
        // The documented bound: 64 bytes per key of max_keys (docs/limits.md).
        let bytes = store.memory_bytes();
        eprintln!("{} keys held, {bytes} bytes of tables", store.len());
        assert!(bytes <= 10_000 * 64, "{bytes} bytes");
    }

    #[test]
    fn idle_keys_are_swept() {
        let store = BoundedStore::new(1000);
        for k in 0..500u64 {
            let _: Result<(), ()> = store.measure_and_replace(&k, |_| Ok(((), Nanos::from(1u64))));
        }
        let _: Result<(), ()> =
            store.measure_and_replace(&9999, |_| Ok(((), Nanos::from(u64::MAX / 2))));
        store.sweep();
        assert_eq!(store.len(), 1, "only the busy key stays");
    }
}
