//! Canary rollouts over real sockets: rolled back on errors and latency, promoted through every
//! step, held without traffic, resumed after a crash, owning the weights, sticky, shielded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::*;

const BIN: Bin = testkit::bin!();

const TOKEN: &str = "rollout-token-0123456789";

/// Service "api": `blue` (stable, weight 100) and `green` (canary, weight 0), over plain HTTP and
/// TLS, with the admin API; `extra` settings (rollout defaults, sticky, pool_override) are added
/// to the service.
fn world(blue: Backend, green: Backend, extra: &str) -> Running {
    World::new()
        .https()
        .fallback_certificate("example.com")
        .with_backend("blue", blue)
        .with_backend("green", green)
        .route("*", "api")
        .pool("api", "blue", 100, &["blue"])
        .pool("api", "green", 0, &["green"])
        .toml(extra)
        .admin_token(TOKEN)
        .start(BIN)
}

/// A load loop on service "api" that has made its first requests.
fn start_load(s: &Running, clients: usize, pause: Duration) -> Load {
    let load = Load::start(&s.url("api.test", ""), clients, pause);
    assert!(load.wait_for(1), "the load loop made no request");
    load
}

fn start_rollout(admin: &Admin, body: Value) -> AdminReply {
    admin.send(
        "POST",
        "/v1/services/api/rollouts",
        Some(&body.to_string()),
        &[],
    )
}

