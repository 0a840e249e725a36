//! What `ctl` prints: the human views of services, rollouts, events and certificates, from the typed answers of `api`.

use std::time::Duration;

use crate::api::{
    CertStatus, ClusterView, Event, Kind, LiveView, MaintenanceView, RolloutView, ServiceView,
};

/// A float as the API's JSON writes it (`30.0`, `0.25`), so the text matches `--json`.
fn num(v: f64) -> String {
    serde_json::Value::from(v).to_string()
}

/// `service "api": blue=90 green=10 (generation 7)`
pub fn weights_line(view: &ServiceView) -> String {
    let pools: Vec<String> = view
        .pools
        .iter()
        .map(|p| format!("{}={}", p.name, p.weight))
        .collect();
    format!(
        "service \"{}\": {} (generation {})",
        view.name,
        pools.join(" "),
        view.generation
    )
}

/// The human view of `GET /v1/services` or `GET /v1/services/{s}`.
pub fn status_table(services: &[ServiceView]) -> String {
    let mut out = String::new();
    for (i, svc) in services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "service \"{}\"  generation {}  balance {}\n",
            svc.name, svc.generation, svc.balance
        ));
        if let Some(m) = &svc.maintenance {
            out.push_str(&format!("  {}\n", maintenance_line(m)));
        }
        if let Some(r) = &svc.rollout {
            out.push_str(&format!(
                "  {} {}: {}\n",
                kind_label(r).to_uppercase(),
                r.id,
                rollout_line(r)
            ));
        }
        out.push_str(&format!(
            "  {:<16} {:>7} {:>7} {:>8}\n",
            "POOL", "WEIGHT", "CONFIG", "HEALTHY"
        ));
        for pool in &svc.pools {
            out.push_str(&format!(
                "  {:<16} {:>7} {:>7} {:>8}{}\n",
                pool.name,
                pool.weight.to_string(),
                pool.config_weight.to_string(),
                format!("{}/{}", pool.healthy_servers, pool.servers.len()),
                if pool.overridden { "  (override)" } else { "" }
            ));
            for s in &pool.servers {
                let health = if s.available {
                    "up"
                } else if s.ejected {
                    "ejected (passive check)"
                } else {
                    "down (health check)"
                };
                let backup = if s.backup { "  (backup)" } else { "" };
                out.push_str(&format!(
                    "    {:<24} {:<24} in flight {}{backup}\n",
                    s.address, health, s.in_flight
                ));
            }
            for n in &pool.names {
                let addresses = if n.addresses.is_empty() {
                    "no address".to_string()
                } else {
                    n.addresses.join(", ")
                };
                let error = n
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  (last lookup failed: {e})"));
                out.push_str(&format!("    {} → {addresses}{error}\n", n.name));
            }
        }
    }
    out
}

/// `MAINTENANCE since ...: 503 with Retry-After 300s; let through: 10.0.0.0/8, /health, /healthz`
pub fn maintenance_line(m: &MaintenanceView) -> String {
    let through: Vec<&str> = m
        .allow
        .iter()
        .chain(&m.exempt)
        .map(String::as_str)
        .collect();
    let page = match (m.page_bytes, m.json_bytes) {
        (Some(h), Some(j)) => format!(", page {h} bytes HTML + {j} bytes JSON"),
        (Some(h), None) => format!(", page {h} bytes HTML"),
        (None, Some(j)) => format!(", page {j} bytes JSON"),
        (None, None) => String::new(),
    };
    format!(
        "MAINTENANCE since {}: 503 with Retry-After {}s{page}; let through: {}",
        m.since,
        m.retry_after_seconds,
        if through.is_empty() {
            "health check paths only".to_string()
        } else {
            through.join(", ")
        }
    )
}

/// What makes a progress line worth printing again when piped.
pub fn progress_key(view: &RolloutView) -> String {
    format!(
        "{}|{}|{}|{:?}",
        view.state.as_str(),
        view.step,
        view.canary_weight,
        view.holding
    )
}

