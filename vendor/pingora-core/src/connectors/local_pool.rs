// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Idle upstream connections kept per thread, for connectors used on single-threaded runtimes.
//!
//! Under a pool of single-threaded runtimes (`work_stealing = false`) a socket belongs to the I/O
//! driver of the thread that opened it. The shared [`pingora_pool::ConnectionPool`] hands an idle
//! connection to whichever thread asks next, and every release spawns an idle watcher task on a
//! random thread (two channels, a lock and a task per request); a connection reused on another
//! thread has each readiness event relayed from its home thread. This pool keeps each thread's
//! idle connections on that thread, with no task per connection: liveness is checked when a
//! connection is taken (as the shared pool does too), and one sweeper task per thread closes, once
//! a second, the idle connections that timed out or that their server closed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocols::Stream;
use crate::upstreams::peer::IdleHold;

use super::{test_reusable_stream, PoolCallback};

/// How often a thread's sweeper looks at its idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One connector's settings, as its pool on each thread needs them.
#[derive(Clone)]
pub(crate) struct Owner {
    /// Tells connectors apart (each has its own pool, as with the shared pool).
    pub id: u64,
    /// At most this many idle connections per thread; the oldest goes first.
    pub size: usize,
    pub unexpected_data: Arc<AtomicU64>,
    pub evicted: Option<PoolCallback>,
}

struct Idle {
    stream: Stream,
    since: Instant,
    timeout: Option<Duration>,
    /// Counted in the peer's idle limit while pooled.
    _hold: Option<IdleHold>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }
}

/// Hashes the pool's keys, which are already hashes (a peer's reuse hash) or small counters (a
/// connector's id), with one multiply each: the default SipHash cost about 160 instructions per
/// lookup, several lookups per request. The keys come from configured peers, never from clients.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// One connector's share of a thread's pool.
struct Connector {
    owner: Owner,
    /// Its idle connections on this thread.
    idle: usize,
}

#[derive(Default)]
struct Pools {
    /// By (connector, group key): oldest first. A group emptied by `take` keeps its allocation
    /// for the next release until the sweeper removes it.
    groups: KeyMap<(u64, u64), Vec<Idle>>,
    /// The connectors with connections pooled here, for the counts and the sweeper's counters.
    connectors: KeyMap<u64, Connector>,
    sweeper: bool,
}

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::new(Pools::default());
}

/// The newest idle connection of `key` on this thread that is still usable and that `fits`.
pub(crate) fn take(owner: &Owner, key: u64, fits: impl Fn(&Stream) -> bool) -> Option<Stream> {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let now = Instant::now();
        let mut found = None;
        let mut taken = 0;
        if let Some(group) = p.groups.get_mut(&(owner.id, key)) {
            while let Some(mut idle) = group.pop() {
                taken += 1;
                if !idle.expired(now)
                    && fits(&idle.stream)
                    && test_reusable_stream(&mut idle.stream, &owner.unexpected_data)
                {
                    found = Some(idle.stream);
                    break;
                }
            }
        }
        if taken > 0 {
            if let Some(c) = p.connectors.get_mut(&owner.id) {
                c.idle = c.idle.saturating_sub(taken);
            }
        }
        found
    })
}

/// Keeps `stream` as an idle connection of `key` on this thread, for at most `timeout`; the
/// thread's oldest idle connection of the same connector makes room when the pool is full.
pub(crate) fn put(
    owner: &Owner,
    key: u64,
    stream: Stream,
    timeout: Option<Duration>,
    hold: Option<IdleHold>,
) {
    if owner.size == 0 {
        return;
    }
    let start_sweeper = POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let p = &mut *p;
        let connector = p.connectors.entry(owner.id).or_insert_with(|| Connector {
            owner: owner.clone(),
            idle: 0,
        });
        if connector.idle >= owner.size {
            evict_oldest(&mut p.groups, owner);
        } else {
            connector.idle += 1;
        }
        p.groups.entry((owner.id, key)).or_default().push(Idle {
            stream,
            since: Instant::now(),
            timeout,
            _hold: hold,
        });
        !std::mem::replace(&mut p.sweeper, true)
    });
    if start_sweeper {
        // The current runtime is this thread's own: the sweeper stays on this thread.
        tokio::spawn(sweep_forever());
    }
}

