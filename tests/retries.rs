//! Retries like nginx's `proxy_next_upstream`: a backend killed with requests in flight costs idempotent requests nothing, a request that may have been sent is never sent twice, statuses of `retry.on` go to another server, `tries` and the route's options bound it.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::thread::JoinHandle;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// One request's outcome: its status and the `backend` of its JSON body (`""` when absent).
type Outcome = (u16, String);

/// Sends `method` `url` (with a small body for POST) on a thread of its own.
fn send(method: &'static str, url: String) -> JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let client = http1_client();
        let req = match method {
            "POST" => client.post(&url).body("x".repeat(100)),
            _ => client.get(&url),
        };
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        (status, body["backend"].as_str().unwrap_or("").to_string())
    })
}

/// Sends requests one at a time, each once the previous one has reached a backend, until
/// `in_flight` of them are held by `doomed` (the ones `survivor` takes are answered at once).
fn until_in_flight(
    doomed: &KillableBackend,
    survivor: &Backend,
    method: &'static str,
    url: &str,
    in_flight: usize,
) -> Vec<JoinHandle<Outcome>> {
    let mut clients = Vec::new();
    while doomed.received().len() < in_flight {
        let before = (doomed.received().len(), survivor.requests());
        clients.push(send(method, format!("{url}/{}", clients.len())));
        assert!(
            wait_until(Duration::from_secs(10), || {
                doomed.received().len() > before.0 || survivor.requests() > before.1
            }),
            "request {} reached no backend",
            clients.len()
        );
    }
    clients
}

/// Service "api" on every host: one pool of the killable backend "doomed" and the echo backend
/// "survivor".
fn doomed_and_survivor(doomed: &KillableBackend) -> Running {
    World::new()
        .backend("survivor")
        .address("doomed", doomed.addr)
        .route("*", "api")
        .pool("api", "main", 1, &["doomed", "survivor"])
        .start(BIN)
}

#[test]
fn a_backend_killed_with_gets_in_flight_costs_the_clients_nothing() {
    let mut doomed = KillableBackend::spawn("doomed");
    let w = doomed_and_survivor(&doomed);
    let survivor = w.backend("survivor");
    let clients = until_in_flight(&doomed, survivor, "GET", &w.url("api.test", "/slow"), 20);
    let sent = clients.len();

    doomed.kill();
    let outcomes: Vec<Outcome> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {sent} GETs failed: {failed:?}",
        failed.len()
    );
    assert!(
        outcomes.iter().all(|(_, b)| b == "survivor"),
        "{outcomes:?}"
    );
    // Every request, the 20 that were on the killed backend included, was answered once by the
    // survivor: the ones in flight were sent again there, on the default retry policy.
    assert_eq!(survivor.requests(), sent as u64);
    assert_eq!(doomed.received().len(), 20);
}

#[test]
fn a_post_in_flight_on_a_killed_backend_gets_502_and_is_never_sent_twice() {
    let mut doomed = KillableBackend::spawn("doomed");
    let w = doomed_and_survivor(&doomed);
    let survivor = w.backend("survivor");
    let mut clients = until_in_flight(&doomed, survivor, "POST", &w.url("api.test", "/slow"), 1);
    let on_doomed = clients.pop().unwrap();
    for answered in clients {
        assert_eq!(answered.join().unwrap(), (200, "survivor".to_string()));
    }
    let survivor_before = survivor.requests();

    doomed.kill();
    let (status, backend) = on_doomed.join().unwrap();
    assert_eq!(status, 502, "answered by {backend:?}");
    // The survivor's own count: the POST the killed backend may have acted on never reached it.
    assert_eq!(survivor.requests(), survivor_before);
    let posts = doomed.received();
    assert_eq!(
        posts.iter().filter(|r| r.starts_with("POST ")).count(),
        1,
        "{posts:?}"
    );

    // A POST that could not connect was never sent: it goes to the survivor.
    let outcomes: Vec<Outcome> = (0..6)
        .map(|i| {
            send("POST", w.url("api.test", &format!("/after/{i}")))
                .join()
                .unwrap()
        })
        .collect();
    assert!(
        outcomes.iter().all(|o| *o == (200, "survivor".to_string())),
        "{outcomes:?}"
    );
}

/// Echo backend `name` that answers every request with `status`.
fn failing(name: &str, status: u16) -> Backend {
    Backend::builder(name)
        .fail_ratio(1.0)
        .fail_status(status)
        .spawn()
        .unwrap()
}

