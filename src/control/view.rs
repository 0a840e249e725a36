//! What the admin API shows of services and rollouts, read from one snapshot (the one a change published, for its answer).

use std::time::Duration;

use super::{find, ControlError};
use crate::api::{
    LiveView, MaintenanceView, NameView, PoolView, RolloutView, ServerView, ServiceView,
};
use crate::config::{Balance, ServerAddress, ServerConfig};
use crate::rollout::{Event, Rollout};
use crate::snapshot::Snapshot;
use crate::upstream::Service;

impl LiveView {
    fn new(snap: &Snapshot, service: &str, pool: &str) -> LiveView {
        let stats = snap.pool(service, pool).map(|p| p.window.snapshot());
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        LiveView {
            window_seconds: stats.map_or(0.0, |s| s.window.as_secs_f64()),
            requests: stats.map_or(0, |s| s.requests),
            errors: stats.map_or(0, |s| s.errors),
            error_rate: stats.map_or(0.0, |s| s.error_rate),
            p50_ms: stats.and_then(|s| ms(s.p50)),
            p99_ms: stats.and_then(|s| ms(s.p99)),
        }
    }
}

fn balance_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
    }
}

fn view(snap: &Snapshot, service: &Service) -> ServiceView {
    let overrides = snap.book.overrides.get(&*service.name);
    let config = snap
        .config
        .services
        .iter()
        .find(|s| *s.name == *service.name);
    let pools = service
        .pools
        .iter()
        .map(|p| {
            let pool_config = config.and_then(|c| c.pools.iter().find(|cp| *cp.name == *p.name));
            let config_weight = pool_config.map_or(p.weight, |cp| cp.weight);
            let names = pool_config.map_or_else(Vec::new, |cp| names(snap, &cp.servers));
            let servers: Vec<ServerView> = p
                .servers
                .iter()
                .map(|s| ServerView {
                    address: s.addr.to_string(),
                    name: s.named.then(|| s.host.to_string()),
                    weight: s.weight,
                    backup: s.backup,
                    healthy: s.state.is_healthy(),
                    ejected: s.state.is_ejected(),
                    available: s.state.is_available(),
                    in_flight: s.state.active.load(std::sync::atomic::Ordering::Relaxed),
                })
                .collect();
            PoolView {
                name: p.name.to_string(),
                weight: p.weight,
                config_weight,
                overridden: overrides.is_some_and(|o| o.contains_key(&*p.name)),
                healthy_servers: servers.iter().filter(|s| s.available).count(),
                servers,
                names,
                live: LiveView::new(snap, &service.name, &p.name),
            }
        })
        .collect();
    ServiceView {
        name: service.name.to_string(),
        generation: snap.etag(&service.name),
        balance: balance_name(service.balance).to_string(),
        pools,
        maintenance: snap
            .book
            .maintenance
            .get(&*service.name)
            .map(|m| MaintenanceView {
                since: rfc3339(m.since),
                retry_after_seconds: m.retry_after,
                allow: m.allow.clone(),
                exempt: m.exempt.clone(),
                page_bytes: m.page.as_ref().map(String::len),
                json_bytes: m.json.as_ref().map(String::len),
            }),
        rollout: snap
            .book
            .rollouts
            .active(&service.name)
            .map(|r| rollout_of(snap, r)),
    }
}

/// The named servers of a pool's config and what each resolves to in `snap`.
fn names(snap: &Snapshot, servers: &[ServerConfig]) -> Vec<NameView> {
    servers
        .iter()
        .filter_map(|s| match &s.address {
            ServerAddress::Ip(_) => None,
            ServerAddress::Name { host, port } => {
                let state = snap.addresses.get(host);
                Some(NameView {
                    name: s.address.to_string(),
                    addresses: snap
                        .addresses
                        .of(host)
                        .iter()
                        .map(|ip| std::net::SocketAddr::new(*ip, *port).to_string())
                        .collect(),
                    resolved_at: state
                        .and_then(|st| st.resolved_at)
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    error: state.and_then(|st| st.error.clone()),
                })
            }
        })
        .collect()
}

/// Every service of `snap` as the admin API shows it.
pub fn services(snap: &Snapshot) -> Vec<ServiceView> {
    snap.services.iter().map(|s| view(snap, s)).collect()
}

/// Service `name` of `snap` as the admin API shows it.
pub fn service(snap: &Snapshot, name: &str) -> Result<ServiceView, ControlError> {
    Ok(view(snap, find(snap, name)?))
}