/// Drops the connector's oldest idle connection on this thread (its count stays: the caller
/// puts one in its place).
fn evict_oldest(groups: &mut KeyMap<(u64, u64), Vec<Idle>>, owner: &Owner) {
    let oldest = groups
        .iter()
        .filter(|((id, _), g)| *id == owner.id && !g.is_empty())
        .min_by_key(|(_, g)| g[0].since)
        .map(|(k, _)| *k);
    if let Some(k) = oldest {
        let idle = groups.get_mut(&k).expect("found above").remove(0);
        if let Some(callback) = &owner.evicted {
            callback(idle.since.elapsed());
        }
    }
}

/// Closes the idle connections that timed out or that their server closed (or sent data on),
/// once a second, until the thread has none left.
async fn sweep_forever() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        if !sweep(Instant::now()) {
            return;
        }
    }
}

/// One sweep of this thread's pool; false (and the sweeper marked stopped) once it is empty.
/// Emptied groups go here too.
fn sweep(now: Instant) -> bool {
    POOLS.with(|p| {
        let mut p = p.borrow_mut();
        let Pools {
            groups,
            connectors,
            sweeper,
        } = &mut *p;
        groups.retain(|(id, _), group| {
            let mut connector = connectors.get_mut(id);
            group.retain_mut(|idle| {
                let keep = !idle.expired(now)
                    && connector.as_ref().is_some_and(|c| {
                        test_reusable_stream(&mut idle.stream, &c.owner.unexpected_data)
                    });
                if !keep {
                    if let Some(c) = connector.as_mut() {
                        c.idle = c.idle.saturating_sub(1);
                    }
                }
                keep
            });
            !group.is_empty()
        });
        if groups.is_empty() {
            *sweeper = false;
            false
        } else {
            true
        }
    })
}

