//! Maintenance over real sockets: through the admin API and `switchyard ctl`, a service's routes answer 503 with Retry-After and the page (HTML or JSON by Accept), while allowed client networks, health paths and ACME challenges still reach the servers; it persists across restarts and reloads and ends with its service.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::Duration;

use serde_json::{json, Value};
use testkit::*;

const BIN: Bin = testkit::bin!();

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const API: &str = "application/json";
const PAGE: &str = "<h1>Back soon</h1>\n";

/// Service "app" (backend "blue", an active check on `/ready`) on host app.test, also under
/// app.test/v1 with the prefix stripped; service "other" (backend "green") on other.test, when
/// `with_other`. X-Forwarded-For is believed from loopback, so a test can be any client.
fn world(with_other: bool) -> World {
    let mut w = World::new()
        .admin()
        .backend("blue")
        .backend("green")
        .route("app.test", "app")
        .route_with(
            Route::new("app.test", "app")
                .path("/v1")
                .set("strip_prefix", true),
        )
        .pool("app", "main", 1, &["blue"])
        .toml(
            r#"
[limits]
trusted_proxies = ["127.0.0.0/8"]

[defaults.response_headers]
X-Edge = "defaults"

[defaults.error_pages]
503 = { html = "<h1>defaults 503</h1>" }

[services.app.health]
path = "/ready"
interval = "1s"
"#,
        );
    if with_other {
        w = w
            .route("other.test", "other")
            .pool("other", "main", 1, &["green"]);
    }
    w
}

/// (status, content type, Retry-After, body) of a GET from client `ip` with `accept`.
fn get(
    s: &Running,
    host: &str,
    path: &str,
    accept: &str,
    ip: &str,
) -> (u16, String, String, String) {
    let resp = http1_client()
        .get(s.url(host, path))
        .header("accept", accept)
        .header("x-forwarded-for", ip)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let ct = header(&resp, "content-type");
    let retry = header(&resp, "retry-after");
    (status, ct, retry, resp.text().unwrap())
}

/// The status a plain client at 192.0.2.9 gets for `host` `path`.
fn status(s: &Running, host: &str, path: &str) -> u16 {
    get(s, host, path, API, "192.0.2.9").0
}

fn put(s: &Running, service: &str, body: &Value) -> AdminReply {
    s.admin().send(
        "PUT",
        &format!("/v1/services/{service}/maintenance"),
        Some(&body.to_string()),
        &[],
    )
}

fn gauge(s: &Running, service: &str) -> Option<f64> {
    let text = s.admin().get("/metrics").text;
    metric(&text, "switchyard_maintenance", &[("service", service)])
}