fn rfc3339(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Rollout `r` as the admin API shows it, with the live windows of `snap`.
pub fn rollout_of(snap: &Snapshot, r: &Rollout) -> RolloutView {
    let total = snap
        .pool(&r.service, &r.canary)
        .map_or(0, |p| p.window.total_requests());
    RolloutView {
        id: r.id,
        service: r.service.clone(),
        kind: r.kind,
        canary: r.canary.clone(),
        stable: r.stable.clone(),
        state: r.state,
        step: r.step,
        steps: r.steps.clone(),
        canary_weight: r.canary_weight(),
        interval_seconds: r.interval().as_secs_f64(),
        max_error_rate: r.max_error_rate,
        max_p99_ms: r.max_p99_ms.map(|ms| ms as f64),
        min_requests: r.min_requests,
        shield: r.shield,
        started_at: rfc3339(r.started_at),
        step_started_at: rfc3339(r.step_started_at),
        finished_at: r.finished_at.map(rfc3339),
        reason: r.reason.clone(),
        holding: r.holding.clone(),
        step_requests: if r.state.is_active() {
            r.step_requests(total)
        } else {
            0
        },
        canary_live: LiveView::new(snap, &r.service, &r.canary),
        stable_live: LiveView::new(snap, &r.service, &r.stable),
        generation: snap.etag(&r.service),
    }
}

/// The service's active or latest rollout.
pub fn rollout_view(snap: &Snapshot, service: &str) -> Result<RolloutView, ControlError> {
    find(snap, service)?;
    let history = snap.book.rollouts.services.get(service);
    let r = history
        .and_then(|h| h.current.as_ref())
        .ok_or_else(|| ControlError::NoRollout(service.into()))?;
    Ok(rollout_of(snap, r))
}

/// The service's recent rollout events, oldest first.
pub fn rollout_events(snap: &Snapshot, service: &str) -> Result<Vec<Event>, ControlError> {
    find(snap, service)?;
    let history = snap.book.rollouts.services.get(service);
    Ok(history
        .map(|h| h.events.iter().cloned().collect())
        .unwrap_or_default())
}

/// The service's requests per pool over the last minutes, from the runtime's traffic history.
pub fn traffic(
    snap: &Snapshot,
    history: &crate::runtime::TrafficHistory,
    service: &str,
) -> Result<crate::api::Traffic, ControlError> {
    find(snap, service)?;
    Ok(history.view(service))
}

/// The certificates of `[[certificates]]` in `snap`'s config, with the validity of each leaf.
pub fn file_certificates(snap: &Snapshot) -> Vec<crate::api::FileCert> {
    let rfc3339 = |unix: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix))
            .to_string()
    };
    snap.config
        .certificates
        .iter()
        .map(|c| {
            let leaf = c.key.expose().cert.first();
            let parsed = leaf.and_then(|l| x509_parser::parse_x509_certificate(l).ok());
            let validity = parsed.as_ref().map(|(_, x)| {
                let unix =
                    |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
                (unix(x.validity().not_before), unix(x.validity().not_after))
            });
            crate::api::FileCert {
                file: c.cert_path.display().to_string(),
                names: c.names.clone(),
                fallback: c.fallback,
                issuer: parsed.as_ref().map(|(_, x)| x.issuer().to_string()),
                not_before: validity.map(|(from, _)| rfc3339(from)),
                not_after: validity.map(|(_, until)| rfc3339(until)),
                not_after_unix: validity.map(|(_, until)| until),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Runtime, TEST_CONFIG};

    #[test]
    fn file_certificates_show_their_validity() {
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");
        let text = format!(
            r#"{TEST_CONFIG}
[[certificates]]
cert = "{certs}/example.com.crt"
key = "{certs}/example.com.key"
fallback = true
"#
        );
        let rt = Runtime::for_tests(&text);
        let files = file_certificates(&rt.snapshot());
        assert_eq!(files.len(), 1);
        let f = &files[0];
        assert!(f.file.ends_with("certs/example.com.crt"), "{}", f.file);
        assert_eq!(f.names, ["example.com", "*.example.com"]);
        assert!(f.fallback);
        assert!(f
            .issuer
            .as_deref()
            .unwrap_or_default()
            .contains("Switchyard Test CA"));
        // Ten years from when the test certificates were made.
        let (from, until) = (f.not_before.as_deref(), f.not_after_unix.unwrap_or(0));
        assert!(from.is_some_and(|t| t.ends_with('Z')), "{from:?}");
        assert!(until > crate::book::unix_ms() / 1000, "{until}");
        assert!(f.not_after.as_deref().is_some_and(|t| t.ends_with('Z')));
    }
}