/// `progressing  step 2/5  green 5%  17 requests this step  canary 120 req 2.5% err p99 8.0ms`,
/// with `holding …` before the step's requests while the step holds. (The hold text stays the
/// same while the step holds, so a piped --wait prints a line when the hold starts, not per
/// request.)
pub fn progress_line(view: &RolloutView) -> String {
    let live = &view.canary_live;
    let step = match &view.holding {
        Some(holding) => format!("{} ({} so far)", hold_text(holding), view.step_requests),
        None => format!("{} requests this step", view.step_requests),
    };
    format!(
        "{}  step {}  {} {}%  {step}  canary {} req {} err p99 {}",
        state_label(view),
        step_of(view),
        view.canary,
        view.canary_weight,
        live.requests,
        percent(live.error_rate),
        millis(live.p99_ms),
    )
}

/// The API's hold text, starting with "holding" (it may say so itself).
fn hold_text(holding: &str) -> String {
    if holding.starts_with("holding") {
        holding.to_string()
    } else {
        format!("holding: {holding}")
    }
}

/// `rollout 3 of "demo"` (or `switch 3 of "demo"` for a watched switch).
pub fn rollout_name(view: &RolloutView) -> String {
    format!("{} {} of \"{}\"", kind_label(view), view.id, view.service)
}

/// `rollout`, or `switch` for a watched switch.
fn kind_label(view: &RolloutView) -> &'static str {
    match view.kind {
        Kind::Rollout => "rollout",
        Kind::Switch => "switch",
    }
}

/// `rolled back`, `progressing`, …
pub fn state_label(view: &RolloutView) -> String {
    view.state.as_str().replace('_', " ")
}

/// `2/5`: the 1-based step out of all.
fn step_of(view: &RolloutView) -> String {
    format!("{}/{}", view.step + 1, view.steps.len())
}

/// `progressing, green at 5% (step 2/5), stable blue`
pub fn rollout_line(view: &RolloutView) -> String {
    format!(
        "{}, {} at {}% (step {}), stable \"{}\"",
        state_label(view),
        view.canary,
        view.canary_weight,
        step_of(view),
        view.stable,
    )
}

/// A ratio as a percentage (`2.5%`).
fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Milliseconds (`8.0ms`), `-` when absent.
fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}ms"))
}

/// `120 requests, 3 errors (2.5%), p50 1.2ms, p99 8.0ms in the last 10s`
fn live_line(live: &LiveView) -> String {
    format!(
        "{} requests, {} errors ({}), p50 {}, p99 {} in the last {}s",
        live.requests,
        live.errors,
        percent(live.error_rate),
        millis(live.p50_ms),
        millis(live.p99_ms),
        num(live.window_seconds),
    )
}

