//! The background services that keep the snapshot's side state fresh: the rollout tick, the rate-limit upkeep, the span export and the traffic history.

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

/// Sends the finished requests' spans to `[tracing] otlp_endpoint` (read from the newest
/// snapshot at each batch, so a reload changes it): every `export_interval`, or at once when a
/// batch is full. A failed batch is dropped, and said so in the log (rate-limited) with the
/// count: spans are never worth slowing the proxy for.
pub struct SpanExport {
    runtime: Arc<Runtime>,
}

impl SpanExport {
    pub fn new(runtime: Arc<Runtime>) -> SpanExport {
        SpanExport { runtime }
    }
}

#[async_trait]
impl BackgroundService for SpanExport {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = reqwest::Client::new();
        // The newest published snapshot, without a load of the request path's cell.
        let published = self.runtime.subscribe();
        loop {
            let interval = published.borrow().config.tracing.export_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.runtime.spans.full.notified() => {}
                _ = shutdown.changed() => return,
            }
            let snap = published.borrow().clone();
            let tracing = &snap.config.tracing;
            let dropped = self.runtime.spans.take_dropped();
            if dropped > 0 {
                crate::lograte::warn(
                    "otlp-queue",
                    format_args!("otlp: {dropped} span(s) dropped: the export queue was full"),
                );
            }
            let spans = self.runtime.spans.take();
            let Some(endpoint) = &tracing.otlp_endpoint else {
                continue;
            };
            for batch in spans.chunks(crate::otlp::BATCH) {
                if let Err(e) =
                    crate::otlp::send(&client, endpoint, &tracing.service_name, batch).await
                {
                    crate::lograte::warn(
                        "otlp-send",
                        format_args!("otlp: {} span(s) dropped: {e}", batch.len()),
                    );
                }
            }
        }
    }
}

/// Samples every pool's request count each [`TRAFFIC_STEP`](crate::runtime::TRAFFIC_STEP) into
/// the runtime's traffic history (`GET /v1/services/{service}/traffic`, the dashboard's chart).
pub struct TrafficSampler {
    runtime: Arc<Runtime>,
}

impl TrafficSampler {
    pub fn new(runtime: Arc<Runtime>) -> TrafficSampler {
        TrafficSampler { runtime }
    }
}

#[async_trait]
impl BackgroundService for TrafficSampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let published = self.runtime.subscribe();
        let mut every = tokio::time::interval(crate::runtime::TRAFFIC_STEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let snap = published.borrow().clone();
                    self.runtime.traffic.record(&snap, Instant::now());
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Pings the fleet's Redis every second, reconnecting as needed, and marks it up or down for the
/// cluster zones (`redis_limits`): while it is down no request waits on it.
pub struct RedisProbe {
    redis: Arc<crate::redis_limits::RedisLimits>,
}

impl RedisProbe {
    pub fn new(redis: Arc<crate::redis_limits::RedisLimits>) -> RedisProbe {
        RedisProbe { redis }
    }
}

#[async_trait]
impl BackgroundService for RedisProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        self.redis.clone().run(stop).await;
    }
}
