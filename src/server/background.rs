//! The background services that keep the snapshot's side state fresh: the rollout tick and the rate-limit upkeep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::runtime::Runtime;

/// How often active rollouts are judged.
pub const TICK: Duration = Duration::from_millis(100);

/// How often idle keys are swept out of every zone.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Judges every active rollout each [`TICK`] on the newest published snapshot (see
/// `Runtime::tick_rollouts`): with 1 s window buckets, a breach is acted on within about 100 ms
/// of the request that revealed it.
pub struct RolloutService {
    runtime: Arc<Runtime>,
}

impl RolloutService {
    pub fn new(runtime: Arc<Runtime>) -> RolloutService {
        RolloutService { runtime }
    }
}

#[async_trait]
impl BackgroundService for RolloutService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let published = self.runtime.subscribe();
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let snap = published.borrow().clone();
                    self.runtime.tick_rollouts(&snap, Instant::now());
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Drops idle keys from every zone in force, so memory follows the active clients.
pub struct Upkeep {
    runtime: Arc<Runtime>,
}

impl Upkeep {
    pub fn new(runtime: Arc<Runtime>) -> Upkeep {
        Upkeep { runtime }
    }
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let published = self.runtime.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let zones = published.borrow().zones.clone();
            for zone in zones.iter() {
                zone.sweep();
            }
        }
    }
}
