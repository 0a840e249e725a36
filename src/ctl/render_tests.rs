//! Unit tests of `ctl`'s rendering, on answers decoded from JSON as the API sends them.

use serde_json::{json, Value};

use super::*;
use crate::api::{Certificates, ClusterView, Events, Services};
use crate::ctl::follow::outcome;

/// A JSON answer decoded into its view, as the client does.
fn decode<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid answer")
}

fn live(requests: u64, errors: u64, rate: f64, p50: Value, p99: Value) -> Value {
    json!({"window_seconds": 10.0, "requests": requests, "errors": errors,
        "error_rate": rate, "p50_ms": p50, "p99_ms": p99})
}

#[test]
fn status_table_marks_overrides() {
    let idle = live(0, 0, 0.0, Value::Null, Value::Null);
    let body: Services = decode(json!({"generation": 3, "services": [{
    "name": "demo", "generation": 3, "balance": "round_robin",
    "pools": [
        {"name": "blue", "weight": 50, "config_weight": 100, "overridden": true,
         "healthy_servers": 1, "servers": [{"address": "127.0.0.1:1", "available": true,
         "healthy": true, "ejected": false, "in_flight": 0, "weight": 1}], "live": idle},
        {"name": "green", "weight": 0, "config_weight": 0, "overridden": false,
         "healthy_servers": 0, "servers": [{"address": "127.0.0.1:2", "available": false,
         "healthy": true, "ejected": true, "in_flight": 0, "weight": 1}], "live": idle}
    ]}]}));
    let table = status_table(&body.services);
    let blue = table
        .lines()
        .find(|l| l.contains("blue"))
        .expect("blue row");
    assert!(
        blue.contains("(override)") && blue.contains("1/1"),
        "{table}"
    );
    let green = table
        .lines()
        .find(|l| l.contains("green"))
        .expect("green row");
    assert!(
        !green.contains("(override)") && green.contains("0/1"),
        "{table}"
    );
    assert!(table.contains("ejected"), "{table}");
    assert_eq!(
        weights_line(&body.services[0]),
        "service \"demo\": blue=50 green=0 (generation 3)"
    );
}

fn view(state: &str, step: u64, weight: u64, holding: Value) -> RolloutView {
    decode(
        json!({"id": 3, "service": "demo", "kind": "rollout", "canary": "green",
        "stable": "blue", "state": state, "step": step, "steps": [1, 5, 25, 50, 100],
        "canary_weight": weight, "interval_seconds": 30.0, "max_error_rate": 0.05,
        "max_p99_ms": null, "min_requests": 20, "shield": true,
        "started_at": "2026-11-23T03:00:00.123Z", "step_started_at": "2026-11-23T03:00:30.123Z",
        "finished_at": null, "reason": null, "holding": holding, "step_requests": 17,
        "canary_live": live(120, 3, 0.025, json!(1.2), json!(8.0)),
        "stable_live": live(900, 0, 0.0, json!(1.0), Value::Null),
        "generation": 42}),
    )
}

#[test]
fn progress_lines_change_with_state_step_weight_and_hold() {
    let a = view("progressing", 1, 5, json!("waiting for traffic"));
    let line = progress_line(&a);
    assert_eq!(
        line,
        "progressing  step 2/5  green 5%  holding: waiting for traffic (17 so far)  canary 120 req 2.5% err p99 8.0ms"
    );
    let text = "holding step 2 of 5 (5%) until the canary serves 20 requests in it";
    let own = view("progressing", 1, 5, json!(text));
    assert!(
        progress_line(&own).contains(&format!("  green 5%  {text} (17 so far)  canary")),
        "{}",
        progress_line(&own)
    );
    assert!(rollout_details(&own).contains("  holding   step 2 of 5 (5%) until the canary"));
    // The live counts change every poll; the line is printed again only on a real change.
    let mut same = own.clone();
    same.step_requests = 18;
    same.canary_live.requests = 121;
    assert_eq!(progress_key(&own), progress_key(&same));
    for changed in [
        view("paused", 1, 5, json!(text)),
        view("progressing", 2, 5, json!(text)),
        view("progressing", 1, 25, json!(text)),
        view("progressing", 1, 5, json!("another hold")),
        view("progressing", 1, 5, Value::Null),
    ] {
        assert_ne!(progress_key(&own), progress_key(&changed), "{changed:?}");
    }
    use crate::api::Phase;
    assert_eq!(outcome(Phase::Progressing), None);
    assert_eq!(outcome(Phase::Paused), None);
    assert_eq!(outcome(Phase::Promoted), Some(true));
    assert_eq!(outcome(Phase::RolledBack), Some(false));
    assert_eq!(outcome(Phase::Aborted), Some(false));
}