/// Idle connections on this thread, all connectors together (for tests).
#[cfg(test)]
pub(crate) fn idle_here() -> usize {
    POOLS.with(|p| p.borrow().groups.values().map(Vec::len).sum())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;
    use crate::connectors::TransportConnector;
    use crate::upstreams::peer::{BasicPeer, Peer};

    /// A server that accepts connections and keeps each open until told to close them all.
    fn holding_server() -> (String, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (close, closing) = mpsc::channel::<()>();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            loop {
                if let Ok((s, _)) = listener.accept() {
                    kept.push(s);
                }
                match closing.try_recv() {
                    Ok(()) => kept.clear(),
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        (addr, close)
    }

    fn single_threaded() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn idle_connections_stay_on_the_thread_that_released_them() {
        let (addr, _close) = holding_server();
        let connector = Arc::new(TransportConnector::new(None));
        let peer = BasicPeer::new(&addr);
        let home = single_threaded();
        let released = home.block_on(async {
            let s = connector.new_stream(&peer).await.unwrap();
            let id = s.id();
            connector.release_stream(s, peer.reuse_hash(), None);
            assert_eq!(idle_here(), 1);
            id
        });
        // Another worker thread does not get it: it opens its own connection.
        let (c, p) = (connector.clone(), peer.clone());
        std::thread::spawn(move || {
            single_threaded().block_on(async {
                let (_, reused) = c.get_stream(&p).await.unwrap();
                assert!(!reused, "another thread's idle connection was handed out");
            })
        })
        .join()
        .unwrap();
        // The thread that released it does.
        home.block_on(async {
            let (s, reused) = connector.get_stream(&peer).await.unwrap();
            assert!(reused);
            assert_eq!(s.id(), released);
            assert_eq!(idle_here(), 0);
        });
    }

    #[test]
    fn connections_past_their_idle_timeout_are_not_reused() {
        let (addr, _close) = holding_server();
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr);
        single_threaded().block_on(async {
            let s = connector.new_stream(&peer).await.unwrap();
            connector.release_stream(s, peer.reuse_hash(), Some(Duration::from_millis(20)));
            tokio::time::sleep(Duration::from_millis(60)).await;
            let (_, reused) = connector.get_stream(&peer).await.unwrap();
            assert!(!reused);
            assert_eq!(idle_here(), 0);
        });
    }

    #[test]
    fn the_sweeper_closes_connections_their_server_closed() {
        let (addr, close) = holding_server();
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr);
        single_threaded().block_on(async {
            let s = connector.new_stream(&peer).await.unwrap();
            connector.release_stream(s, peer.reuse_hash(), None);
            assert_eq!(idle_here(), 1);
            close.send(()).unwrap();
            for _ in 0..100 {
                if idle_here() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(idle_here(), 0, "a closed connection stayed in the pool");
            // The sweeper stopped with the pool empty, and starts again with the next release.
            let s = connector.new_stream(&peer).await.unwrap();
            connector.release_stream(s, peer.reuse_hash(), None);
            assert_eq!(idle_here(), 1);
            assert!(POOLS.with(|p| p.borrow().sweeper));
        });
    }

    #[test]
    fn an_emptied_group_is_kept_for_the_next_release_until_the_sweep() {
        let (addr, _close) = holding_server();
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr);
        let groups = || POOLS.with(|p| p.borrow().groups.len());
        single_threaded().block_on(async {
            let s = connector.new_stream(&peer).await.unwrap();
            connector.release_stream(s, peer.reuse_hash(), None);
            let (s, reused) = connector.get_stream(&peer).await.unwrap();
            assert!(reused);
            assert_eq!((idle_here(), groups()), (0, 1));
            // Released again: into the kept group, counted once.
            connector.release_stream(s, peer.reuse_hash(), None);
            assert_eq!((idle_here(), groups()), (1, 1));
            let (_s, reused) = connector.get_stream(&peer).await.unwrap();
            assert!(reused);
            let count: usize = POOLS.with(|p| p.borrow().connectors.values().map(|c| c.idle).sum());
            assert_eq!(count, 0);
            // The sweep removes the empty group and, with nothing left, stops.
            assert!(!sweep(Instant::now()));
            assert_eq!(groups(), 0);
        });
    }

    #[test]
    fn a_full_pool_drops_its_oldest_connection() {
        let (addr, _close) = holding_server();
        let mut options = crate::connectors::ConnectorOptions::new(2);
        let evicted = Arc::new(AtomicU64::new(0));
        let counter = evicted.clone();
        options.keepalive_pool_callback = Some(Arc::new(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        let connector = TransportConnector::new(Some(options));
        let peer = BasicPeer::new(&addr);
        single_threaded().block_on(async {
            let mut ids = Vec::new();
            for _ in 0..3 {
                let s = connector.new_stream(&peer).await.unwrap();
                ids.push(s.id());
                connector.release_stream(s, peer.reuse_hash(), None);
            }
            assert_eq!(idle_here(), 2);
            assert_eq!(evicted.load(std::sync::atomic::Ordering::Relaxed), 1);
            // Newest first; the oldest is gone.
            let (s, _) = connector.get_stream(&peer).await.unwrap();
            assert_eq!(s.id(), ids[2]);
            let (s, _) = connector.get_stream(&peer).await.unwrap();
            assert_eq!(s.id(), ids[1]);
            let (_, reused) = connector.get_stream(&peer).await.unwrap();
            assert!(!reused);
        });
    }

    #[test]
    fn a_connection_goes_only_to_the_address_it_is_connected_to() {
        // A connection released under another peer's key (as a hash collision would) is not
        // handed to that peer: its address, known from its digest, does not match.
        let (a, _close_a) = holding_server();
        let (b, _close_b) = holding_server();
        let connector = TransportConnector::new(None);
        let (peer_a, peer_b) = (BasicPeer::new(&a), BasicPeer::new(&b));
        single_threaded().block_on(async {
            let s = connector.new_stream(&peer_a).await.unwrap();
            let id = s.id();
            connector.release_stream(s, peer_b.reuse_hash(), None);
            assert!(connector.reused_stream(&peer_b).await.is_none());
            let s = connector.new_stream(&peer_a).await.unwrap();
            let id2 = s.id();
            connector.release_stream(s, peer_a.reuse_hash(), None);
            let reused = connector.reused_stream(&peer_a).await.unwrap();
            assert_eq!(reused.id(), id2);
            let _ = id;
        });
    }

    #[test]
    fn work_stealing_runtimes_keep_the_shared_pool() {
        let (addr, _close) = holding_server();
        let connector = TransportConnector::new(None);
        let peer = BasicPeer::new(&addr);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let s = connector.new_stream(&peer).await.unwrap();
                let id = s.id();
                connector.release_stream(s, peer.reuse_hash(), None);
                assert_eq!(idle_here(), 0);
                // In the shared pool (read directly: taking it through `get_stream` races with
                // the shared pool's idle watcher now and then, as it did before these patches).
                let pooled = connector
                    .connection_pool
                    .get(&peer.reuse_hash())
                    .expect("the connection is in the shared pool");
                assert_eq!(pooled.lock().await.id(), id);
            });
    }
}
