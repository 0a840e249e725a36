//! Upstream health over real sockets: active checks take a failing server out and bring it back,
//! passive checks eject a server that refuses connections, and a whole pool down fails over to
//! another weighted pool or answers 503 at once.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::collections::HashMap;
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// An active check every 100 ms on service "api" (every host), with the admin API.
const ACTIVE: &str = r#"
[services.api.health]
path = "/health"
interval = "100ms"
timeout = "200ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// Which backend answered each of `n` requests; every request must succeed.
fn spread(http: u16, n: usize) -> HashMap<String, usize> {
    let client = http1_client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let resp = client
            .get(format!("http://app.test:{http}/"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        *seen
            .entry(json_body(resp)["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

fn server_available(admin: &Admin, server: std::net::SocketAddr) -> Option<bool> {
    let svc = admin.get("/v1/services/api").json;
    svc["pools"]
        .as_array()?
        .iter()
        .filter_map(|p| p["servers"].as_array())
        .flatten()
        .find(|s| s["address"] == server.to_string())
        .map(|s| s["available"] == true)
}

#[test]
fn active_checks_take_a_dead_server_out_and_bring_it_back() {
    // b is the test's own: it is stopped and started again.
    let b = Backend::spawn("b").unwrap();
    let b_addr = b.addr;
    let w = World::new()
        .admin()
        .backend("a")
        .address("b", b_addr)
        .route("*", "api")
        .toml(ACTIVE)
        .pool("api", "blue", 1, &["a", "b"])
        .start(BIN);
    let (http, admin) = (w.http(), w.admin());
    let both = spread(http, 40);
    assert!(both.contains_key("a") && both.contains_key("b"), "{both:?}");

    b.stop();
    let out = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || server_available(&admin, b_addr)
            == Some(false)),
        "the stopped server was not marked unhealthy"
    );
    assert!(
        out.elapsed() < Duration::from_secs(2),
        "took {:?}",
        out.elapsed()
    );
    // Out of rotation: every request goes to a, none fails.
    assert_eq!(spread(http, 30), HashMap::from([("a".to_string(), 30)]));
    let metrics = admin.get("/metrics").text;
    let line =
        format!("switchyard_server_healthy{{pool=\"blue\",server=\"{b_addr}\",service=\"api\"}} 0");
    assert!(metrics.contains(&line), "{line} not in metrics");

    let _b_again = Backend::spawn_on(b_addr, "b").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || server_available(&admin, b_addr)
            == Some(true)),
        "the restarted server did not come back"
    );
    let back = spread(http, 40);
    assert!(back.get("b").copied().unwrap_or(0) > 0, "{back:?}");
}

#[test]
fn passive_ejection_retries_elsewhere_and_never_takes_out_the_last_server() {
    let w = World::new()
        .backend("a")
        .dead("closed")
        .dead("closed2")
        .route("*", "api")
        .route("down.test", "down")
        .passive("api", 2, "1s")
        .pool("api", "blue", 1, &["a", "closed"])
        .pool("down", "only", 1, &["closed2"])
        .pool("down", "spare", 0, &["a"])
        .start(BIN);
    let (http, proxy, a) = (w.http(), &w.proxy, w.backend("a"));
    // Connect failures are retried on the other server: no client sees them.
    assert_eq!(spread(http, 20), HashMap::from([("a".to_string(), 20)]));
    assert!(
        proxy.wait_for_log("ejecting 127.0.0.1:", Duration::from_secs(3)),
        "no ejection logged:\n{}",
        proxy.stderr()
    );

    // A pool whose only server is down, with the other pool at weight 0: an answer without
    // waiting (502: the connect is refused), and the weight-0 pool gets nothing. Passive checks
    // never eject that server, the last one able to take the traffic: it is still tried (nginx
    // does the same), so it takes traffic again the moment it is back.
    let before = a.requests();
    let client = http1_client();
    for _ in 0..4 {
        let started = Instant::now();
        let resp = client
            .get(format!("http://down.test:{http}/"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert_proxy_error(&json_body(resp), 502);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert!(
        proxy.wait_for_log(
            "of service \"down\" after 3 failed connects: no other server can take its traffic",
            Duration::from_secs(3)
        ),
        "no refusal to eject the last server logged:\n{}",
        proxy.stderr()
    );
    assert_eq!(a.requests(), before, "a weight-0 pool is never a fallback");
}

/// An active check every 100 ms that takes a server out at its first failure.
const FAILOVER: &str = r#"
[services.api.health]
path = "/"
interval = "100ms"
timeout = "200ms"
unhealthy_threshold = 1
"#;

#[test]
fn a_pool_that_is_down_hands_its_share_to_the_other_weighted_pool() {
    // green is the test's own: it is stopped.
    let green = Backend::spawn("green").unwrap();
    let green_addr = green.addr;
    let w = World::new()
        .admin()
        .backend("blue")
        .address("green", green_addr)
        .route("*", "api")
        .toml(FAILOVER)
        .pool("api", "blue", 50, &["blue"])
        .pool("api", "green", 50, &["green"])
        .start(BIN);
    let http = w.http();
    let both = spread(http, 40);
    assert!(both.len() == 2, "{both:?}");
    green.stop();
    assert!(
        wait_until(Duration::from_secs(5), || server_available(
            &w.admin(),
            green_addr
        ) == Some(false)),
        "the stopped pool's server was not taken out"
    );
    assert_eq!(spread(http, 30), HashMap::from([("blue".to_string(), 30)]));
}

/// The service's check passes; green's own check fails (the backend answers 503 there): it wins
/// over the service's.
const PER_POOL: &str = r#"
[services.api.health]
path = "/status/200"
interval = "100ms"
unhealthy_threshold = 1

[services.api.pools.green.health]
path = "/status/503"
interval = "100ms"
unhealthy_threshold = 1
"#;

#[test]
fn a_pool_check_overrides_the_service_check() {
    let w = World::new()
        .admin()
        .backend("blue")
        .backend("green")
        .route("*", "api")
        .pool("api", "blue", 50, &["blue"])
        .pool("api", "green", 50, &["green"])
        .toml(PER_POOL)
        .start(BIN);
    let (http, admin) = (w.http(), w.admin());
    let (blue, green) = (w.backend("blue"), w.backend("green"));
    assert!(
        wait_until(Duration::from_secs(5), || server_available(
            &admin, green.addr
        ) == Some(false)),
        "green's own failing check did not take it out"
    );
    assert_eq!(server_available(&admin, blue.addr), Some(true));
    let config = admin.get("/v1/config").json;
    assert_eq!(
        config["services"][0]["pools"][1]["health"]["path"],
        "/status/503"
    );
    assert_eq!(spread(http, 20), HashMap::from([("blue".to_string(), 20)]));
}