#[test]
fn rollout_details_and_events_read_well() {
    let mut v = view("rolled_back", 0, 0, Value::Null);
    v.reason = Some("error rate 0.21 above 0.05 (42 errors in 200 requests)".into());
    v.finished_at = Some("2026-11-23T03:00:31.000Z".into());
    let text = rollout_details(&v);
    assert!(
        text.starts_with(
            "rollout 3 of \"demo\": rolled back, green at 0% (step 1/5), stable \"blue\"\n"
        ),
        "{text}"
    );
    assert!(text.contains("[1] 5 25 50 100 (%), every 30.0s"), "{text}");
    assert!(
        text.contains("error rate at most 5.0%, at least 20 canary requests a step; shield on"),
        "{text}"
    );
    assert!(
        text.contains("blue: 900 requests, 0 errors (0.0%), p50 1.0ms, p99 - in the last 10.0s"),
        "{text}"
    );
    assert!(text.contains("finished 2026-11-23T03:00:31.000Z"), "{text}");
    assert!(text.contains("reason    error rate 0.21"), "{text}");
    let mut switch = v.clone();
    switch.kind = crate::api::Kind::Switch;
    switch.max_p99_ms = Some(250.0);
    assert!(rollout_name(&switch).starts_with("switch 3 of \"demo\""));
    assert!(
        rollout_details(&switch).contains("p99 at most 250.0ms"),
        "{}",
        rollout_details(&switch)
    );

    // A `started` event carries no figures yet: zeros and no p99, as the engine records it.
    let events: Events = decode(json!({"events": [
        {"time": 1795402800123_u64, "service": "demo", "rollout": 3, "event": "started",
         "step": 0, "canary_weight": 1, "requests": 0, "errors": 0, "error_rate": 0.0,
         "p99_ms": null, "message": "green from 0% to 1%"},
        {"time": 1795402802500_u64, "service": "demo", "rollout": 3, "event": "rolled_back",
         "step": 0, "canary_weight": 1, "requests": 40, "errors": 9, "error_rate": 0.225,
         "p99_ms": 3.5, "message": "error rate 0.23 above 0.05", "reason": "error_rate"}
    ]}));
    let table = events_table(&events.events);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("TIME"), "{table}");
    let cols: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &cols[..9],
        [
            "2026-11-23T03:00:02.500Z",
            "3",
            "rolled_back",
            "1",
            "1%",
            "40",
            "9",
            "22.5%",
            "3.5ms"
        ],
        "{table}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cols[..9],
        [
            "2026-11-23T03:00:00.123Z",
            "3",
            "started",
            "1",
            "1%",
            "0",
            "0",
            "0.0%",
            "-"
        ],
        "{table}"
    );
}

#[test]
fn certs_table_lists_each_certificate() {
    let body: Certificates = decode(json!({"certificates": [{
        "id": "a.example", "names": ["a.example", "b.example"], "status": "failing",
        "challenge": "http-01", "issuer": "CN=x", "serial": null, "not_before": null,
        "not_after": "2030-01-01T00:00:00Z", "not_after_unix": 1893456000_u64,
        "next_attempt": null, "next_attempt_unix": null, "failures": 2, "last_error": "boom",
        "orders": 3, "stored_at": "/var/lib/switchyard/acme/a.example"
    }]}));
    let t = certs_table(&body.certificates);
    assert!(t.contains("a.example,b.example"), "{t}");
    assert!(t.contains("failing"), "{t}");
    assert!(t.contains("2 failure(s) in a row): boom"), "{t}");
    let row = t.lines().nth(1).expect("a row");
    assert!(row.contains(" - "), "no next order shows as -: {row}");
}

#[test]
fn cluster_table_shows_the_fleet_and_flags_drift() {
    let view: ClusterView = decode(json!({
        "node": "b", "prefix": "/sy/prod", "state": "degraded",
        "reason": "etcd watch: the stream ended", "leader": "a", "leader_here": false,
        "etcd": {"endpoints": ["http://10.0.0.5:2379"], "reachable": false, "revision": 42},
        "redis": {"address": "redis://10.0.0.8:6379", "state": "down", "reason": "timed out",
                  "timeout_ms": 5, "fallbacks": {"login": 7, "api": 0}},
        "nodes": [
            {"node": "a", "generation": 3, "config_hash": "aaaa", "matches_leader": true,
             "admin": "10.0.0.1:9900", "version": "0.1.0", "started_at": 1},
            {"node": "b", "generation": 2, "config_hash": "bbbb", "matches_leader": false,
             "admin": null, "version": "0.1.0", "started_at": 2}
        ],
        "ignored": {"api": "this node's service has no pool \"canary\""}
    }));
    let t = cluster_table(&view);
    assert!(
        t.starts_with(
            "node \"b\" in fleet /sy/prod: degraded (etcd watch: the stream ended)\nleader: \"a\"\n"
        ),
        "{t}"
    );
    assert!(
        t.contains("etcd: http://10.0.0.5:2379 (unreachable, revision 42)"),
        "{t}"
    );
    assert!(
        t.contains("redis: redis://10.0.0.8:6379 (down, timeout 5 ms): timed out"),
        "{t}"
    );
    assert!(
        t.contains("zone \"login\": 7 request(s) decided by the local fallback"),
        "{t}"
    );
    assert!(!t.contains("zone \"api\""), "{t}");
    let row = |n: &str| {
        t.lines()
            .find(|l| l.starts_with(n))
            .expect("a row")
            .to_string()
    };
    assert!(row("a ").contains(" yes "), "{t}");
    assert!(row("b ").contains(" NO "), "{t}");
    assert!(
        t.contains("service \"api\": this node's service has no pool \"canary\""),
        "{t}"
    );
}
