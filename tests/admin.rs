//! The admin API over real sockets: auth, validation, If-Match, weight changes under load,
//! persistence across restart and reload, health-gated switch, reload through the API.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::collections::BTreeSet;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

const TOKEN: &str = "test-token-0123456789";

/// Service "app": blue and green are live backends, red is a closed port. Requests for host
/// red.test go to service "red-direct", whose servers are that closed port and blue, with passive
/// ejection after one failure: the first request that lands on the closed port takes red's server
/// out (server state is shared by address; blue can take the traffic, and passive checks never
/// eject the last server that can), which is how these tests make a pool unhealthy.
fn world(blue_weight: u32, green_weight: u32) -> World {
    World::new()
        .backend("blue")
        .backend("green")
        .dead("red")
        .route("red.test", "red-direct")
        .route("*", "app")
        .pool("app", "blue", blue_weight, &["blue"])
        .pool("app", "green", green_weight, &["green"])
        .pool("app", "red", 0, &["red"])
        .passive("red-direct", 1, "60s")
        .pool("red-direct", "only", 1, &["red", "blue"])
        .admin_token(TOKEN)
}

/// The config of `s` with other (blue, green) weights.
fn weighted(s: &Running, blue_weight: u32, green_weight: u32) -> String {
    s.config_with(|w| w.weights("app", &[("blue", blue_weight), ("green", green_weight)]))
}

/// Which backend answers a request on a fresh client.
fn backend_now(s: &Running) -> String {
    backend_via(&http1_client(), s.http(), "app.test")
}

#[test]
fn auth_is_required_except_for_health_and_metrics() {
    let s = world(100, 0).start(BIN);
    let anonymous = Admin::new(s.admin_port(), None);
    let wrong = Admin::new(s.admin_port(), Some("test-token-0123456788"));
    let short = Admin::new(s.admin_port(), Some("test"));

    for (who, client) in [
        ("no token", &anonymous),
        ("wrong", &wrong),
        ("short", &short),
    ] {
        for (method, path) in [
            ("GET", "/v1/services"),
            ("GET", "/v1/services/app"),
            ("GET", "/v1/config"),
            ("POST", "/v1/reload"),
            ("GET", "/v1/unknown"),
        ] {
            let r = client.send(method, path, None, &[]);
            assert_eq!(r.status, 401, "{who}: {method} {path}: {}", r.text);
            assert_eq!(
                r.header("www-authenticate"),
                "Bearer",
                "{who}: {method} {path}"
            );
            assert_eq!(r.json["status"], 401, "{}", r.text);
            assert!(!r.error().is_empty(), "{}", r.text);
        }
        let r = client.put_weights("app", r#"{"blue": 0, "green": 100}"#);
        assert_eq!(r.status, 401, "{who}: {}", r.text);
    }
    assert_eq!(
        anonymous.get("/v1/services").error(),
        "missing bearer token (send Authorization: Bearer <token>)"
    );
    assert_eq!(wrong.get("/v1/services").error(), "wrong bearer token");
    let basic = anonymous.send(
        "GET",
        "/v1/services",
        None,
        &[("authorization", "Basic dGVzdA==")],
    );
    assert_eq!(basic.status, 401);

    // Nothing changed through the refused requests.
    let admin = s.admin();
    let r = admin.get("/v1/services/app");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.weight("blue"), r.weight("green")), (100, 0));
    assert_eq!(r.generation(), 1);
    assert_eq!(backend_now(&s), "blue");

    let r = admin.get("/v1/services");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["services"].as_array().unwrap().len(), 2);
    assert_eq!(admin.get("/v1/unknown").status, 404);

    // Open without a token.
    let live = anonymous.get("/health/live");
    assert_eq!(
        (live.status, &live.json),
        (200, &serde_json::json!({"status": "live"}))
    );
    let ready = anonymous.get("/health/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json["status"], "ready");
    assert_eq!(ready.generation(), 1);
    let metrics = anonymous.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), "text/plain; version=0.0.4");
}

#[test]
fn metrics_can_require_the_token() {
    let s = world(100, 0)
        .admin_option("metrics_require_token", true)
        .start(BIN);
    let r = Admin::new(s.admin_port(), None).get("/metrics");
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(s.admin().get("/metrics").status, 200);
    assert_eq!(
        Admin::new(s.admin_port(), None).get("/health/ready").status,
        200
    );
}

