//! Error pages over real sockets: Switchyard's own 404/429/502/503/504 answers carry the route's, the service's or `[defaults]`' page, HTML for browsers and JSON for API clients, and today's JSON body where none is configured; a missing page file is a config error with its location.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::Path;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// What Firefox sends on a navigation.
const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const API: &str = "application/json";

/// Page files next to the config.
fn write_pages(dir: &Path) {
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    for (name, text) in [
        ("defaults-502.html", "<h1>defaults 502</h1>\n"),
        ("defaults-503.html", "<h1>defaults 503</h1>\n"),
        ("defaults-504.html", "<h1>defaults 504</h1>\n"),
        ("down-503.html", "<h1>service down 503</h1>\n"),
        ("down-503.json", "{\"error\": \"service down\"}\n"),
    ] {
        std::fs::write(pages.join(name), text).unwrap();
    }
}

/// Services: "api" (echo backend "blue"), "down" (a closed port its active check takes out: 503),
/// "dead" (a closed port, no ejection: 502). `[defaults]` has pages for 404, 429, 502, 503, 504;
/// "down" has its own 503; route "routepage.test" its own 503 (HTML only) and 504 (JSON only).
fn world() -> World {
    World::new()
        .backend("blue")
        .dead("closed")
        .dead("closed2")
        .pool("api", "main", 1, &["blue"])
        .pool("down", "main", 1, &["closed"])
        .pool("dead", "main", 1, &["closed2"])
        .passive("dead", 0, "10s")
        .route("down.test", "down")
        .route("dead.test", "dead")
        .route_with(
            Route::new("limited.test", "api").set("limits", vec![toml::Value::from("tight")]),
        )
        .route_with(Route::new("slow.test", "api").set("read_timeout", "300ms"))
        .route_with(Route::new("big.test", "api").set("max_body_size", "10B"))
        .toml(
            r#"
[defaults.response_headers]
X-Edge = "defaults"

[defaults.error_pages]
404 = { html = "<h1>defaults 404</h1>", json = '{"error":"defaults 404"}' }
429 = { json = '{"error":"slow down"}' }
502 = "pages/defaults-502.html"
503 = { html_file = "pages/defaults-503.html" }
504 = { html_file = "pages/defaults-504.html" }

[limits.zones.tight]
key = "client_ip"
rate = "1r/h"
burst = 1

[services.down.health]
path = "/"
interval = "100ms"
timeout = "200ms"
unhealthy_threshold = 1

[services.down.error_pages]
503 = { html_file = "pages/down-503.html", json_file = "pages/down-503.json" }

[[routes]]
host = "routepage.test"
service = "down"
[routes.error_pages]
503 = { html = "<h1>route 503</h1>" }

[[routes]]
host = "slowpage.test"
service = "api"
read_timeout = "300ms"
[routes.error_pages]
504 = { json = '{"error":"route 504"}' }
"#,
        )
}

fn start() -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_pages(dir.path());
    let w = world().start_in(BIN, dir.path());
    (w, dir)
}

/// (status, content type, body, response) of a GET with `accept`.
fn get(w: &Running, host: &str, path: &str, accept: &str) -> (u16, String, String, Headers) {
    let resp = http1_client()
        .get(w.url(host, path))
        .header("accept", accept)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = Headers(resp.headers().clone());
    let ct = header(&resp, "content-type");
    (status, ct, resp.text().unwrap(), headers)
}

struct Headers(reqwest::header::HeaderMap);

impl Headers {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

fn assert_html(got: &(u16, String, String, Headers), status: u16, body: &str) {
    assert_eq!(got.0, status, "{}", got.2);
    assert_eq!(got.1, "text/html; charset=utf-8");
    assert_eq!(got.2.trim(), body.trim());
    assert!(is_request_id(got.3.get("x-request-id")));
    assert_eq!(got.3.get("x-edge"), "defaults", "configured headers stay");
    assert_eq!(got.3.get("cache-control"), "no-store");
}

fn assert_json(got: &(u16, String, String, Headers), status: u16) -> serde_json::Value {
    assert_eq!(got.0, status, "{}", got.2);
    assert_eq!(got.1, "application/json");
    assert_eq!(got.3.get("x-edge"), "defaults", "configured headers stay");
    serde_json::from_str(&got.2).unwrap_or_else(|e| panic!("{e}: {}", got.2))
}

/// Waits until the active check has taken "down"'s only server out.
fn wait_down(w: &Running) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            get(w, "down.test", "/", API).0 == 503
        }),
        "the active check never took the closed port out"
    );
}

#[test]
fn no_route_404_by_accept() {
    let (w, _dir) = start();
    assert_html(
        &get(&w, "nowhere.test", "/x", BROWSER),
        404,
        "<h1>defaults 404</h1>",
    );
    let body = assert_json(&get(&w, "nowhere.test", "/x", API), 404);
    assert_eq!(body, serde_json::json!({"error": "defaults 404"}));
    // curl's */* is an API client.
    let body = assert_json(&get(&w, "nowhere.test", "/x", "*/*"), 404);
    assert_eq!(body["error"], "defaults 404");
}