/// The human view of a rollout, for `rollout status`.
pub fn rollout_details(view: &RolloutView) -> String {
    let steps: Vec<String> = view
        .steps
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == view.step {
                format!("[{w}]")
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut gates = vec![format!(
        "error rate at most {}",
        percent(view.max_error_rate)
    )];
    if view.max_p99_ms.is_some() {
        gates.push(format!("p99 at most {}", millis(view.max_p99_ms)));
    }
    gates.push(format!(
        "at least {} canary requests a step",
        view.min_requests
    ));
    let shield = if view.shield { "on" } else { "off" };
    let mut out = format!("{}: {}\n", rollout_name(view), rollout_line(view));
    let mut row = |name: &str, value: String| out.push_str(&format!("  {name:<9} {value}\n"));
    row(
        "steps",
        format!(
            "{} (%), every {}s; this step since {}, {} canary requests",
            steps.join(" "),
            num(view.interval_seconds),
            view.step_started_at,
            view.step_requests,
        ),
    );
    row("gates", format!("{}; shield {shield}", gates.join(", ")));
    if let Some(holding) = &view.holding {
        row(
            "holding",
            holding.trim_start_matches("holding ").to_string(),
        );
    }
    row(
        "canary",
        format!("{}: {}", view.canary, live_line(&view.canary_live)),
    );
    row(
        "stable",
        format!("{}: {}", view.stable, live_line(&view.stable_live)),
    );
    let finished = match &view.finished_at {
        Some(at) => format!(", finished {at}"),
        None => String::new(),
    };
    row("started", format!("{}{finished}", view.started_at));
    if let Some(reason) = &view.reason {
        row("reason", reason.clone());
    }
    out
}

/// An event's time (Unix milliseconds) in RFC 3339.
fn event_time(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}

/// The human view of `GET …/rollouts/current/events`.
pub fn events_table(events: &[Event]) -> String {
    let mut out = format!(
        "{:<24}  {:<8} {:<11} {:>4} {:>6} {:>8} {:>6} {:>7} {:>9}  {}\n",
        "TIME",
        "ROLLOUT",
        "EVENT",
        "STEP",
        "WEIGHT",
        "REQUESTS",
        "ERRORS",
        "ERROR%",
        "P99",
        "MESSAGE"
    );
    for e in events {
        out.push_str(&format!(
            "{:<24}  {:<8} {:<11} {:>4} {:>6} {:>8} {:>6} {:>7} {:>9}  {}\n",
            event_time(e.time),
            e.rollout,
            e.event,
            e.step + 1,
            format!("{}%", e.canary_weight),
            e.requests,
            e.errors,
            percent(e.error_rate),
            millis(e.p99_ms),
            e.message,
        ));
    }
    out
}

/// The human view of `GET /v1/certs`.
pub fn certs_table(certs: &[CertStatus]) -> String {
    let mut out = format!(
        "{:<28} {:<9} {:<12} {:<21} {:<21} {}\n",
        "NAMES", "STATUS", "CHALLENGE", "EXPIRES", "NEXT ORDER", "ISSUER"
    );
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    for c in certs {
        out.push_str(&format!(
            "{:<28} {:<9} {:<12} {:<21} {:<21} {}\n",
            c.names.join(","),
            c.status.as_str(),
            c.challenge,
            text(&c.not_after),
            text(&c.next_attempt),
            text(&c.issuer),
        ));
        if let Some(e) = &c.last_error {
            out.push_str(&format!(
                "  last error ({} failure(s) in a row): {e}\n",
                c.failures
            ));
        }
    }
    out
}

/// The human view of `GET /v1/cluster`.
pub fn cluster_table(c: &ClusterView) -> String {
    let mut out = format!("node \"{}\" in fleet {}: {}", c.node, c.prefix, c.state);
    if let Some(reason) = &c.reason {
        out.push_str(&format!(" ({reason})"));
    }
    out.push('\n');
    let leader = match (&c.leader, c.leader_here) {
        (_, true) => "this node".to_string(),
        (Some(l), false) => format!("\"{l}\""),
        (None, false) => "none".to_string(),
    };
    out.push_str(&format!("leader: {leader}\n"));
    out.push_str(&format!(
        "etcd: {} ({}, revision {})\n",
        c.etcd.endpoints.join(", "),
        if c.etcd.reachable && c.state == "ok" {
            "reachable"
        } else {
            "unreachable"
        },
        c.etcd.revision
    ));
    if let Some(r) = &c.redis {
        out.push_str(&format!(
            "redis: {} ({}, timeout {} ms)",
            r.address, r.state, r.timeout_ms
        ));
        if let Some(reason) = &r.reason {
            out.push_str(&format!(": {reason}"));
        }
        out.push('\n');
        for (zone, n) in r.fallbacks.iter().filter(|(_, n)| **n > 0) {
            out.push_str(&format!(
                "  zone \"{zone}\": {n} request(s) decided by the local fallback\n"
            ));
        }
    }
    out.push_str(&format!(
        "\n{:<20} {:<10} {:<18} {:<8} {:<22} {}\n",
        "NODE", "GENERATION", "CONFIG", "MATCHES", "ADMIN", "VERSION"
    ));
    for n in &c.nodes {
        let matches = match n.matches_leader {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        out.push_str(&format!(
            "{:<20} {:<10} {:<18} {:<8} {:<22} {}\n",
            n.node,
            n.generation,
            n.config_hash,
            matches,
            n.admin.as_deref().unwrap_or("-"),
            n.version
        ));
    }
    if !c.ignored.is_empty() {
        out.push_str("\nfleet entries ignored on this node:\n");
        for (service, why) in &c.ignored {
            out.push_str(&format!("  service \"{service}\": {why}\n"));
        }
    }
    out
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