#[test]
fn a_status_of_retry_on_goes_to_another_server_for_get_but_not_for_post() {
    let w = World::new()
        .with_backend("busy", failing("busy", 503))
        .with_backend("busy2", failing("busy2", 503))
        .backend("ok")
        .toml(
            r#"
[[routes]]
host = "api.test"
service = "api"
retry = { on = ["503"] }

[[routes]]
host = "both.test"
service = "both"
retry = { on = ["503"] }

[[routes]]
host = "default.test"
service = "api"
"#,
        )
        .pool("api", "main", 1, &["busy", "ok"])
        .pool("both", "main", 1, &["busy", "busy2"])
        .start(BIN);
    let (busy, ok) = (w.backend("busy"), w.backend("ok"));
    let run = |method, host: &str, n: usize| -> Vec<Outcome> {
        (0..n)
            .map(|i| {
                send(method, w.url(host, &format!("/r/{i}")))
                    .join()
                    .unwrap()
            })
            .collect()
    };

    let gets = run("GET", "api.test", 20);
    assert!(
        gets.iter().all(|o| *o == (200, "ok".to_string())),
        "{gets:?}"
    );
    assert!(busy.requests() >= 5, "round robin sent GETs to busy first");
    assert_eq!(ok.requests(), 20);

    let (busy_before, ok_before) = (busy.requests(), ok.requests());
    let posts = run("POST", "api.test", 20);
    let refused = posts
        .iter()
        .filter(|o| **o == (503, "busy".to_string()))
        .count() as u64;
    let served = posts
        .iter()
        .filter(|o| **o == (200, "ok".to_string()))
        .count() as u64;
    assert_eq!(refused + served, 20, "{posts:?}");
    assert!(refused >= 5, "{posts:?}");
    assert_eq!(busy.requests() - busy_before, refused);
    assert_eq!(ok.requests() - ok_before, served, "no POST was sent twice");

    // Without `retry.on`, the 503 is the client's.
    let plain = run("GET", "default.test", 10);
    assert!(plain.contains(&(503, "busy".to_string())), "{plain:?}");

    // When no server is left, the last answer is passed through (the upstream's own body).
    let (b1, b2) = (busy.requests(), w.backend("busy2").requests());
    let last = run("GET", "both.test", 1);
    assert_eq!(last[0].0, 503);
    assert!(last[0].1.starts_with("busy"), "{last:?}");
    assert_eq!(
        (busy.requests() - b1, w.backend("busy2").requests() - b2),
        (1, 1)
    );
}

#[test]
fn tries_1_never_retries_and_timeouts_are_retried_only_when_asked() {
    let w = World::new()
        .dead("dead")
        .with_backend("busy", failing("busy", 503))
        .with_backend(
            "slow",
            Backend::builder("slow")
                .delay(Duration::from_secs(5))
                .spawn()
                .unwrap(),
        )
        .backend("ok")
        .toml(
            r#"
[[routes]]
host = "once.test"
service = "dead_or_ok"
retry = { tries = 1 }

[[routes]]
host = "twice.test"
service = "dead_or_ok2"

[[routes]]
host = "busy.test"
service = "busy_or_ok"
retry = { on = ["503"], tries = 1 }

[[routes]]
host = "timeout.test"
service = "slow_or_ok"
read_timeout = "300ms"
retry = { on = ["error", "timeout"] }

[[routes]]
host = "notimeout.test"
service = "slow_or_ok"
read_timeout = "300ms"
"#,
        )
        .pool("dead_or_ok", "main", 1, &["dead", "ok"])
        .pool("dead_or_ok2", "main", 1, &["dead", "ok"])
        .pool("busy_or_ok", "main", 1, &["busy", "ok"])
        .pool("slow_or_ok", "main", 1, &["slow", "ok"])
        .start(BIN);
    let statuses = |host: &str, n: usize| -> Vec<u16> {
        (0..n)
            .map(|i| {
                send("GET", w.url(host, &format!("/t/{i}")))
                    .join()
                    .unwrap()
                    .0
            })
            .collect()
    };
    // A connect failure is a 502 with one try; with the default three it never shows.
    let once = statuses("once.test", 4);
    assert!(once.contains(&502) && once.contains(&200), "{once:?}");
    let twice = statuses("twice.test", 6);
    assert!(twice.iter().all(|s| *s == 200), "{twice:?}");
    let busy = statuses("busy.test", 4);
    assert!(busy.contains(&503) && busy.contains(&200), "{busy:?}");
    // A response header that does not come within read_timeout: another server when asked...
    let retried = statuses("timeout.test", 4);
    assert!(retried.iter().all(|s| *s == 200), "{retried:?}");
    // ...and the client's 504 by default.
    let not = statuses("notimeout.test", 4);
    assert!(not.contains(&504), "{not:?}");
}
