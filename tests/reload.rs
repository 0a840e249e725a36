//! SIGHUP reloads under load: a good config takes effect, a bad one is rejected, no request fails.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Which backend answers a fresh connection's request.
fn backend_now(http: u16) -> String {
    backend_via(&http1_client(), http, "probe.test")
}

#[test]
fn reload_under_load() {
    let mut w = World::blue_green().start(BIN);
    let http = w.http();
    let green_only = w.config_with(|w| w.weights("api", &[("blue", 0), ("green", 100)]));
    // blue=100 again, and a route with a key that does not exist.
    let bad = w.config_with(|w| w.route_with(Route::new("bad.test", "api").set("bogus", true)));
    let proxy = &mut w.proxy;
    assert_eq!(backend_now(http), "blue");

    // Sequential requests on one keep-alive client for the whole test.
    let load = Load::start(&format!("http://load.test:{http}"), 1, Duration::ZERO);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(400));

    // 1. A good config flips the weights: new requests go to green.
    proxy.reload_with(&green_only);
    assert!(
        wait_until(Duration::from_secs(3), || backend_now(http) == "green"),
        "the reloaded weights (blue=0, green=100) never took effect\n--- stderr ---\n{}",
        proxy.stderr()
    );
    for _ in 0..20 {
        assert_eq!(
            backend_now(http),
            "green",
            "after the reload every request goes to green"
        );
    }
    std::thread::sleep(Duration::from_millis(300));

    // 2. A bad config is rejected with its location and the running config keeps serving.
    let bad_line = bad
        .lines()
        .position(|l| l.starts_with("bogus = true"))
        .unwrap()
        + 1;
    proxy.reload_with(&bad);
    let expected = format!(
        "{}:{bad_line}:1: unknown field `bogus`",
        proxy.config_path().display()
    );
    assert!(
        proxy.wait_for_log(&expected, Duration::from_secs(3)),
        "the proxy log does not contain {expected:?}\n--- stderr ---\n{}",
        proxy.stderr()
    );
    for _ in 0..20 {
        assert_eq!(
            backend_now(http),
            "green",
            "the rejected config (blue=100) must not take effect"
        );
    }

    // Keep the load running for about 3 s in total, and for 100 requests at least.
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(started.elapsed()));
    assert!(load.wait_for(100), "the load loop stalled");
    let seen = load.finish();
    let count = |backend: &str| seen.iter().filter(|r| r.backend == backend).count();
    let (blue, green) = (count("blue"), count("green"));
    let failed: Vec<&Seen> = seen
        .iter()
        .filter(|r| r.status != 200 || !["blue", "green"].contains(&r.backend.as_str()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during reloads: {:#?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        seen.len() >= 100,
        "the load loop only managed {} requests",
        seen.len()
    );
    assert!(blue > 0 && green > 0, "load saw blue={blue} green={green}");
    assert!(proxy.try_exit().is_none(), "the proxy died");
}
