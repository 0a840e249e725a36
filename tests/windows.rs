//! Live windows over real sockets: each pool's requests, errors and latency, as the admin API and
//! `/metrics` show them, and kept across a weight change (a new snapshot).

use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

const TOKEN: &str = "test-token-0123456789";

fn live<'a>(reply: &'a AdminReply, pool: &str) -> &'a serde_json::Value {
    &reply.pool(pool)["live"]
}

/// The service's view once its pools' windows hold `want` requests in all: a request is recorded
/// in `logging`, just after its response reached the client.
fn settled(admin: &Admin, service: &str, want: f64) -> AdminReply {
    let total = |r: &AdminReply| -> f64 {
        r.json["pools"].as_array().map_or(0.0, |pools| {
            pools.iter().map(|p| num(&p["live"], "requests")).sum()
        })
    };
    let path = format!("/v1/services/{service}");
    let mut reply = admin.get(&path);
    let done = wait_until(Duration::from_secs(5), || {
        reply = admin.get(&path);
        total(&reply) >= want
    });
    assert!(
        done,
        "expected {want} requests in the windows: {}",
        reply.text
    );
    reply
}

fn num(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}

#[test]
fn pools_show_their_live_error_rate_and_latency() {
    // Service "app" splits between a healthy pool and one failing half of its requests; service
    // "slow" has one pool behind a backend asked to wait.
    let bad = Backend::builder("bad")
        .fail_ratio(0.5)
        .spawn()
        .expect("backend");
    let w = World::new()
        .backend("good")
        .with_backend("bad", bad)
        .backend("slow")
        .route("slow.test", "slow")
        .route("*", "app")
        .pool("app", "good", 1, &["good"])
        .pool("app", "bad", 1, &["bad"])
        .pool("slow", "main", 1, &["slow"])
        .admin_token(TOKEN)
        .start(BIN);
    let (http, admin) = (w.http(), w.admin());
    let before = admin.get("/v1/services/app");
    assert_eq!(before.status, 200, "{}", before.text);
    let idle = live(&before, "bad");
    assert_eq!(num(idle, "window_seconds"), 10.0);
    assert_eq!((num(idle, "requests"), num(idle, "errors")), (0.0, 0.0));
    assert!(
        idle["p50_ms"].is_null() && idle["p99_ms"].is_null(),
        "{idle}"
    );

    let client = http1_client();
    let sent = 200;
    let mut failed = 0;
    for i in 0..sent {
        let resp = client
            .get(format!("http://app.test:{http}/r/{i}"))
            .send()
            .expect("request through the proxy");
        if resp.status().is_server_error() {
            failed += 1;
        }
    }
    for _ in 0..20 {
        let resp = client
            .get(format!("http://slow.test:{http}/delay/50"))
            .send()
            .expect("request through the proxy");
        assert_eq!(resp.status(), 200);
    }

    let app = settled(&admin, "app", f64::from(sent));
    let (g, b) = (live(&app, "good"), live(&app, "bad"));
    assert_eq!(
        num(g, "requests") + num(b, "requests"),
        f64::from(sent),
        "{}",
        app.text
    );
    assert!(num(b, "requests") >= 50.0, "the split is about even: {b}");
    assert_eq!((num(g, "errors"), num(g, "error_rate")), (0.0, 0.0), "{g}");
    assert_eq!(
        num(b, "errors"),
        f64::from(failed),
        "every 500 counted: {b}"
    );
    let rate = num(b, "error_rate");
    assert!(
        (0.3..=0.7).contains(&rate),
        "failing pool's error rate {rate}"
    );
    assert!(num(g, "p50_ms") > 0.0 && num(g, "p99_ms") >= num(g, "p50_ms"));

    let slow_view = settled(&admin, "slow", 20.0);
    let s = live(&slow_view, "main");
    assert_eq!(num(s, "requests"), 20.0);
    assert!(num(s, "p50_ms") >= 50.0, "a 50 ms backend: {s}");
    assert!(num(s, "p99_ms") >= num(s, "p50_ms"), "{s}");

    // The same figures at scrape time.
    let metrics = admin.get("/metrics").text;
    let labels = |pool: &'static str| [("service", "app"), ("pool", pool)];
    assert_eq!(
        metric(&metrics, "switchyard_pool_window_requests", &labels("bad")),
        Some(num(b, "requests"))
    );
    assert_eq!(
        metric(
            &metrics,
            "switchyard_pool_window_error_ratio",
            &labels("good")
        ),
        Some(0.0)
    );
    let ratio = metric(
        &metrics,
        "switchyard_pool_window_error_ratio",
        &labels("bad"),
    );
    assert!(ratio.is_some_and(|r| (r - rate).abs() < 1e-9), "{ratio:?}");
    let p50 = metric(
        &metrics,
        "switchyard_pool_window_p50_seconds",
        &[("service", "slow"), ("pool", "main")],
    );
    assert!(p50.is_some_and(|v| v >= 0.05), "{p50:?}");

    // A weight change publishes a new snapshot; the windows carry on.
    let r = admin.put_weights("app", r#"{"bad": 0}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    let after = admin.get("/v1/services/app");
    assert!(after.generation() > app.generation());
    assert_eq!(num(live(&after, "bad"), "requests"), num(b, "requests"));
    client
        .get(format!("http://app.test:{http}/again"))
        .send()
        .expect("request through the proxy");
    let latest = settled(&admin, "app", f64::from(sent) + 1.0);
    assert_eq!(
        num(live(&latest, "good"), "requests"),
        num(g, "requests") + 1.0
    );
}