fn current(admin: &Admin) -> Value {
    let reply = admin.get("/v1/services/api/rollouts/current");
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

/// Waits until the current rollout is in `state`; returns its view.
fn wait_state(admin: &Admin, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(timeout, || {
        last = current(admin);
        last["state"] == state
    });
    assert!(
        reached,
        "rollout did not reach {state} in {timeout:?}: {last:#}"
    );
    last
}

fn events(admin: &Admin) -> Vec<Value> {
    let reply = admin.get("/v1/services/api/rollouts/current/events");
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["events"].as_array().cloned().unwrap_or_default()
}

fn event_names(admin: &Admin) -> Vec<String> {
    events(admin)
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_failing_canary_is_rolled_back_and_no_client_request_fails() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::builder("green")
        .fail_ratio(0.5)
        .spawn()
        .expect("backend");
    let s = world(blue, green, "");
    let admin = s.admin();
    let load = start_load(&s, 1, Duration::from_millis(5));
    assert!(load.wait_for(20), "the load loop is slow to start");
    let started = start_rollout(
        &admin,
        json!({"canary": "green", "steps": [20, 50, 100], "interval": "10s", "min_requests": 10}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    assert_eq!(started.json["state"], "progressing");
    assert_eq!(started.json["stable"], "blue", "the heaviest other pool");
    assert_eq!(started.json["canary_weight"], 20);
    let ended = wait_state(&admin, "rolled_back", Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(300));
    let seen = load.finish();

    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error rate"), "{ended:#}");
    assert_eq!(ended["canary_weight"], 0);
    assert!(s.backend("green").requests() > 0, "the canary got traffic");
    let bad = failures(&seen);
    assert!(
        bad.is_empty(),
        "{} of {} idempotent requests failed: {:?}",
        bad.len(),
        seen.len(),
        &bad[..bad.len().min(5)]
    );
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (100, 0));

    let names = event_names(&admin);
    assert_eq!(names.first().map(String::as_str), Some("started"));
    assert_eq!(names.last().map(String::as_str), Some("rolled_back"));
    let last = events(&admin).pop().expect("an event");
    assert_eq!(last["reason"], "error_rate");
    assert!(last["errors"].as_u64().unwrap_or(0) >= 1, "{last}");

    let metrics = admin.get("/metrics").text;
    let rollbacks = metric(
        &metrics,
        "switchyard_rollout_rollbacks_total",
        &[("service", "api"), ("reason", "error_rate")],
    );
    assert_eq!(rollbacks, Some(1.0), "{metrics}");
    let shielded = metric(
        &metrics,
        "switchyard_rollout_shielded_requests_total",
        &[("service", "api"), ("canary", "green")],
    );
    assert!(shielded.unwrap_or(0.0) >= 1.0, "shielded: {shielded:?}");
    assert_eq!(
        metric(
            &metrics,
            "switchyard_rollout_state",
            &[("service", "api"), ("kind", "rollout")]
        ),
        Some(4.0)
    );
}

#[test]
fn a_healthy_canary_is_promoted_through_every_step() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let extra =
        "[services.api.rollout]\nsteps = [10, 50, 100]\ninterval = \"400ms\"\nmin_requests = 3\n";
    let s = world(blue, green, extra);
    let admin = s.admin();
    let load = start_load(&s, 1, Duration::from_millis(5));
    let started = start_rollout(&admin, json!({"canary": "green"}));
    assert_eq!(started.status, 201, "{}", started.text);
    assert_eq!(
        started.json["steps"],
        json!([10, 50, 100]),
        "the service's defaults"
    );
    let ended = wait_state(&admin, "promoted", Duration::from_secs(10));
    let seen = load.finish();
    assert!(failures(&seen).is_empty());
    assert_eq!(ended["canary_weight"], 100);
    let weights: Vec<u64> = events(&admin)
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["canary_weight"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(weights, vec![50, 100], "every step, in order");
    assert_eq!(
        event_names(&admin).last().map(String::as_str),
        Some("promoted")
    );
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (0, 100));
    // All traffic on green now.
    let client = http1_client();
    for _ in 0..5 {
        assert_eq!(backend_via(&client, s.http(), "api.test"), "green");
    }
}

#[test]
fn a_latency_breach_rolls_back() {
    let blue = Backend::spawn("blue").expect("backend");
    let slow = Backend::builder("slow")
        .delay(Duration::from_millis(150))
        .spawn()
        .expect("backend");
    let s = world(blue, slow, "");
    let admin = s.admin();
    let load = start_load(&s, 1, Duration::from_millis(2));
    let started = start_rollout(
        &admin,
        json!({"canary": "green", "steps": [50, 100], "interval": "30s",
               "max_p99": "50ms", "min_requests": 5}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let ended = wait_state(&admin, "rolled_back", Duration::from_secs(10));
    let seen = load.finish();
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("p99"), "{ended:#}");
    assert_eq!(
        events(&admin).last().map(|e| e["reason"].clone()),
        Some(json!("latency"))
    );
    assert!(failures(&seen).is_empty(), "slow is not failed");
}

#[test]
fn low_traffic_holds_the_step() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let s = world(blue, green, "");
    let admin = s.admin();
    let started = start_rollout(
        &admin,
        json!({"canary": "green", "steps": [50, 100], "interval": "300ms", "min_requests": 50}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let client = http1_client();
    for _ in 0..6 {
        backend_via(&client, s.http(), "api.test");
    }
    let mut view = Value::Null;
    let held = wait_until(Duration::from_secs(5), || {
        view = current(&admin);
        view["holding"].is_string()
    });
    assert!(held, "{view:#}");
    // Time itself (nothing to wait on): over two more intervals without traffic, the step
    // neither advances nor reports its hold again.
    std::thread::sleep(Duration::from_millis(700));
    let view = current(&admin);
    assert_eq!(view["state"], "progressing");
    assert_eq!(view["step"], 0, "never advances blindly");
    assert!(
        view["holding"]
            .as_str()
            .unwrap_or_default()
            .contains("until the canary serves 50 requests"),
        "{view:#}"
    );
    let names = event_names(&admin);
    assert_eq!(
        names.iter().filter(|n| *n == "held").count(),
        1,
        "a hold is reported once: {names:?}"
    );
}

#[test]
fn a_restart_mid_rollout_resumes_it() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let extra =
        "[services.api.rollout]\nsteps = [10, 50, 100]\ninterval = \"500ms\"\nmin_requests = 30\n";
    let mut s = world(blue, green, extra);
    let admin = s.admin();
    let load = start_load(&s, 1, Duration::from_millis(2));
    assert_eq!(
        start_rollout(&admin, json!({"canary": "green"})).status,
        201
    );
    let mut view = Value::Null;
    let stepped = wait_until(Duration::from_secs(10), || {
        view = current(&admin);
        view["step"] == 1
    });
    // Few requests in the new step now: it holds until the restart.
    load.finish();
    assert!(stepped, "{view:#}");
    let before = current(&admin);
    assert_eq!(before["step"], 1, "{before:#}");
    s.proxy.signal("KILL");
    assert!(s.proxy.wait_exit(Duration::from_secs(5)).is_some());

    s.restart(&s.config());
    let after = current(&admin);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["state"], "progressing", "{after:#}");
    assert_eq!(after["step"], 1);
    assert_eq!(after["canary_weight"], 50);
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (50, 50));
    assert_eq!(
        event_names(&admin).last().map(String::as_str),
        Some("restarted")
    );
    // And it goes on to the end.
    let load = start_load(&s, 1, Duration::from_millis(2));
    wait_state(&admin, "promoted", Duration::from_secs(10));
    assert!(failures(&load.finish()).is_empty());
}

#[test]
fn the_rollout_owns_the_weights() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let s = world(blue, green, "");
    let admin = s.admin();
    let started = start_rollout(&admin, json!({"canary": "green", "interval": "1h"}));
    assert_eq!(started.status, 201, "{}", started.text);
    let again = start_rollout(&admin, json!({"canary": "green"}));
    assert_eq!(again.status, 409, "one rollout at a time: {}", again.text);

    for refused in [
        admin.put_weights("api", r#"{"green": 100}"#),
        admin.switch("api", "green"),
        admin.send("DELETE", "/v1/services/api/weights", None, &[]),
    ] {
        assert_eq!(refused.status, 409, "{}", refused.text);
        assert!(refused.error().contains("rollout"), "{}", refused.text);
        assert_eq!(refused.json["rollout"], started.json["id"]);
    }
    assert_eq!(current(&admin)["state"], "progressing");
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (99, 1));

    let forced = admin.send(
        "PUT",
        "/v1/services/api/weights?force=true",
        Some(r#"{"blue": 30, "green": 70}"#),
        &[],
    );
    assert_eq!(forced.status, 200, "{}", forced.text);
    assert_eq!((forced.weight("blue"), forced.weight("green")), (30, 70));
    let view = current(&admin);
    assert_eq!(view["state"], "aborted");
    assert!(
        view["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("forced"),
        "{view:#}"
    );
    let nothing = admin.send("POST", "/v1/services/api/rollouts/current/pause", None, &[]);
    assert_eq!(nothing.status, 409, "{}", nothing.text);
}

#[test]
fn pause_resume_promote_and_abort() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let s = world(blue, green, "");
    let admin = s.admin();
    let act = |action: &str| {
        admin.send(
            "POST",
            &format!("/v1/services/api/rollouts/current/{action}"),
            None,
            &[],
        )
    };
    assert_eq!(act("pause").status, 409, "no active rollout yet");
    let body = json!({"canary": "green", "steps": [25, 100], "interval": "1h"});
    assert_eq!(start_rollout(&admin, body.clone()).status, 201);
    let paused = act("pause");
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json["state"], "paused");
    assert_eq!(
        paused.json["canary_weight"], 25,
        "a pause keeps the weights"
    );
    assert_eq!(act("resume").json["state"], "progressing");
    let promoted = act("promote");
    assert_eq!(promoted.json["state"], "promoted");
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (0, 100));

    // Green is the stable pool now; roll blue out and abort it.
    let back = json!({"canary": "blue", "steps": [25, 100], "interval": "1h"});
    let started = start_rollout(&admin, back);
    assert_eq!(started.status, 201, "{}", started.text);
    assert_eq!(started.json["stable"], "green");
    let aborted = act("abort");
    assert_eq!(aborted.json["state"], "aborted");
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (0, 100));
    let names = event_names(&admin);
    for want in ["started", "paused", "resumed", "promoted", "aborted"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }

    // Bad input is refused with a JSON error saying what.
    for (bad, status, says) in [
        (json!({"canary": "red"}), 404, "red"),
        (
            json!({"canary": "blue", "steps": [50, 20]}),
            400,
            "ascending",
        ),
        (
            json!({"canary": "blue", "steps": [10, 50]}),
            400,
            "end at 100",
        ),
        (
            json!({"canary": "blue", "max_error_rate": 2}),
            400,
            "between 0 and 1",
        ),
        (
            json!({"canary": "blue", "interval": "soon"}),
            400,
            "interval",
        ),
        (json!({"canary": "green"}), 400, "name the stable pool"),
        (json!({"canary": "green", "stable": "green"}), 400, "both"),
    ] {
        let reply = start_rollout(&admin, bad.clone());
        assert_eq!(reply.status, status, "{bad}: {}", reply.text);
        assert!(reply.error().contains(says), "{bad}: {}", reply.text);
    }
}