#[test]
fn weight_validation_errors() {
    let s = world(100, 0).start(BIN);
    let admin = s.admin();
    let bad = |body: &str, status: u16, needle: &str| {
        let r = admin.put_weights("app", body);
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.json["status"], status, "{}", r.text);
        assert!(
            r.error().contains(needle),
            "{body}: {:?} lacks {needle:?}",
            r.error()
        );
    };
    bad(r#"{"blue": -5}"#, 400, r#"pool "blue" is -5"#);
    bad(r#"{"green": "50"}"#, 400, r#"pool "green" is a string"#);
    bad(r#"{"green": 2.5}"#, 400, r#"pool "green" is 2.5"#);
    bad(r#"{"green": null}"#, 400, r#"pool "green""#);
    bad(r#"{"blue": 1000001}"#, 400, r#"pool "blue""#);
    bad(r#"[100, 0]"#, 400, "JSON object");
    bad(r#"{"blue": 100"#, 400, "not valid JSON");
    bad("", 400, "empty");
    bad("{}", 400, "no pool weights");
    bad(r#"{"blue": 0, "green": 0}"#, 400, "sum to 0");
    bad(r#"{"blue": 0}"#, 400, "sum to 0");
    bad(r#"{"purple": 10}"#, 404, r#"no pool "purple""#);
    let r = admin.put_weights("nope", r#"{"blue": 10}"#);
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error(), r#"unknown service "nope""#);
    let r = admin.send(
        "PUT",
        "/v1/services/app/weights",
        Some(r#"{"blue": 1}"#),
        &[("if-match", "seven")],
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error().contains("If-Match"), "{}", r.text);

    let huge = format!(r#"{{"blue": 1, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let r = admin.put_weights("app", &huge);
    assert_eq!(r.status, 413, "{}", r.text);

    let r = admin.send("GET", "/v1/services/app/weights", None, &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "PUT, DELETE");
    let r = admin.send("POST", "/v1/services/app/switch", Some(r#"{"to": 1}"#), &[]);
    assert_eq!(r.status, 400, "{}", r.text);

    // None of it changed anything.
    let r = admin.get("/v1/services/app");
    assert_eq!(r.generation(), 1, "{}", r.text);
    assert_eq!((r.weight("blue"), r.weight("green")), (100, 0));
    assert_eq!(r.pool("blue")["overridden"], false);
}

#[test]
fn if_match_conflicts_and_success() {
    let s = world(100, 0).start(BIN);
    let admin = s.admin();
    let put = |if_match: &str, body: &str| {
        admin.send(
            "PUT",
            "/v1/services/app/weights",
            Some(body),
            &[("if-match", if_match)],
        )
    };
    let r = admin.get("/v1/services/app");
    let g = r.generation();
    assert_eq!(r.header("etag"), format!("\"{g}\""));

    let r = put(&(g + 5).to_string(), r#"{"blue": 0, "green": 100}"#);
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.generation(),
        g,
        "the conflict names the current generation"
    );
    assert_eq!(admin.get("/v1/services/app").weight("green"), 0);

    let r = put(&format!("\"{g}\""), r#"{"blue": 0, "green": 100}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.generation(), g + 1);
    assert_eq!(r.header("etag"), format!("\"{}\"", g + 1));
    assert_eq!((r.weight("blue"), r.weight("green")), (0, 100));
    assert_eq!(backend_now(&s), "green");

    // A second script still holding generation g is refused, and learns the current one.
    let r = put(&g.to_string(), r#"{"blue": 100, "green": 0}"#);
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.generation(), g + 1);
    let r = admin.send(
        "POST",
        "/v1/services/app/switch",
        Some(r#"{"to": "blue"}"#),
        &[("if-match", &g.to_string())],
    );
    assert_eq!(r.status, 409, "{}", r.text);
    let r = admin.send(
        "DELETE",
        "/v1/services/app/weights",
        None,
        &[("if-match", &g.to_string())],
    );
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(backend_now(&s), "green");

    let r = admin.send(
        "DELETE",
        "/v1/services/app/weights",
        None,
        &[("if-match", &(g + 1).to_string())],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.generation(), g + 2);
    assert_eq!((r.weight("blue"), r.weight("green")), (100, 0));
    assert_eq!(r.pool("green")["overridden"], false);
    assert_eq!(backend_now(&s), "blue");
}

#[test]
fn hundred_weight_changes_under_load() {
    let s = world(100, 0).start(BIN);
    let admin = s.admin();

    // Sequential requests on one keep-alive client for the whole test.
    let load = Load::start(&s.url("app.test", ""), 1, Duration::ZERO);

    // A second keep-alive client checks that each change applies to the very next requests.
    let probe = http1_client();
    for i in 0..100 {
        let (blue, green, expect) = if i % 2 == 0 {
            (0, 100, "green")
        } else {
            (100, 0, "blue")
        };
        let r = admin.put_weights("app", &format!(r#"{{"blue": {blue}, "green": {green}}}"#));
        assert_eq!(r.status, 200, "change {i}: {}", r.text);
        assert_eq!(r.generation(), i + 2);
        for _ in 0..3 {
            assert_eq!(
                backend_via(&probe, s.http(), "app.test"),
                expect,
                "after change {i}"
            );
        }
    }
    assert!(load.wait_for(50), "the load loop stalled");
    let seen = load.finish();
    let failed = failures(&seen);
    assert!(
        failed.is_empty(),
        "failed requests under load: {:?}",
        failed
    );
    assert!(
        seen.len() >= 50,
        "the load loop made only {} requests",
        seen.len()
    );
    assert_eq!(
        seen.iter()
            .map(|r| r.backend.clone())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["blue".to_string(), "green".to_string()]),
        "the load loop saw the weights change"
    );
    // The last change (i = 99) sent everything to blue; every new request goes there.
    for _ in 0..20 {
        assert_eq!(backend_via(&probe, s.http(), "app.test"), "blue");
    }
}

#[test]
fn overrides_survive_restart_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = world(100, 0).start_in(BIN, dir.path());
    let admin = s.admin();
    let r = admin.put_weights("app", r#"{"blue": 0, "green": 100}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(backend_now(&s), "green");
    let state = std::fs::read_to_string(dir.path().join("state/state.json")).unwrap();
    assert!(state.contains("green"), "state file: {state}");

    s.proxy.sigterm();
    assert!(
        s.proxy.wait_exit(Duration::from_secs(10)).is_some(),
        "proxy did not stop on SIGTERM"
    );

    // A new process on the same state dir starts with the override in force.
    s.restart(&s.config());
    let r = admin.get("/v1/services/app");
    assert_eq!(
        (r.weight("blue"), r.weight("green")),
        (0, 100),
        "{}",
        r.text
    );
    assert_eq!(r.pool("green")["overridden"], true);
    assert_eq!(r.pool("green")["config_weight"], 0);
    for _ in 0..10 {
        assert_eq!(backend_now(&s), "green");
    }

    // A reload that changes the config's weights keeps the override (SIGHUP, then the API).
    let g = admin.get("/health/ready").generation();
    let reweighted = weighted(&s, 70, 30);
    s.proxy.reload_with(&reweighted);
    assert!(
        wait_until(Duration::from_secs(10), || admin
            .get("/health/ready")
            .generation()
            > g),
        "the SIGHUP reload did not happen"
    );
    let r = admin.get("/v1/services/app");
    assert_eq!(
        (r.weight("blue"), r.weight("green")),
        (0, 100),
        "{}",
        r.text
    );
    assert_eq!(r.pool("blue")["config_weight"], 70);
    assert_eq!(admin.send("POST", "/v1/reload", None, &[]).status, 200);
    for _ in 0..10 {
        assert_eq!(backend_now(&s), "green");
    }

    // Clearing the overrides brings the file's weights back, and that is persisted too.
    let r = admin.send("DELETE", "/v1/services/app/weights", None, &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.weight("blue"), r.weight("green")), (70, 30));
    assert_eq!(r.pool("blue")["overridden"], false);
    s.proxy.sigterm();
    assert!(s.proxy.wait_exit(Duration::from_secs(10)).is_some());
    s.restart(&weighted(&s, 0, 100));
    let r = admin.get("/v1/services/app");
    assert_eq!(
        (r.weight("blue"), r.weight("green")),
        (0, 100),
        "{}",
        r.text
    );
    assert_eq!(r.pool("green")["overridden"], false);
}

#[test]
fn switch_is_refused_to_an_unhealthy_pool_and_applied_to_a_healthy_one() {
    let s = world(100, 0).start(BIN);
    let admin = s.admin();

    // One failed connect to the closed port ejects red's only server (round robin: the first
    // or the second request to red.test tries it).
    let client = http1_client();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = client.get(s.url("red.test", "/")).send().unwrap();
            admin.get("/v1/services/app").pool("red")["healthy_servers"] == 0
        }),
        "red's server was not ejected: {}",
        admin.get("/v1/services/app").text
    );
    let before = admin.get("/v1/services/app").generation();
    let r = admin.switch("app", "red");
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.error(),
        r#"pool "red" of service "app" has no healthy server; switch refused"#
    );
    let r = admin.get("/v1/services/app");
    assert_eq!(r.generation(), before, "a refused switch changes nothing");
    assert_eq!((r.weight("blue"), r.weight("red")), (100, 0));
    assert_eq!(backend_now(&s), "blue");

    assert_eq!(admin.switch("app", "purple").status, 404);
    assert_eq!(admin.switch("nope", "green").status, 404);

    let r = admin.switch("app", "green");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.generation(), before + 1);
    assert_eq!(
        (r.weight("blue"), r.weight("green"), r.weight("red")),
        (0, 100, 0)
    );
    let blue_before = s.backend("blue").requests();
    let client = http1_client();
    for _ in 0..30 {
        assert_eq!(backend_via(&client, s.http(), "app.test"), "green");
    }
    assert_eq!(
        s.backend("blue").requests(),
        blue_before,
        "the old pool got requests after the switch"
    );
}

#[test]
fn reload_through_the_api() {
    let s = world(100, 0).start(BIN);
    let proxy = &s.proxy;
    let admin = s.admin();
    let g = admin.get("/health/ready").generation();

    proxy.write_config(&weighted(&s, 0, 100));
    let r = admin.send("POST", "/v1/reload", None, &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "reloaded");
    assert_eq!(r.generation(), g + 1);
    assert_eq!(backend_now(&s), "green");
    assert!(
        proxy.wait_for_log("via the admin API", Duration::from_secs(5)),
        "{}",
        proxy.stderr()
    );

    // A bad file: 422 with every error as file:line:col, the same lines `check` prints.
    let bad = weighted(&s, 0, 100).replace("weight = 100", "weight = \"heavy\"");
    let text = proxy.write_config(&bad);
    let line = text.lines().position(|l| l.contains("\"heavy\"")).unwrap() + 1;
    let r = admin.send("POST", "/v1/reload", None, &[]);
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error(), "config rejected");
    assert_eq!(r.json["status"], 422);
    let errors: Vec<&str> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let prefix = format!("{}:{line}:", proxy.config_path().display());
    assert!(
        errors[0].starts_with(&prefix),
        "{errors:?} should start with {prefix}"
    );
    let check = BIN
        .command()
        .arg("check")
        .arg("--config")
        .arg(proxy.config_path())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let check_lines: Vec<String> = String::from_utf8_lossy(&check.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(errors, check_lines);

    // The previous config keeps serving.
    assert_eq!(admin.get("/health/ready").generation(), g + 1);
    assert_eq!(backend_now(&s), "green");
    assert!(
        proxy.wait_for_log("rejected", Duration::from_secs(5)),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn config_view_redacts_the_token() {
    let s = world(100, 0).start(BIN);
    let r = s.admin().get("/v1/config");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(TOKEN), "the token leaked: {}", r.text);
    assert_eq!(r.json["admin"]["token"], "<redacted>");
    assert_eq!(
        r.json["admin"]["address"],
        format!("127.0.0.1:{}", s.admin_port())
    );
    assert_eq!(
        r.json["listeners"][0]["address"],
        format!("127.0.0.1:{}", s.http())
    );
    let app = r.json["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|svc| svc["name"] == "app")
        .unwrap();
    assert_eq!(app["pools"][0]["name"], "blue");
    assert_eq!(app["pools"][0]["weight"], 100);
    assert_eq!(
        app["pools"][0]["servers"][0]["address"],
        s.backend("blue").addr.to_string()
    );
    let direct = r.json["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|svc| svc["name"] == "red-direct")
        .unwrap();
    assert_eq!(direct["passive"]["max_fails"], 1);
    assert_eq!(direct["passive"]["fail_timeout"], "60s");
    // Settings the hand-written view used to leave out.
    assert_eq!(app["rollout"]["interval"], "30s");
    assert_eq!(app["pool_override"], serde_json::Value::Null);
    assert_eq!(r.json["defaults"]["keepalive_timeout"], "75s");
    assert_eq!(r.json["routes"][0]["host"], "red.test");
    assert_eq!(r.json["routes"][0]["options"]["connect_timeout"], "30s");
    assert_eq!(r.json["generation"], 1);
}
