//! One snapshot load per request, counted: a request that passes a rate-limit zone, is shielded off a failing canary and retried on the stable pool still reads the snapshot exactly once.
//!
//! Debug builds count every load of the snapshot swap (`switchyard_debug_snapshot_loads_total`
//! in `/metrics`). Nothing else loads it while the test runs: background services follow the
//! runtime's watch, a kept-alive connection is admitted once, and a scrape's own loads are
//! measured and subtracted.

use std::io::Write;
use std::net::SocketAddr;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// A generous zone, and a rollout sending every request to the canary (one step at 100 %),
/// which is never judged within the test.
const ZONE_AND_ROLLOUT: &str = r#"
[limits.zones.generous]
key = "client_ip"
rate = "100000r/m"
burst = 1000

[services.api.rollout]
steps = [100]
interval = "1h"
min_requests = 1000000
shield = true
"#;

fn loads(admin: &Admin) -> u64 {
    let text = admin.get("/metrics").text;
    metric_value(&text, "switchyard_debug_snapshot_loads_total")
        .unwrap_or_else(|| panic!("no load counter in:\n{text}")) as u64
}

#[test]
fn a_limited_shielded_retried_request_loads_the_snapshot_once() {
    // Every host to service "api" through the zone; its canary green is a dead server.
    let w = World::new()
        .admin()
        .backend("blue")
        .dead("dead")
        .route_with(Route::new("*", "api").set("limits", vec!["generous"]))
        .toml(ZONE_AND_ROLLOUT)
        .pool("api", "blue", 100, &["blue"])
        .pool("api", "green", 0, &["dead"])
        .start(BIN);
    let (http, proxy, admin) = (w.http(), &w.proxy, w.admin());
    let started = admin.send(
        "POST",
        "/v1/services/api/rollouts",
        Some(r#"{"canary": "green"}"#),
        &[],
    );
    assert_eq!(started.status, 201, "{}", started.text);

    let addr: SocketAddr = ([127, 0, 0, 1], http).into();
    let mut conn = connect(addr);
    let mut get = || {
        conn.write_all(b"GET /echo HTTP/1.1\r\nHost: api.test\r\n\r\n")
            .expect("write");
        let resp = read_response(&mut conn);
        assert_eq!(
            resp.status,
            200,
            "shielded onto blue: {}",
            String::from_utf8_lossy(&resp.body)
        );
    };
    // The connection's first request also pays its admission and first-head setup.
    get();

    let scrape = loads(&admin);
    let per_scrape = loads(&admin) - scrape;
    let before = loads(&admin);
    const REQUESTS: u64 = 5;
    for _ in 0..REQUESTS {
        get();
    }
    let after = loads(&admin);
    assert_eq!(
        after - before - per_scrape,
        REQUESTS,
        "snapshot loads for {REQUESTS} requests (a scrape costs {per_scrape})\n{}",
        proxy.stderr()
    );

    // The requests really were limited, shielded and retried.
    let text = admin.get("/metrics").text;
    let shielded = metric(
        &text,
        "switchyard_rollout_shielded_requests_total",
        &[("service", "api"), ("canary", "green")],
    );
    assert_eq!(shielded, Some((REQUESTS + 1) as f64), "{text}");
    assert!(
        metric_sum(
            &text,
            "switchyard_upstream_connect_errors_total",
            &[("pool", "green")]
        ) >= (REQUESTS + 1) as f64,
        "{text}"
    );
    let keys = metric(&text, "switchyard_rate_limit_keys", &[("zone", "generous")]);
    assert_eq!(keys, Some(1.0), "the zone counted the client: {text}");
}
