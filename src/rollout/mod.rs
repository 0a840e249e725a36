//! Progressive delivery: each pool's live window, and the rollouts judged by it.
//!
//! [`engine`] is the rollout state machine, [`service`] the background service that ticks it.
//! Every finished request that reached a pool is recorded in that pool's [`PoolWindow`] (see
//! [`window`] for the ring of buckets, the histogram and its error, and the races). Windows belong
//! to a (service, pool) name pair, not to a snapshot: [`Windows`] keeps them by name, so a reload
//! or a weight change (a new snapshot) keeps every pool's figures, and a pool that leaves the
//! config loses its window.
//!
//! The request path must not hash names, so [`Windows::resolve`] builds, when a snapshot is
//! published and before it is stored, a table of the windows by the snapshot's own service and
//! pool indexes. A request finds its window with one pointer load, a generation compare and two
//! array indexes. Only a request that straddles a swap (its snapshot is older than the table)
//! looks its window up by name, under a short lock.

pub mod engine;
pub mod service;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::snapshot::Snapshot;
pub use engine::{Decision, Event, Kind, Phase, Plan, Rollout, Rollouts, StepClock};
pub use window::{is_error, PoolWindow, WindowError, WindowSpec, WindowStats};

/// Windows by service name, then pool name.
type ByName = HashMap<String, HashMap<String, Arc<PoolWindow>>>;

/// The live windows of every pool, kept across snapshots; lives in `Runtime.windows`.
pub struct Windows {
    by_name: Mutex<ByName>,
    /// The windows by the indexes of the newest resolved snapshot.
    table: ArcSwap<Table>,
}

/// `services[s][p]`: the window of pool `p` of service `s` in snapshot `generation`.
#[derive(Default)]
struct Table {
    generation: u64,
    services: Box<[Box<[Arc<PoolWindow>]>]>,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("generation", &self.table.load().generation)
            .finish_non_exhaustive()
    }
}

impl Default for Windows {
    fn default() -> Self {
        Self::new()
    }
}

impl Windows {
    /// No windows yet; [`Windows::resolve`] creates them for a snapshot's pools.
    pub fn new() -> Windows {
        Windows {
            by_name: Mutex::new(HashMap::new()),
            table: ArcSwap::from_pointee(Table::default()),
        }
    }

    /// Makes `snap`'s pools the recorded ones: a pool keeps its window if it had one of the same
    /// shape (the service's `rollout.window`), gets a new one if it is new or its shape changed,
    /// and pools `snap` no longer has lose theirs. Call it before `snap` is
    /// stored (so requests on it find the table ready), one snapshot at a time (the writer lock).
    pub fn resolve(&self, snap: &Snapshot) {
        let mut by_name = self.by_name.lock();
        let mut next = ByName::new();
        let services = snap
            .services
            .iter()
            .zip(snap.config.services.iter())
            .map(|(svc, cfg)| {
                let spec = cfg.rollout.window;
                let old = by_name.get(&*svc.name);
                let pools = next.entry(svc.name.to_string()).or_default();
                svc.pools
                    .iter()
                    .map(|p| {
                        let window = old
                            .and_then(|o| o.get(&*p.name))
                            .filter(|w| w.spec() == spec)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(PoolWindow::new(spec)));
                        pools.insert(p.name.to_string(), window.clone());
                        window
                    })
                    .collect()
            })
            .collect();
        *by_name = next;
        self.table.store(Arc::new(Table {
            generation: snap.generation,
            services,
        }));
    }

    /// Records a request of pool `pool` of service `service` (indexes into `snap`) that finished
    /// at `at` after `latency`.
    pub fn record(
        &self,
        snap: &Snapshot,
        service: usize,
        pool: usize,
        at: Instant,
        latency: Duration,
        error: bool,
    ) {
        let table = self.table.load();
        if table.generation == snap.generation {
            if let Some(w) = table.services.get(service).and_then(|s| s.get(pool)) {
                w.record(at, latency, error);
            }
            return;
        }
        drop(table);
        // The request straddled a swap: by name (rare). A pool gone since has no window left.
        let Some(svc) = snap.services.get(service) else {
            return;
        };
        let Some(p) = svc.pools.get(pool) else { return };
        if let Some(w) = self.get(&svc.name, &p.name) {
            w.record(at, latency, error);
        }
    }

    /// The window of a pool of the current config, by name (admin API, metrics, rollouts).
    pub fn get(&self, service: &str, pool: &str) -> Option<Arc<PoolWindow>> {
        self.by_name.lock().get(service)?.get(pool).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ServerRegistry;
    use std::path::Path;

    fn snapshot(pools: &[&str], generation: u64) -> Snapshot {
        let mut text = String::from(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n",
        );
        for (i, pool) in pools.iter().enumerate() {
            text.push_str(&format!(
                "\n[services.api.pools.{pool}]\nweight = 1\nservers = [\"127.0.0.1:{}\"]\n",
                i + 2
            ));
        }
        let config = crate::config::parse(&text, Path::new("test.toml")).expect("valid config");
        Snapshot::compile(
            Arc::new(config),
            generation,
            &ServerRegistry::default(),
            &crate::runtime::Book::default(),
            &HashMap::new(),
        )
    }

    fn requests(windows: &Windows, pool: &str) -> Option<u64> {
        windows.get("api", pool).map(|w| w.snapshot().requests)
    }

    #[test]
    fn windows_outlive_snapshots_but_not_their_pools() {
        let windows = Windows::new();
        let first = snapshot(&["blue", "green"], 1);
        windows.resolve(&first);
        for pool in 0..2 {
            windows.record(
                &first,
                0,
                pool,
                Instant::now(),
                Duration::from_millis(5),
                false,
            );
        }
        assert_eq!(requests(&windows, "blue"), Some(1));
        assert_eq!(requests(&windows, "green"), Some(1));
        let blue = windows.get("api", "blue").expect("blue has a window");

        // A reload drops green and adds red, in a different order.
        let second = snapshot(&["red", "blue"], 2);
        windows.resolve(&second);
        let kept = windows.get("api", "blue").expect("blue kept its window");
        assert!(Arc::ptr_eq(&blue, &kept));
        assert_eq!(requests(&windows, "green"), None);
        assert_eq!(requests(&windows, "red"), Some(0));
        let blue_now = second.services[0].pool_index("blue").expect("blue");
        windows.record(
            &second,
            0,
            blue_now,
            Instant::now(),
            Duration::from_millis(5),
            false,
        );
        assert_eq!(requests(&windows, "blue"), Some(2), "by the new indexes");

        // Requests still on the first snapshot are recorded by name; green's are dropped.
        let (blue_then, green_then) = {
            let s = &first.services[0];
            (
                s.pool_index("blue").expect("blue"),
                s.pool_index("green").expect("green"),
            )
        };
        windows.record(
            &first,
            0,
            blue_then,
            Instant::now(),
            Duration::from_millis(5),
            false,
        );
        windows.record(
            &first,
            0,
            green_then,
            Instant::now(),
            Duration::from_millis(5),
            false,
        );
        assert_eq!(requests(&windows, "blue"), Some(3));
        assert_eq!(requests(&windows, "red"), Some(0));
        // Out-of-range indexes are ignored, whatever the generation.
        windows.record(&second, 5, 0, Instant::now(), Duration::ZERO, false);
        windows.record(&first, 0, 9, Instant::now(), Duration::ZERO, false);
    }
}
