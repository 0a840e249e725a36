//! Health verdicts follow the config: a reload that removes a service's active check must bring
//! its servers back at once, not leave them marked down by a check that no longer exists.

use std::time::Duration;

use testkit::*;

use crate::BIN;

/// Service "api" with one server; `{health}` is its `[services.api.health]` section or nothing.
const CONFIG: &str = r#"
{server}
{http_listener}
[[routes]]
host = "*"
service = "api"

{health}

[services.api.pools.main]
weight = 1
servers = ["{blue}"]
"#;

/// A check the echo backend always fails (it answers 503 on /status/503).
const FAILING: &str = r#"[services.api.health]
path = "/status/503"
interval = "200ms"
timeout = "500ms"
unhealthy_threshold = 1
healthy_threshold = 2
"#;

/// The same check on a path the backend answers 200.
const PASSING: &str = r#"[services.api.health]
path = "/status/200"
interval = "200ms"
timeout = "500ms"
unhealthy_threshold = 1
healthy_threshold = 2
"#;

fn status(http: u16) -> u16 {
    http1_client()
        .get(format!("http://h.test:{http}/probe"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Starts the proxy with the failing check and waits until it marks the server down.
fn start_down(blue: &Backend, http: u16) -> (Proxy, impl Fn(&str) -> String + '_) {
    let config = move |health: &str| {
        fill(
            CONFIG,
            &[("http", &http), ("blue", &blue.addr), ("health", &health)],
        )
    };
    let proxy = Proxy::start(BIN, &config(FAILING));
    assert!(
        wait_until(Duration::from_secs(10), || status(http) == 503),
        "the failing check never took the server out (status {})\n{}",
        status(http),
        proxy.stderr()
    );
    (proxy, config)
}

/// Waits until the service answers 200 again, then checks that it keeps doing so.
fn assert_back(proxy: &Proxy, http: u16, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || status(http) == 200),
        "{what}: the server was still out 10 s later (status {})\n{}",
        status(http),
        proxy.stderr()
    );
    for i in 0..20 {
        assert_eq!(status(http), 200, "{what}: request {i} after it came back");
    }
}

#[test]
fn removing_the_health_check_on_reload_brings_the_server_back() {
    let blue = Backend::spawn("blue").unwrap();
    let http = port();
    let (mut proxy, config) = start_down(&blue, http);
    proxy.reload_with(&config(""));
    assert_back(&proxy, http, "after a reload without [services.api.health]");
}

#[test]
fn changing_the_health_check_on_reload_probes_again() {
    let blue = Backend::spawn("blue").unwrap();
    let http = port();
    let (mut proxy, config) = start_down(&blue, http);
    proxy.reload_with(&config(PASSING));
    assert_back(&proxy, http, "after a reload to a check that passes");
}
