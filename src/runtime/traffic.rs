//! The last minutes of each pool's traffic, sampled every few seconds: the pool windows hold only 10 s, and the dashboard's chart needs the shares over time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{PoolTraffic, Traffic, TrafficSample};
use crate::book::unix_ms;
use crate::rollout::PoolWindow;
use crate::snapshot::Snapshot;

/// How often the history is sampled.
pub const STEP: Duration = Duration::from_secs(2);
/// Samples kept: 10 minutes at [`STEP`].
pub const KEEP: usize = 300;

/// Requests per pool and step, for the last [`KEEP`] steps, of every service.
#[derive(Default)]
pub struct TrafficHistory {
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When the last sample (or the first reading) was taken.
    last: Option<Instant>,
    /// Each pool's window and its request total at the last reading, by (service, pool).
    totals: HashMap<(Arc<str>, Arc<str>), Reading>,
    samples: VecDeque<Sample>,
}

struct Reading {
    window: Arc<PoolWindow>,
    total: u64,
}

struct Sample {
    time: u64,
    seconds: f64,
    services: Vec<ServiceStep>,
}

struct ServiceStep {
    name: Arc<str>,
    pools: Vec<PoolStep>,
}

struct PoolStep {
    name: Arc<str>,
    /// Requests in the step.
    requests: u64,
    /// Weight in force at the step's end.
    weight: u32,
}

impl TrafficHistory {
    /// Reads every pool's request total in `snap`; from the second call on, adds a sample of the
    /// requests since the previous call. A pool whose window is new since then (added, or its
    /// window reshaped by a reload) counts its window's whole total.
    pub fn record(&self, snap: &Snapshot, now: Instant) {
        let mut inner = self.inner.lock();
        let mut totals = HashMap::with_capacity(inner.totals.len());
        let mut services = Vec::with_capacity(snap.services.len());
        for service in snap.services.iter() {
            let mut pools = Vec::with_capacity(service.pools.len());
            for pool in &service.pools {
                let total = pool.window.own_requests();
                let key = (service.name.clone(), pool.name.clone());
                let before = match inner.totals.get(&key) {
                    Some(r) if Arc::ptr_eq(&r.window, &pool.window) => r.total,
                    _ => 0,
                };
                pools.push(PoolStep {
                    name: pool.name.clone(),
                    requests: total.saturating_sub(before),
                    weight: pool.weight,
                });
                let window = pool.window.clone();
                totals.insert(key, Reading { window, total });
            }
            services.push(ServiceStep {
                name: service.name.clone(),
                pools,
            });
        }
        inner.totals = totals;
        let Some(last) = inner.last.replace(now) else {
            return;
        };
        inner.samples.push_back(Sample {
            time: unix_ms(),
            seconds: now.saturating_duration_since(last).as_secs_f64(),
            services,
        });
        while inner.samples.len() > KEEP {
            inner.samples.pop_front();
        }
    }

    /// The samples of `service`, oldest first (those taken before it existed are left out).
    pub fn view(&self, service: &str) -> Traffic {
        let inner = self.inner.lock();
        let samples = inner
            .samples
            .iter()
            .filter_map(|s| {
                let step = s.services.iter().find(|st| &*st.name == service)?;
                Some(TrafficSample {
                    time: s.time,
                    seconds: s.seconds,
                    pools: step
                        .pools
                        .iter()
                        .map(|p| PoolTraffic {
                            name: p.name.to_string(),
                            requests: p.requests,
                            weight: p.weight,
                        })
                        .collect(),
                })
            })
            .collect();
        Traffic {
            service: service.to_string(),
            step_seconds: STEP.as_secs_f64(),
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Runtime, TEST_CONFIG};

    fn requests(rt: &Runtime, pool: &str, n: usize) {
        let snap = rt.snapshot();
        let window = &snap.pool("api", pool).expect("pool").window;
        for _ in 0..n {
            window.record(Instant::now(), Duration::from_millis(1), false);
        }
    }

    #[test]
    fn samples_requests_per_step_and_pool() {
        let rt = Runtime::for_tests(TEST_CONFIG);
        let history = TrafficHistory::default();
        let t0 = Instant::now();
        requests(&rt, "blue", 5);
        // The first reading is the baseline: what came before it is not a step.
        history.record(&rt.snapshot(), t0);
        assert!(history.view("api").samples.is_empty());

        requests(&rt, "blue", 9);
        requests(&rt, "green", 1);
        history.record(&rt.snapshot(), t0 + STEP);
        history.record(&rt.snapshot(), t0 + 2 * STEP);
        let view = history.view("api");
        assert_eq!(view.step_seconds, 2.0);
        let steps: Vec<Vec<(String, u64, u32)>> = view
            .samples
            .iter()
            .map(|s| {
                s.pools
                    .iter()
                    .map(|p| (p.name.clone(), p.requests, p.weight))
                    .collect()
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                vec![("blue".into(), 9, 100), ("green".into(), 1, 0)],
                vec![("blue".into(), 0, 100), ("green".into(), 0, 0)],
            ]
        );
        assert_eq!(view.samples[0].seconds, 2.0);
        assert!(view.samples[0].time <= view.samples[1].time);
        assert!(history.view("nope").samples.is_empty());

        for i in 0..KEEP as u32 {
            history.record(&rt.snapshot(), t0 + (3 + i) * STEP);
        }
        assert_eq!(history.view("api").samples.len(), KEEP);
    }
}
