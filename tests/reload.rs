//! SIGHUP reloads under load: a good config takes effect, a bad one is rejected, no request fails.
#![allow(clippy::unwrap_used)] // tests unwrap freely

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

#[derive(Default)]
struct LoadStats {
    ok: usize,
    blue: usize,
    green: usize,
    failures: Vec<String>,
}

/// Which backend answers a fresh connection's request.
fn backend_now(http: u16) -> String {
    backend_via(&http1_client(), http, "probe.test")
}

#[test]
fn reload_under_load() {
    let blue = Backend::spawn("blue").unwrap();
    let green = Backend::spawn("green").unwrap();
    let http = free_port();
    let config = |blue_weight: u32, green_weight: u32, route_extra: &str| {
        blue_green(
            http,
            &blue,
            &green,
            (blue_weight, green_weight),
            route_extra,
        )
    };
    let mut proxy = Proxy::start(&config(100, 0, ""));
    assert_eq!(backend_now(http), "blue");

    // Sequential requests on one keep-alive client for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(LoadStats::default()));
    let load = {
        let (stop, stats) = (stop.clone(), stats.clone());
        std::thread::spawn(move || {
            let client = http1_client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let result = client
                    .get(format!("http://load.test:{http}/load/{i}"))
                    .send()
                    .map_err(|e| format!("request {i}: {e:?}"))
                    .and_then(|resp| {
                        let status = resp.status();
                        let text = resp
                            .text()
                            .map_err(|e| format!("request {i} body: {e:?}"))?;
                        if status != 200 {
                            return Err(format!("request {i}: status {status}: {text}"));
                        }
                        let body: serde_json::Value = serde_json::from_str(&text)
                            .map_err(|e| format!("request {i}: {e}: {text}"))?;
                        Ok(body["backend"].as_str().unwrap_or_default().to_string())
                    });
                let mut stats = stats.lock().unwrap();
                match result {
                    Ok(backend) => {
                        stats.ok += 1;
                        match backend.as_str() {
                            "blue" => stats.blue += 1,
                            "green" => stats.green += 1,
                            other => stats
                                .failures
                                .push(format!("request {i}: unexpected backend {other}")),
                        }
                    }
                    Err(e) => stats.failures.push(e),
                }
            }
        })
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(400));

    // 1. A good config flips the weights: new requests go to green.
    proxy.reload_with(&config(0, 100, ""));
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
    let bad = config(100, 0, "bogus = true");
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

    // Keep the load running for about 3 s in total.
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let stats = stats.lock().unwrap();
    assert!(
        stats.failures.is_empty(),
        "{} of {} requests failed during reloads: {:#?}",
        stats.failures.len(),
        stats.ok + stats.failures.len(),
        &stats.failures[..stats.failures.len().min(10)]
    );
    assert!(
        stats.ok >= 100,
        "the load loop only managed {} requests",
        stats.ok
    );
    assert!(
        stats.blue > 0 && stats.green > 0,
        "load saw blue={} green={}",
        stats.blue,
        stats.green
    );
    assert!(proxy.try_exit().is_none(), "the proxy died");
}
