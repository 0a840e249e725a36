//! One snapshot load per request, counted: a request that passes a rate-limit zone, is shielded off a failing canary and retried on the stable pool still reads the snapshot exactly once.
//!
//! Debug builds count every load of the snapshot swap (`switchyard_debug_snapshot_loads_total`
//! in `/metrics`). Nothing else loads it while the test runs: background services follow the
//! runtime's watch, a kept-alive connection is admitted once, and a scrape's own loads are
//! measured and subtracted.

mod support;

use std::io::Write;
use std::net::SocketAddr;

use support::*;

const CONFIG: &str = r#"
{server}
{http_listener}

[admin]
address = "127.0.0.1:{admin}"

[limits.zones.generous]
key = "client_ip"
rate = "100000r/m"
burst = 1000

[[routes]]
host = "*"
service = "api"
limits = ["generous"]

# Every request goes to the canary (one step at 100 %) and is never judged within the test.
[services.api.rollout]
steps = [100]
interval = "1h"
min_requests = 1000000
shield = true

[services.api.pools.blue]
weight = 100
servers = ["{blue}"]

[services.api.pools.green]
weight = 0
servers = ["{dead}"]
"#;

fn loads(admin: &Admin) -> u64 {
    let text = admin.get("/metrics").text;
    metric_value(&text, "switchyard_debug_snapshot_loads_total")
        .unwrap_or_else(|| panic!("no load counter in:\n{text}")) as u64
}

#[test]
fn a_limited_shielded_retried_request_loads_the_snapshot_once() {
    let blue = Backend::spawn("blue").expect("blue backend");
    let (http, admin_port) = (free_port(), free_port());
    let config = fill(
        CONFIG,
        &[
            ("http", &http),
            ("admin", &admin_port),
            ("blue", &blue.addr),
            ("dead", &closed_addr()),
        ],
    );
    let proxy = Proxy::start(&config);
    let admin = Admin::new(admin_port, None);
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