#[test]
fn sticky_clients_only_move_from_stable_to_canary() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let extra = "[services.api.sticky]\nkey = \"header:X-User\"\n\n\
                 [services.api.rollout]\nsteps = [10, 30, 60, 100]\ninterval = \"500ms\"\nmin_requests = 1\n";
    let s = world(blue, green, extra);
    let admin = s.admin();
    let users = 60;
    let load = start_load(&s, users, Duration::from_millis(1));
    // Every user has been served (by the stable pool) before the rollout starts.
    assert!(load.wait_for(users), "the load loop is slow to start");
    assert_eq!(
        start_rollout(&admin, json!({"canary": "green"})).status,
        201
    );
    wait_state(&admin, "promoted", Duration::from_secs(15));
    // Every user makes a request after the promotion (the users take turns; the first request
    // to finish may have been sent before it).
    let promoted_at = load.count();
    assert!(
        load.wait_for(promoted_at + users + 1),
        "the load loop stalled after the promotion"
    );
    let seen = load.finish();
    assert!(failures(&seen).is_empty());
    let mut by_user: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for s in &seen {
        by_user.entry(s.client).or_default().push(&s.backend);
    }
    let mut moved = 0;
    for (user, pools) in &by_user {
        if let Some(first_green) = pools.iter().position(|p| *p == "green") {
            assert!(
                pools[first_green..].iter().all(|p| *p == "green"),
                "user {user} went back from canary to stable: {pools:?}"
            );
            if first_green > 0 {
                moved += 1;
            }
        }
        assert_eq!(pools.last(), Some(&"green"), "everyone ends on the canary");
    }
    assert!(
        moved >= users / 2,
        "most users moved from blue to green during the rollout ({moved} of {users})"
    );
}

