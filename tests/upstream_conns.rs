//! `[services.X.upstream]` over real sockets: `max_conns` queues a request behind a slow one and
//! serves it after, a short `queue_timeout` answers 503 saying why, and no slot leaks;
//! `keepalive_timeout` closes an idle upstream connection when it says (the echo backend counts
//! its open connections), and `keepalive` caps how many are kept.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

fn world(upstream: &str) -> Running {
    World::new()
        .catch_all_blue()
        .toml(&format!("[services.api.upstream]\n{upstream}"))
        .start(BIN)
}

/// GET `path` on the world's "http" listener in a thread: (status, body, when it finished).
fn get_in_thread(
    w: &Running,
    path: &str,
    timeout: Duration,
) -> thread::JoinHandle<Result<(u16, String, Instant), String>> {
    let url = w.url("a.test", path);
    thread::spawn(move || {
        let client = client_builder().timeout(timeout).build().unwrap();
        let resp = client.get(url).send().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.text().map_err(|e| e.to_string())?;
        Ok((status, body, Instant::now()))
    })
}

/// Waits (up to 10 s) until `backend` has seen its first request, which `first` sent. When
/// `first` ends before that, its outcome says why (an error answer, a failed connect) where a
/// bare count would only say "not yet".
fn wait_first_request(
    backend: &Backend,
    first: thread::JoinHandle<Result<(u16, String, Instant), String>>,
) -> thread::JoinHandle<Result<(u16, String, Instant), String>> {
    wait_until(Duration::from_secs(10), || {
        backend.requests() == 1 || first.is_finished()
    });
    if backend.requests() != 1 {
        if first.is_finished() {
            let outcome = first.join().unwrap();
            panic!("the first request ended before the backend saw it: {outcome:?}");
        }
        panic!(
            "in 10 s the backend saw {} requests, and the first is still going",
            backend.requests()
        );
    }
    first
}

#[test]
fn a_request_over_max_conns_waits_for_the_slot_and_is_served_after() {
    let w = world("max_conns = 1\nqueue_timeout = \"10s\"\n");
    let blue = w.backend("blue");
    // The first holds the one slot for 700 ms from its arrival, which is after this instant.
    let sent = Instant::now();
    let first = get_in_thread(&w, "/delay/700", Duration::from_secs(20));
    let first = wait_first_request(blue, first);
    let second = get_in_thread(&w, "/second", Duration::from_secs(20));
    let (s1, _, _) = first.join().unwrap().unwrap();
    let (s2, _, done2) = second.join().unwrap().unwrap();
    assert_eq!((s1, s2), (200, 200));
    // Served only once the first gave the slot back. (Comparing the two threads' finishing
    // instants raced: the first's thread may note its time after the second's on a busy machine.)
    let waited = done2.duration_since(sent);
    assert!(
        waited >= Duration::from_millis(700),
        "the second was served after {waited:?}, before the first's 700 ms were over"
    );
    assert_eq!(blue.requests(), 2);
}

#[test]
fn a_short_queue_timeout_answers_503_and_leaks_no_slot() {
    let w = world("max_conns = 1\nqueue_timeout = \"200ms\"\n");
    let blue = w.backend("blue");
    let slow = get_in_thread(&w, "/delay/2500", Duration::from_secs(20));
    let slow = wait_first_request(blue, slow);

    let started = Instant::now();
    let resp = http1_client()
        .get(w.url("a.test", "/queued"))
        .send()
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 503);
    let body = json_body(resp);
    assert_proxy_error(&body, 503);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("max_conns"), "{error}");
    assert!(waited >= Duration::from_millis(190), "waited {waited:?}");
    assert_eq!(
        blue.requests(),
        1,
        "the queued request never reached the backend"
    );

    // A client that gives up while queued holds no slot either.
    let gave_up = get_in_thread(&w, "/gave-up", Duration::from_millis(100));
    assert!(gave_up.join().unwrap().is_err(), "the client timed out");

    let (status, _, _) = slow.join().unwrap().unwrap();
    assert_eq!(status, 200);
    // The slot is free again: the next request is served.
    let resp = http1_client()
        .get(w.url("a.test", "/after"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn an_idle_upstream_connection_closes_at_keepalive_timeout() {
    let w = world("keepalive_timeout = \"1s\"\n");
    let blue = w.backend("blue");
    let client = http1_client();
    assert_eq!(
        client.get(w.url("a.test", "/one")).send().unwrap().status(),
        200
    );
    let idle_since = Instant::now();
    // Reused while idle for less than the timeout.
    assert_eq!(
        client.get(w.url("a.test", "/two")).send().unwrap().status(),
        200
    );
    assert_eq!(
        blue.connections(),
        1,
        "the second request reused the connection"
    );
    let idle_since = idle_since.max(Instant::now());
    assert!(wait_until(Duration::from_secs(10), || blue
        .open_connections()
        == 0));
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(900),
        "closed after {idle:?}, before keepalive_timeout"
    );
}

#[test]
fn keepalive_caps_the_idle_connections_kept() {
    // No reuse at all.
    let w = world("keepalive = 0\n");
    let blue = w.backend("blue");
    let client = http1_client();
    for path in ["/a", "/b"] {
        assert_eq!(
            client.get(w.url("a.test", path)).send().unwrap().status(),
            200
        );
    }
    assert_eq!(blue.connections(), 2, "each request had a fresh connection");
    assert!(wait_until(Duration::from_secs(10), || blue
        .open_connections()
        == 0));
    drop(w);

    // One kept of two: two requests at once open two connections; one is kept afterwards.
    let w = world("keepalive = 1\n");
    let blue = w.backend("blue");
    let a = get_in_thread(&w, "/delay/1500", Duration::from_secs(20));
    let b = get_in_thread(&w, "/delay/1500", Duration::from_secs(20));
    assert_eq!(a.join().unwrap().unwrap().0, 200);
    assert_eq!(b.join().unwrap().unwrap().0, 200);
    assert_eq!(blue.connections(), 2);
    assert!(wait_until(Duration::from_secs(10), || blue
        .open_connections()
        == 1));
    assert_eq!(
        client.get(w.url("a.test", "/c")).send().unwrap().status(),
        200
    );
    assert_eq!(blue.connections(), 2, "the kept connection was reused");
}
