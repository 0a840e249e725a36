//! Rollout series: transitions and shielded requests counted as they happen, each service's latest rollout read at scrape time.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec};

/// Every reason a rollout ends without promotion (`switchyard_rollout_rollbacks_total{reason}`):
/// the gates' (error_rate, latency), an operator's abort, a forced weight change, a reload.
pub(crate) const ROLLBACK_REASONS: [&str; 5] =
    ["error_rate", "latency", "operator", "forced", "config"];

/// Rollout series: transitions and shielded requests counted as they happen, the state of each
/// service's latest rollout read at scrape time.
pub(crate) struct RolloutMetrics {
    pub(crate) events: IntCounterVec,
    pub(crate) rollbacks: IntCounterVec,
    pub(crate) shielded: IntCounterVec,
    state: IntGaugeVec,
    canary_weight: IntGaugeVec,
    step: IntGaugeVec,
}

impl RolloutMetrics {
    pub(crate) fn new(r: &Registry) -> RolloutMetrics {
        RolloutMetrics {
            events: counter_vec(
                r,
                "switchyard_rollout_events_total",
                "Rollout transitions by event (started, step, held, paused, resumed, promoted, rolled_back, aborted, restarted).",
                &["service", "event"],
            ),
            rollbacks: counter_vec(
                r,
                "switchyard_rollout_rollbacks_total",
                "Rollouts ended without promotion, by reason: error_rate, latency (automatic), operator (abort), forced (weight change), config (reload).",
                &["service", "reason"],
            ),
            shielded: counter_vec(
                r,
                "switchyard_rollout_shielded_requests_total",
                "Idempotent requests that failed on the canary (connect error or 5xx) and were retried on the stable pool.",
                &["service", "canary"],
            ),
            state: gauge_vec(
                r,
                "switchyard_rollout_state",
                "State of the service's latest rollout: 1 progressing, 2 paused, 3 promoted, 4 rolled back, 5 aborted.",
                &["service", "kind"],
            ),
            canary_weight: gauge_vec(
                r,
                "switchyard_rollout_canary_weight",
                "Percent of traffic the latest rollout gives its canary (0 once rolled back or aborted, 100 once promoted).",
                &["service", "canary"],
            ),
            step: gauge_vec(
                r,
                "switchyard_rollout_step",
                "1-based step of the service's latest rollout.",
                &["service"],
            ),
        }
    }

    /// Creates the rollback counters of `service` at 0 where they are missing, so that the first
    /// rollback of a process is an increase from 0 (an alert on `increase()` sees a counter born
    /// at 1 as no increase at all).
    pub(crate) fn present(&self, service: &str) {
        for reason in ROLLBACK_REASONS {
            self.rollbacks.with_label_values(&[service, reason]);
        }
    }

    /// Sets the gauges of each service's latest rollout (at scrape time).
    pub(crate) fn refresh(&self, rollouts: &crate::rollout::Rollouts) {
        self.state.reset();
        self.canary_weight.reset();
        self.step.reset();
        for (service, history) in &rollouts.services {
            let Some(r) = &history.current else { continue };
            let kind = match r.kind {
                crate::rollout::Kind::Rollout => "rollout",
                crate::rollout::Kind::Switch => "switch",
            };
            self.state
                .with_label_values(&[service.as_str(), kind])
                .set(r.state.code());
            self.canary_weight
                .with_label_values(&[service.as_str(), r.canary.as_str()])
                .set(i64::from(r.canary_weight()));
            self.step
                .with_label_values(&[service.as_str()])
                .set(i64::try_from(r.step + 1).unwrap_or(i64::MAX));
        }
    }
}