#[test]
fn on_and_off_through_the_admin_api() {
    let s = world(true).start(BIN);
    assert_eq!(status(&s, "app.test", "/"), 200);
    assert_eq!(gauge(&s, "app"), Some(0.0));

    let body = json!({
        "page": PAGE,
        "json": "{\"error\": \"maintenance\", \"back\": \"soon\"}",
        "allow": ["10.1.0.0/16"],
        "retry_after": "2m",
    });
    let r = put(&s, "app", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    let m = &r.json["maintenance"];
    assert_eq!(m["retry_after_seconds"], 120);
    assert_eq!(m["allow"], json!(["10.1.0.0/16"]));
    assert_eq!(m["exempt"], json!(["/health", "/healthz"]));
    assert_eq!(m["page_bytes"], PAGE.len());

    // Browsers get the page, API clients the JSON, both with Retry-After and the route's headers.
    let (code, ct, retry, text) = get(&s, "app.test", "/", BROWSER, "192.0.2.9");
    assert_eq!(
        (code, ct.as_str(), retry.as_str(), text.as_str()),
        (503, "text/html; charset=utf-8", "120", PAGE)
    );
    let resp = http1_client()
        .get(s.url("app.test", "/x"))
        .header("accept", API)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-edge"), "defaults");
    assert!(is_request_id(&header(&resp, "x-request-id")));
    assert_eq!(
        json_body(resp),
        json!({"error": "maintenance", "back": "soon"})
    );

    // Through to the servers: an allowed client, the health paths, the service's active check
    // path (as the servers see it, under a stripped prefix too) and ACME challenges.
    assert_eq!(get(&s, "app.test", "/x", API, "10.1.2.3").0, 200);
    assert_eq!(get(&s, "app.test", "/x", API, "10.2.0.1").0, 503);
    for path in [
        "/health",
        "/health/live",
        "/healthz",
        "/ready",
        "/v1/ready",
        "/.well-known/acme-challenge/token123",
    ] {
        assert_eq!(status(&s, "app.test", path), 200, "{path}");
    }
    assert_eq!(status(&s, "app.test", "/v1/x"), 503);
    assert_eq!(status(&s, "app.test", "/healthcheck"), 503);
    // Other services are not touched.
    assert_eq!(status(&s, "other.test", "/"), 200);

    // Shown in the services list and the metrics.
    let list = s.admin().get("/v1/services");
    let services = list.json["services"].as_array().unwrap();
    let app = services.iter().find(|v| v["name"] == "app").unwrap();
    let other = services.iter().find(|v| v["name"] == "other").unwrap();
    assert_eq!(app["maintenance"]["retry_after_seconds"], 120);
    assert!(other.get("maintenance").is_none(), "{other}");
    assert_eq!(gauge(&s, "app"), Some(1.0));
    assert_eq!(gauge(&s, "other"), Some(0.0));
    assert!(s
        .proxy
        .wait_for_log("service \"app\" in maintenance", Duration::from_secs(5)));

    // Again without a page: the 503 error pages apply (HTML), else the JSON body.
    let r = put(&s, "app", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["maintenance"]["retry_after_seconds"], 300);
    let (code, ct, retry, text) = get(&s, "app.test", "/", BROWSER, "10.1.2.3");
    assert_eq!(
        (code, ct.as_str(), retry.as_str()),
        (503, "text/html; charset=utf-8", "300")
    );
    assert_eq!(
        text, "<h1>defaults 503</h1>",
        "the allow list went with the old request"
    );
    let (code, _, _, text) = get(&s, "app.test", "/", API, "10.1.2.3");
    assert_eq!(code, 503);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_proxy_error(&body, 503);
    assert_eq!(body["error"], "the service is in maintenance");

    // Off: the servers answer again.
    let r = s
        .admin()
        .send("DELETE", "/v1/services/app/maintenance", None, &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("maintenance").is_none(), "{}", r.text);
    assert_eq!(status(&s, "app.test", "/"), 200);
    assert_eq!(gauge(&s, "app"), Some(0.0));
    assert!(s
        .proxy
        .wait_for_log("service \"app\" out of maintenance", Duration::from_secs(5)));
}

#[test]
fn the_api_checks_what_it_is_given() {
    let s = world(false).start(BIN);
    for (body, status, says) in [
        (
            json!({"allow": ["10.0.0.0/33"]}),
            400,
            "\"allow\": invalid network \"10.0.0.0/33\"",
        ),
        (
            json!({"json": "{oops"}),
            400,
            "the json page is not valid JSON",
        ),
        (
            json!({"page": "x".repeat(33 * 1024)}),
            400,
            "the html page has 33792 bytes; at most 32768",
        ),
        (
            json!({"exempt": ["health"]}),
            400,
            "\"exempt\": path \"health\" must start with /",
        ),
        (
            json!({"retry_after": "0s"}),
            400,
            "\"retry_after\" must be from 1 to 86400 seconds",
        ),
        (json!({"pages": "x"}), 400, "unknown field `pages`"),
        (json!({"allow": "10.0.0.0/8"}), 400, "\"allow\""),
    ] {
        let r = put(&s, "app", &body);
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.json["status"], status);
        assert!(r.error().contains(says), "{body}: {}", r.text);
    }
    let r = put(&s, "nope", &json!({}));
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error(), "unknown service \"nope\"");
    let r = s
        .admin()
        .send("POST", "/v1/services/app/maintenance", None, &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "PUT, DELETE");
    // Nothing refused changed anything.
    assert_eq!(status(&s, "app.test", "/"), 200);
}

