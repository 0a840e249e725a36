//! A `concurrency` zone: at most N requests in progress per key (nginx's `limit_conn`, counting each HTTP/2 stream as nginx does).
//!
//! A key's count goes up when a request is admitted and down when its [`super::Admission`] is
//! dropped, with the request's context, whatever ended it. A key at 0 is removed, so the zone
//! holds only keys with requests in progress. With `max_keys` keys in progress in a shard a new
//! key is let through uncounted (the connection caps bound how many requests can be in progress).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{Limiter, Verdict, ZoneKind, ZoneSpec};

const SHARDS: usize = 64;

#[derive(Debug)]
pub struct ConcurrencyZone {
    spec: ZoneSpec,
    max: u32,
    shards: Box<[Mutex<HashMap<u64, u32>>]>,
    per_shard: usize,
}

/// The key a request admitted beyond `max_keys` is counted under: nothing (see the module docs).
const UNCOUNTED: u64 = u64::MAX;

impl ConcurrencyZone {
    pub fn new(spec: ZoneSpec) -> ConcurrencyZone {
        let max = match spec.kind {
            ZoneKind::Concurrency { max } => max,
            _ => 1,
        };
        let per_shard = spec.max_keys.div_ceil(SHARDS).max(1);
        ConcurrencyZone {
            max,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            spec,
        }
    }

    /// Requests in progress for `key`.
    pub fn in_progress(&self, key: u64) -> u32 {
        let shard = &self.shards[(key as usize) % SHARDS];
        shard.lock().get(&key).copied().unwrap_or(0)
    }

    /// Admits a request for `key` (returning the key its release must name) or refuses it.
    pub fn admit(&self, key: u64) -> Result<u64, Verdict> {
        let key = if key == UNCOUNTED { key - 1 } else { key };
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock();
        let full = map.len() >= self.per_shard;
        match map.get_mut(&key) {
            Some(n) if *n >= self.max => Err(Verdict::Limited {
                limit: self.max,
                retry_after: None,
                status: self.spec.status,
            }),
            Some(n) => {
                *n += 1;
                Ok(key)
            }
            None if full => Ok(UNCOUNTED),
            None => {
                map.insert(key, 1);
                Ok(key)
            }
        }
    }
}

impl Limiter for ConcurrencyZone {
    fn spec(&self) -> &ZoneSpec {
        &self.spec
    }

    /// Admits (the caller then holds an [`super::Admission`] for the key it is given) or refuses.
    fn check(&self, key: u64) -> Verdict {
        match self.admit(key) {
            Ok(key) => Verdict::Admitted { key },
            Err(refused) => refused,
        }
    }

    fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn sweep(&self) {}

    fn release(&self, key: u64) {
        if key == UNCOUNTED {
            return;
        }
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock();
        if let Some(n) = map.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Admission, KeyKind};
    use std::sync::Arc;

    fn zone(max: u32, max_keys: usize) -> Arc<ConcurrencyZone> {
        Arc::new(ConcurrencyZone::new(ZoneSpec {
            name: "c".into(),
            key: KeyKind::ClientIp,
            kind: ZoneKind::Concurrency { max },
            max_keys,
            status: 429,
            scope: crate::limits::Scope::Node,
        }))
    }

    #[test]
    fn counts_requests_in_progress_and_releases_on_drop() {
        let z = zone(2, 1000);
        assert_eq!(z.check(7), Verdict::Admitted { key: 7 });
        let a = Admission::new(z.clone(), 7);
        assert_eq!(z.check(7), Verdict::Admitted { key: 7 });
        let b = Admission::new(z.clone(), 7);
        assert!(matches!(
            z.check(7),
            Verdict::Limited {
                limit: 2,
                retry_after: None,
                ..
            }
        ));
        assert_eq!(z.check(8), Verdict::Admitted { key: 8 }, "another key");
        let _c = Admission::new(z.clone(), 8);
        drop(a);
        assert_eq!(z.in_progress(7), 1);
        assert_eq!(z.check(7), Verdict::Admitted { key: 7 });
        let d = Admission::new(z.clone(), 7);
        drop(b);
        drop(d);
        assert_eq!(z.in_progress(7), 0);
        assert_eq!(z.keys(), 1, "a key at 0 is removed");
    }

    #[test]
    fn a_full_zone_lets_new_keys_through_uncounted() {
        let z = zone(1, 64);
        assert_eq!(z.admit(1), Ok(1));
        assert_eq!(z.admit(65), Ok(UNCOUNTED), "the shard (one key) is full");
        z.release(UNCOUNTED);
        assert_eq!(z.in_progress(1), 1);
    }
}