#[test]
fn a_sticky_cookie_and_a_tester_override() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::spawn("green").expect("backend");
    let extra = "[services.api.sticky]\nkey = \"cookie\"\n\n\
                 [services.api.pool_override]\nheader = \"X-Pool\"\nsecret = \"s3cret\"\n";
    let s = world(blue, green, extra);
    let client = http1_client();
    let url = s.url("api.test", "/c");
    let first = client.get(&url).send().expect("request");
    let cookie = header(&first, "set-cookie");
    assert!(cookie.starts_with("switchyard_id="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let id = cookie.split(';').next().unwrap_or_default().to_string();
    let again = client
        .get(&url)
        .header("cookie", &id)
        .send()
        .expect("request");
    assert!(
        again.headers().get("set-cookie").is_none(),
        "a known client keeps its id"
    );

    let pool_with = |value: &str| -> String {
        let resp = client
            .get(&url)
            .header("x-pool", value)
            .send()
            .expect("request");
        json_body(resp)["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        pool_with("green:s3cret"),
        "green",
        "forced onto a weight-0 pool"
    );
    assert_eq!(
        pool_with("green:wrong"),
        "blue",
        "a wrong secret is ignored"
    );
    assert_eq!(pool_with("green"), "blue", "no secret, no override");
}

#[test]
fn a_watched_switch_goes_back_on_a_breach() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::builder("green")
        .fail_ratio(0.5)
        .spawn()
        .expect("backend");
    let extra = "[services.api.rollout]\nmin_requests = 10\n";
    let s = world(blue, green, extra);
    let admin = s.admin();
    let load = start_load(&s, 1, Duration::from_millis(5));
    let switched = admin.send(
        "POST",
        "/v1/services/api/switch",
        Some(r#"{"to": "green", "watch": "20s"}"#),
        &[],
    );
    assert_eq!(switched.status, 200, "{}", switched.text);
    assert_eq!(switched.json["rollout"]["kind"], "switch");
    assert_eq!(switched.json["rollout"]["stable"], "blue");
    let ended = wait_state(&admin, "rolled_back", Duration::from_secs(8));
    let seen = load.finish();
    assert!(ended["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("blue"));
    let svc = admin.get("/v1/services/api");
    assert_eq!((svc.weight("blue"), svc.weight("green")), (100, 0));
    let bad = failures(&seen);
    assert!(
        bad.is_empty(),
        "{} failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn shielding_retries_idempotent_requests_on_stable_over_h1_and_h2() {
    let blue = Backend::spawn("blue").expect("backend");
    let green = Backend::builder("green")
        .fail_ratio(1.0)
        .spawn()
        .expect("backend");
    let s = world(blue, green, "");
    let admin = s.admin();
    // A canary that fails everything but is never judged bad (rate above 1 is impossible).
    let started = start_rollout(
        &admin,
        json!({"canary": "green", "steps": [50, 100], "interval": "1h", "max_error_rate": 1.0}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let plain = s.url("api.test", "/shield");
    let tls = format!("https://api.example.com:{}/shield", s.https());
    for (client, url, version) in [
        (http1_client(), &plain, reqwest::Version::HTTP_11),
        (https_client(), &tls, reqwest::Version::HTTP_2),
    ] {
        for _ in 0..20 {
            let resp = client.get(url).send().expect("GET");
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), version);
            assert_eq!(json_body(resp)["backend"], "blue");
        }
        let head = client.head(url).send().expect("HEAD");
        assert_eq!(head.status(), 200);
    }
    // Every idempotent request the canary got was shielded (it fails all of them).
    let tried = s.backend("green").requests();
    assert!(tried >= 5, "the canary was tried first ({tried} of 42)");
    let url = plain;
    // POST is not in shield_methods: about half go to the failing canary and fail.
    let client = http1_client();
    let failed = (0..20)
        .filter(|_| {
            let resp = client.post(&url).body("x").send().expect("POST");
            resp.status().is_server_error()
        })
        .count();
    assert!(failed > 0, "POST must not be retried on stable");
    let metrics = admin.get("/metrics").text;
    let shielded = metric(
        &metrics,
        "switchyard_rollout_shielded_requests_total",
        &[("service", "api"), ("canary", "green")],
    )
    .unwrap_or(0.0);
    assert_eq!(
        shielded, tried as f64,
        "each failed GET/HEAD on the canary was shielded"
    );
    let svc = admin.get("/v1/services/api");
    let live = &svc.pool("green")["live"];
    assert!(
        live["errors"].as_f64().unwrap_or(0.0) >= shielded,
        "shielded failures count against the canary: {live}"
    );
}