#[test]
fn on_and_off_through_ctl() {
    let s = world(false).start(BIN);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(&page, PAGE).unwrap();
    let admin = s.admin_url();
    let env = [("SWITCHYARD_ADMIN", admin.as_str())];
    let page_arg = page.to_str().unwrap();

    let out = BIN.ctl(
        &env,
        &[
            "maintenance",
            "on",
            "app",
            "--page",
            page_arg,
            "--allow",
            "10.1.0.0/16",
            "--allow",
            "192.0.2.7",
            "--exempt",
            "/status",
            "--retry-after",
            "90s",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("service \"app\" in maintenance"),
        "{out}"
    );
    assert!(out.stdout.contains("Retry-After 90s"), "{out}");

    let (code, ct, retry, text) = get(&s, "app.test", "/", BROWSER, "192.0.2.9");
    assert_eq!(
        (code, ct.as_str(), retry.as_str(), text.as_str()),
        (503, "text/html; charset=utf-8", "90", PAGE)
    );
    assert_eq!(get(&s, "app.test", "/", API, "192.0.2.7").0, 200);
    assert_eq!(get(&s, "app.test", "/", API, "10.1.9.9").0, 200);
    assert_eq!(status(&s, "app.test", "/status/200"), 200);
    assert_eq!(
        status(&s, "app.test", "/health"),
        503,
        "--exempt replaces the defaults"
    );

    let out = BIN.ctl(&env, &["status"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("MAINTENANCE since")
            && out.stdout.contains("Retry-After 90s")
            && out.stdout.contains("10.1.0.0/16, 192.0.2.7, /status"),
        "{out}"
    );
    let out = BIN.ctl(&env, &["--json", "status", "app"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["maintenance"]["page_bytes"], PAGE.len());

    // The API's refusals come back with exit 1; a page file that cannot be read is a usage error.
    let out = BIN.ctl(&env, &["maintenance", "on", "app", "--allow", "ten/8"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("\"allow\": invalid network \"ten/8\""),
        "{out}"
    );
    let out = BIN.ctl(
        &env,
        &[
            "maintenance",
            "on",
            "app",
            "--page",
            "/nonexistent/page.html",
        ],
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("cannot read the page file"), "{out}");
    let out = BIN.ctl(&env, &["maintenance", "on", "nope"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("unknown service \"nope\""), "{out}");
    // Still on as set.
    assert_eq!(get(&s, "app.test", "/", API, "192.0.2.9").2, "90");

    let out = BIN.ctl(&env, &["maintenance", "off", "app"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("service \"app\" out of maintenance"),
        "{out}"
    );
    assert_eq!(status(&s, "app.test", "/"), 200);
    let out = BIN.ctl(&env, &["status"]);
    assert!(!out.stdout.contains("MAINTENANCE"), "{out}");
}

/// Waits until the config generation passes `after` (a reload happened).
fn wait_generation(s: &Running, after: u64) {
    assert!(
        wait_until(Duration::from_secs(10), || s
            .admin()
            .get("/health/ready")
            .generation()
            > after),
        "the reload did not happen:\n{}",
        s.proxy.stderr()
    );
}

#[test]
fn persists_across_restart_and_reload_and_ends_with_its_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = world(true).start_in(BIN, dir.path());
    let r = put(&s, "other", &json!({"page": PAGE, "retry_after": 60}));
    assert_eq!(r.status, 200, "{}", r.text);
    let state = std::fs::read_to_string(dir.path().join("state/state.json")).unwrap();
    assert!(
        state.contains("\"maintenance\"") && state.contains("Back soon"),
        "{state}"
    );

    s.restart(&s.config());
    let (code, _, retry, text) = get(&s, "other.test", "/", BROWSER, "192.0.2.9");
    assert_eq!(
        (code, retry.as_str(), text.as_str()),
        (503, "60", PAGE),
        "after a restart"
    );
    assert_eq!(status(&s, "app.test", "/"), 200);

    let g = s.admin().get("/health/ready").generation();
    s.proxy.reload_with(&s.config());
    wait_generation(&s, g);
    assert_eq!(status(&s, "other.test", "/"), 503, "after a reload");

    // A reload without the service drops its maintenance, like its weight overrides.
    let g = s.admin().get("/health/ready").generation();
    s.proxy.reload_with(&world(false).config());
    wait_generation(&s, g);
    assert!(s
        .proxy
        .wait_for_log("maintenance of service \"other\"", Duration::from_secs(5)));
    let state = std::fs::read_to_string(dir.path().join("state/state.json")).unwrap();
    assert!(!state.contains("Back soon"), "{state}");
    let g = s.admin().get("/health/ready").generation();
    s.proxy.reload_with(&s.config());
    wait_generation(&s, g);
    assert_eq!(
        status(&s, "other.test", "/"),
        200,
        "back without maintenance"
    );
    assert!(s
        .admin()
        .get("/v1/services/other")
        .json
        .get("maintenance")
        .is_none());
}

#[test]
fn grpc_calls_get_unavailable_trailers_only() {
    let s = world(false).listener_option("http", "h2c", true).start(BIN);
    let r = put(&s, "app", &json!({"page": PAGE}));
    assert_eq!(r.status, 200, "{}", r.text);
    // A real gRPC client (grpcio): UNAVAILABLE with the hint, never the page.
    let target = format!("127.0.0.1:{}", s.http());
    let out = grpc_calls(
        &target,
        None,
        &[Call::new("Unary", "x").authority("app.test")],
    );
    assert_eq!(out[0].code, "UNAVAILABLE", "{out:?}");
    assert!(
        out[0].details.starts_with("the service is in maintenance"),
        "{out:?}"
    );
    assert_eq!(out[0].trailing["retry-after"], "300", "{out:?}");
    assert!(!format!("{out:?}").contains("Back soon"), "{out:?}");
}
