//! ACME's Prometheus metrics, registered in Switchyard's registry so `GET /metrics` shows them.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::view::{CertState, CertStatus};

pub(crate) struct AcmeMetrics {
    expiry: GaugeVec,
    next_renewal: GaugeVec,
    pending: IntGaugeVec,
    orders: IntCounterVec,
    failures: IntCounterVec,
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // Invariant: the definitions below are constants (checked by the unit test) registered once
    // into the process's own registry, whose other names do not start with these prefixes.
    r.register(Box::new(c.clone()))
        .expect("ACME metric definitions are valid and unique");
    c
}

impl AcmeMetrics {
    pub(crate) fn new(r: &Registry) -> AcmeMetrics {
        let gauge = |name: &str, help: &str| {
            registered(
                r,
                GaugeVec::new(Opts::new(name, help), &["name"]).expect("valid gauge"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        AcmeMetrics {
            expiry: gauge(
                "switchyard_cert_expiry_timestamp_seconds",
                "When the ACME certificate serving each name expires (Unix seconds); absent while none was obtained.",
            ),
            next_renewal: gauge(
                "switchyard_cert_next_renewal_timestamp_seconds",
                "When the next order for each name's ACME certificate is due (Unix seconds): renewal time, or the next retry after a failure.",
            ),
            pending: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_cert_pending",
                        "1 while a name configured for ACME has no certificate yet and is served a self-signed fallback.",
                    ),
                    &["name"],
                )
                .expect("valid gauge"),
            ),
            orders: counter(
                "switchyard_acme_orders_total",
                "ACME orders placed, by challenge and result (success, failure).",
                &["challenge", "result"],
            ),
            failures: counter(
                "switchyard_acme_failures_total",
                "Failed ACME orders, by challenge and reason (validation, ca_unreachable, bad_nonce, rate_limited, dns_hook, timeout, ...).",
                &["challenge", "reason"],
            ),
        }
    }

    /// Sets the per-name gauges from a certificate's status.
    pub(crate) fn show(&self, s: &CertStatus) {
        for name in &s.names {
            match s.not_after_unix {
                Some(t) => self.expiry.with_label_values(&[name]).set(t as f64),
                None => {
                    let _ = self.expiry.remove_label_values(&[name]);
                }
            }
            match s.next_attempt_unix {
                Some(t) => self.next_renewal.with_label_values(&[name]).set(t as f64),
                None => {
                    let _ = self.next_renewal.remove_label_values(&[name]);
                }
            }
            self.pending
                .with_label_values(&[name])
                .set(i64::from(s.status == CertState::Pending));
        }
    }

    /// Drops the per-name series of a certificate no longer configured.
    pub(crate) fn forget(&self, names: &[String]) {
        for name in names {
            let _ = self.expiry.remove_label_values(&[name]);
            let _ = self.next_renewal.remove_label_values(&[name]);
            let _ = self.pending.remove_label_values(&[name]);
        }
    }

    pub(crate) fn order(&self, challenge: &str, failure: Option<&str>) {
        let result = if failure.is_some() {
            "failure"
        } else {
            "success"
        };
        self.orders.with_label_values(&[challenge, result]).inc();
        if let Some(reason) = failure {
            self.failures.with_label_values(&[challenge, reason]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn registers_in_a_fresh_registry() {
        let r = prometheus::Registry::new();
        let m = super::AcmeMetrics::new(&r);
        m.order("http-01", Some("validation"));
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        assert!(names.contains(&"switchyard_acme_failures_total".to_string()));
    }
}