#[test]
fn rate_limited_429_keeps_its_headers() {
    let (w, _dir) = start();
    // The burst passes, then the zone refuses.
    let mut got = get(&w, "limited.test", "/", API);
    for _ in 0..5 {
        if got.0 == 429 {
            break;
        }
        assert_eq!(got.0, 200);
        got = get(&w, "limited.test", "/", API);
    }
    let body = assert_json(&got, 429);
    assert_eq!(body, serde_json::json!({"error": "slow down"}));
    assert!(got.3.get("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(got.3.get("ratelimit-remaining"), "0");
    // A browser gets the JSON page too when no HTML page is configured for 429.
    let got = get(&w, "limited.test", "/", BROWSER);
    assert_eq!(got.0, 429);
    assert_eq!(got.1, "application/json");
    assert_eq!(got.2, r#"{"error":"slow down"}"#);
}

#[test]
fn dead_backend_502_from_defaults_and_json_default_body() {
    let (w, _dir) = start();
    assert_html(
        &get(&w, "dead.test", "/", BROWSER),
        502,
        "<h1>defaults 502</h1>",
    );
    // No JSON page for 502 anywhere: today's body.
    let got = get(&w, "dead.test", "/", API);
    let body = assert_json(&got, 502);
    assert_proxy_error(&body, 502);
    assert_eq!(body["request_id"], got.3.get("x-request-id"));
}

#[test]
fn stalled_backend_504_route_over_defaults() {
    let (w, _dir) = start();
    // The backend answers after 10 s; the route's read timeout is 300 ms.
    assert_html(
        &get(&w, "slow.test", "/delay/10000", BROWSER),
        504,
        "<h1>defaults 504</h1>",
    );
    assert_proxy_error(
        &assert_json(&get(&w, "slow.test", "/delay/10000", API), 504),
        504,
    );
    // The route's JSON page wins for API clients; browsers fall to the defaults' HTML.
    let body = assert_json(&get(&w, "slowpage.test", "/delay/10000", API), 504);
    assert_eq!(body, serde_json::json!({"error": "route 504"}));
    assert_html(
        &get(&w, "slowpage.test", "/delay/10000", BROWSER),
        504,
        "<h1>defaults 504</h1>",
    );
}

#[test]
fn unavailable_503_route_over_service_over_defaults() {
    let (w, _dir) = start();
    wait_down(&w);
    // The service's pages, both kinds.
    assert_html(
        &get(&w, "down.test", "/", BROWSER),
        503,
        "<h1>service down 503</h1>",
    );
    let body = assert_json(&get(&w, "down.test", "/", API), 503);
    assert_eq!(body, serde_json::json!({"error": "service down"}));
    // The route's HTML over the service's; the service's JSON under it.
    assert_html(
        &get(&w, "routepage.test", "/", BROWSER),
        503,
        "<h1>route 503</h1>",
    );
    let body = assert_json(&get(&w, "routepage.test", "/", API), 503);
    assert_eq!(body, serde_json::json!({"error": "service down"}));
    // A status with no page anywhere (413) keeps today's JSON body.
    let resp = http1_client()
        .post(w.url("big.test", "/"))
        .header("accept", BROWSER)
        .body("0123456789abcdef")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(header(&resp, "content-type"), "application/json");
    assert_proxy_error(&json_body(resp), 413);
}

#[test]
fn grpc_calls_keep_trailers_only() {
    // h2c to a service whose server is down: the gRPC caller gets a gRPC status, never a page.
    let dir = tempfile::tempdir().unwrap();
    write_pages(dir.path());
    let w = world()
        .listener_option("http", "h2c", true)
        .start_in(BIN, dir.path());
    wait_down(&w);
    // A real gRPC client (grpcio): UNAVAILABLE from the Trailers-Only answer, never a page.
    let target = format!("127.0.0.1:{}", w.http());
    let out = grpc_calls(
        &target,
        None,
        &[Call::new("Unary", "x").authority("down.test")],
    );
    assert_eq!(out[0].code, "UNAVAILABLE", "{out:?}");
    assert!(
        out[0].details.starts_with("no upstream server available"),
        "{out:?}"
    );
    assert!(!format!("{out:?}").contains("service down"), "{out:?}");
}

/// 1-based (line, column) of the first occurrence of `marker` in `text`.
fn pos(text: &str, marker: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        if let Some(col) = line.find(marker) {
            return (i + 1, col + 1);
        }
    }
    panic!("marker {marker:?} not in config:\n{text}");
}

#[test]
fn missing_or_bad_pages_are_config_errors_with_their_location() {
    let config = world().config();
    let (code, _, stderr) = check(BIN, &config);
    assert_eq!(code, 1, "the page files are not there: {stderr}");
    let (line, col) = pos(&config, "\"pages/defaults-502.html\"");
    let want = format!("switchyard.toml:{line}:{col}: error page 502: cannot read html file");
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");

    let bad = "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\
               [services.api.pools.main]\nservers = [\"127.0.0.1:2\"]\n\
               [services.api.error_pages]\n503 = { json = '{not json' }\n\
               600 = { html = \"x\" }\n502 = { html = \"x\", html_file = \"y\" }\n";
    let (code, _, stderr) = check(BIN, bad);
    assert_eq!(code, 1, "{stderr}");
    for (marker, reason) in [
        (
            "{ json",
            "error page 503: the json body (inline) is not valid JSON",
        ),
        (
            "{ html = \"x\" }",
            "error page for \"600\": the key is a status from 400 to 599",
        ),
        (
            "{ html = \"x\", html_file",
            "error page 502: give `html` or `html_file`, not both",
        ),
    ] {
        let (line, col) = pos(bad, marker);
        let want = format!("switchyard.toml:{line}:{col}: {reason}");
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }
}
