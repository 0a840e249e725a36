//! The `/metrics` text: scrape-time gauges read from the current snapshot, then every family encoded.

use prometheus::TextEncoder;

use crate::limits::conn::ConnLimits;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The text exposition of every metric, for `GET /metrics`: the scrape-time gauges are set from
/// `snap` (and the process-wide counts given), then every family is encoded.
pub fn render(m: &Metrics, snap: &Snapshot, in_flight: usize, connections: &ConnLimits) -> String {
    let _one_scrape = m.scrape.lock();
    let overrides = &snap.book.overrides;
    m.requests_in_flight
        .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    m.config_generation
        .set(i64::try_from(snap.generation).unwrap_or(i64::MAX));
    m.rate_limit_keys.reset();
    for zone in snap.zones.iter() {
        let name = zone.spec().name.as_str();
        m.rate_limit_keys
            .with_label_values(&[name])
            .set(i64::try_from(zone.keys()).unwrap_or(i64::MAX));
        // Each configured zone's refusals from 0, so that the first one is an increase.
        m.rate_limited.with_label_values(&[name]);
    }
    let (total, per_ip) = connections.refused();
    for (reason, n) in [("total", total), ("per_ip", per_ip)] {
        let counter = m.connections_refused.with_label_values(&[reason]);
        counter.inc_by(n.saturating_sub(counter.get()));
    }
    // Reset and refill: pools and servers removed by a reload disappear from the output.
    m.server_healthy.reset();
    m.server_available.reset();
    m.pool_weight.reset();
    m.pool_weight_overridden.reset();
    m.pool_window_requests.reset();
    m.pool_window_error_ratio.reset();
    m.pool_window_p50.reset();
    m.pool_window_p99.reset();
    m.maintenance.reset();
    for (i, svc) in snap.services.iter().enumerate() {
        let on = snap.maintenance.get(i).is_some_and(Option::is_some);
        m.rollout.present(&svc.name);
        m.maintenance
            .with_label_values(&[&*svc.name])
            .set(i64::from(on));
        let service_overrides = overrides.get(&*svc.name);
        for pool in &svc.pools {
            let labels = [&*svc.name, &*pool.name];
            m.pool_weight
                .with_label_values(&labels)
                .set(i64::from(pool.weight));
            let overridden = service_overrides.is_some_and(|o| o.contains_key(&*pool.name));
            m.pool_weight_overridden
                .with_label_values(&labels)
                .set(i64::from(overridden));
            let stats = pool.window.snapshot();
            m.pool_window_requests
                .with_label_values(&labels)
                .set(i64::try_from(stats.requests).unwrap_or(i64::MAX));
            m.pool_window_error_ratio
                .with_label_values(&labels)
                .set(stats.error_rate);
            for (gauge, value) in [
                (&m.pool_window_p50, stats.p50),
                (&m.pool_window_p99, stats.p99),
            ] {
                if let Some(v) = value {
                    gauge.with_label_values(&labels).set(v.as_secs_f64());
                }
            }
            for server in &pool.servers {
                let addr = server.addr.to_string();
                let labels = [&*svc.name, &*pool.name, addr.as_str()];
                m.server_healthy
                    .with_label_values(&labels)
                    .set(i64::from(server.state.is_healthy()));
                m.server_available
                    .with_label_values(&labels)
                    .set(i64::from(server.state.is_available()));
            }
        }
    }
    m.dns_addresses.reset();
    for (name, state) in snap.addresses.iter() {
        m.dns_addresses
            .with_label_values(&[&**name])
            .set(i64::try_from(state.addrs.len()).unwrap_or(i64::MAX));
    }
    m.cert_file_expiry.reset();
    for cert in &snap.config.certificates {
        let Some(leaf) = cert.key.expose().cert.first() else {
            continue;
        };
        if let Ok((_, x509)) = x509_parser::parse_x509_certificate(leaf) {
            let file = cert.cert_path.to_string_lossy();
            let name = cert.names.first().map_or("", String::as_str);
            m.cert_file_expiry
                .with_label_values(&[&file, name])
                .set(x509.validity().not_after.timestamp() as f64);
        }
    }
    m.rollout.refresh(&snap.book.rollouts);
    m.process.refresh();
    let families = m.registry.gather();
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        log::error!("cannot encode the metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests;
