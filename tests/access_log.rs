//! The access log's formats over real requests: JSON with every field, nginx's `combined`, a
//! template of nginx variables (changed by a reload), `access_log = false` on a route, and the
//! `retried` flag of a shielded canary request answered by the stable pool.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::Duration;

use serde_json::{json, Value};
use testkit::*;

const BIN: Bin = testkit::bin!();

/// Every host to backend "blue" over plain HTTP and TLS; `health.test` without log lines;
/// `format` as `access_log_format` when given.
fn world(format: Option<&str>) -> World {
    let w = World::new()
        .https()
        .fallback_certificate("example.com")
        .catch_all_blue()
        .route_with(Route::new("health.test", "api").set("access_log", false));
    match format {
        Some(f) => w.server_option("access_log_format", f),
        None => w,
    }
}

/// The raw access-log lines so far.
fn lines(s: &Running) -> Vec<String> {
    std::fs::read_to_string(s.proxy.access_log_path())
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits for the line containing `needle`.
fn line_with(s: &Running, needle: &str) -> String {
    let mut found = None;
    let appeared = wait_until(Duration::from_secs(5), || {
        found = lines(s).into_iter().find(|l| l.contains(needle));
        found.is_some()
    });
    assert!(
        appeared,
        "no access log line with {needle:?}; log:\n{}",
        lines(s).join("\n")
    );
    found.unwrap()
}

/// Whether a JSON number is written with at most 3 decimals.
fn three_decimals(line: &str, field: &str) -> bool {
    let at = line.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
    let number: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '-')
        .collect();
    number.split_once('.').is_none_or(|(_, d)| d.len() <= 3)
}

#[test]
fn json_has_every_field() {
    let s = world(None).start(BIN);
    let resp = http1_client()
        .post(s.url("log.example.com", "/json?x=1"))
        .header("X-Request-Id", "json-plain-1")
        .header("Referer", "https://from.example/page")
        .header("User-Agent", "probe/1.0")
        .header("X-Forwarded-For", "9.9.9.9")
        .body("0123456789")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = line_with(&s, "json-plain-1");
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["referer"], "https://from.example/page");
    assert_eq!(e["user_agent"], "probe/1.0");
    assert_eq!(e["forwarded_for"], "9.9.9.9");
    assert_eq!(e["tls_version"], Value::Null);
    assert_eq!(e["tries"], 1);
    assert_eq!(e["retried"], false);
    assert_eq!(e["pool"], "blue");
    assert_eq!(e["status"], 200);
    assert!(e["bytes"].as_u64().unwrap() > 0);
    // The head as text plus the 10 body bytes.
    let request_bytes = e["request_bytes"].as_u64().unwrap();
    assert!((60..2000).contains(&request_bytes), "{request_bytes}");
    for field in [
        "duration_ms",
        "upstream_ms",
        "upstream_connect_ms",
        "upstream_header_ms",
        "upstream_response_ms",
    ] {
        assert!(e[field].as_f64().unwrap() >= 0.0, "{field} in {line}");
        assert!(three_decimals(&line, field), "{field} in {line}");
    }
    assert!(e["upstream_connect_ms"].as_f64() <= e["upstream_header_ms"].as_f64());
    assert!(e["upstream_header_ms"].as_f64() <= e["duration_ms"].as_f64());
    // Today's fields are kept.
    for field in [
        "time",
        "client_ip",
        "method",
        "host",
        "path",
        "uri",
        "route",
        "service",
    ] {
        assert!(!e[field].is_null(), "{field} in {line}");
    }

    // Over TLS (h2 with reqwest): the version; a request that reached no upstream: nulls.
    let resp = https_client()
        .get(format!("https://log.example.com:{}/tls", s.https()))
        .header("X-Request-Id", "json-tls-1")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e: Value = serde_json::from_str(&line_with(&s, "json-tls-1")).unwrap();
    assert_eq!(e["tls_version"], "TLSv1.3");
    assert_eq!(e["protocol"], "h2");
    assert_eq!(e["referer"], Value::Null);
}

#[test]
fn combined_then_a_template_after_reload() {
    let mut s = world(Some("combined")).start(BIN);
    let resp = http1_client()
        .get(s.url("log.example.com", "/combined-1?q=a%20b"))
        .basic_auth("alice", Some("secret"))
        .header("Referer", "http://ref.example/")
        .header("User-Agent", "agent \"quoted\"")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = line_with(&s, "/combined-1");
    // 127.0.0.1 - alice [29/Nov/2026:14:28:55 +0000] "GET /combined-1?q=a%20b HTTP/1.1" 200 N "http://ref.example/" "agent \x22quoted\x22"
    let (head, rest) = line.split_once(" [").unwrap();
    assert_eq!(head, "127.0.0.1 - alice");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), "29/Nov/2026:14:28:55 +0000".len(), "{time}");
    assert!(
        time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "{time}"
    );
    let (request, rest) = rest.strip_prefix('"').unwrap().split_once("\" ").unwrap();
    assert_eq!(request, "GET /combined-1?q=a%20b HTTP/1.1");
    let mut words = rest.splitn(3, ' ');
    assert_eq!(words.next(), Some("200"));
    let bytes: u64 = words.next().unwrap().parse().unwrap();
    assert!(bytes > 0);
    assert_eq!(
        words.next(),
        Some(r#""http://ref.example/" "agent \x22quoted\x22""#)
    );
    // Without a user or a referer: `-`.
    http1_client()
        .get(s.url("log.example.com", "/combined-2"))
        .send()
        .unwrap();
    let line = line_with(&s, "/combined-2");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains(" \"-\" "), "{line}");

    // A template; the reload changes the format of the next lines.
    let template = r#"id=$request_id st=$status pool=$pool tries=$tries rt=$request_time ut=$upstream_response_time uc=$upstream_connect_time ua=$upstream_addr uri=$uri m=$request_method xff="$http_x_forwarded_for" h=$host t=$time_iso8601"#;
    let config = s.config_with(|w| w.server_option("access_log_format", template));
    s.proxy.reload_with(&config);
    let client = http1_client();
    let mut n = 0;
    let reloaded = wait_until(Duration::from_secs(5), || {
        n += 1;
        let id = format!("tmpl-{n}");
        client
            .get(s.url("log.example.com", "/a//b/../tmpl"))
            .header("X-Request-Id", &id)
            .header("X-Forwarded-For", "7.7.7.7")
            .send()
            .unwrap();
        lines(&s).iter().any(|l| l.starts_with("id=tmpl-"))
    });
    assert!(
        reloaded,
        "no template line after reload:\n{}",
        lines(&s).join("\n")
    );
    let line = line_with(&s, "id=tmpl-");
    let field = |name: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .to_string()
    };
    assert_eq!(field("st"), "200");
    assert_eq!(field("pool"), "blue");
    assert_eq!(field("tries"), "1");
    assert_eq!(field("ua"), s.addr("blue"));
    assert_eq!(field("uri"), "/a/tmpl");
    assert_eq!(field("m"), "GET");
    assert_eq!(field("xff"), "\"7.7.7.7\"");
    assert!(field("h").starts_with("log.example.com"));
    assert!(field("t").ends_with("+00:00") && field("t").contains('T'));
    // Seconds with 3 decimals, as nginx writes them.
    for name in ["rt", "ut", "uc"] {
        let v = field(name);
        let (whole, decimals) = v.split_once('.').unwrap_or_else(|| panic!("{name}={v}"));
        assert!(
            whole.parse::<u64>().is_ok() && decimals.len() == 3,
            "{name}={v}"
        );
    }
}

#[test]
fn an_unknown_variable_is_a_config_error_with_its_column() {
    let config = World::new()
        .catch_all_blue()
        .server_option("access_log_format", "$remote_addr $bogus_var")
        .config();
    let (code, _, err) = check(BIN, &config);
    assert_ne!(code, 0);
    let line = config
        .lines()
        .position(|l| l.contains("$bogus_var"))
        .unwrap()
        + 1;
    let col = config
        .lines()
        .nth(line - 1)
        .unwrap()
        .find("$bogus_var")
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            ":{line}:{col}: unknown access log variable $bogus_var"
        )),
        "{err}"
    );
}

#[test]
fn a_route_without_access_log_writes_no_line() {
    let s = world(None).start(BIN);
    let client = http1_client();
    for i in 0..3 {
        let resp = client
            .get(s.url("health.test", "/healthz"))
            .header("X-Request-Id", format!("health-{i}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    client
        .get(s.url("log.example.com", "/after"))
        .header("X-Request-Id", "after-health")
        .send()
        .unwrap();
    // Lines are written in order: once the later one is there, the earlier ones would be too.
    line_with(&s, "after-health");
    let all = lines(&s);
    assert!(
        !all.iter().any(|l| l.contains("health-")),
        "health checks logged:\n{}",
        all.join("\n")
    );
}

#[test]
fn a_shielded_canary_request_answered_by_stable_is_marked_retried() {
    let blue = Backend::spawn("blue").unwrap();
    let green = Backend::builder("green").fail_ratio(1.0).spawn().unwrap();
    let s = World::new()
        .with_backend("blue", blue)
        .with_backend("green", green)
        .route("*", "api")
        .pool("api", "blue", 100, &["blue"])
        .pool("api", "green", 0, &["green"])
        .admin_token("access-log-token-0123456789")
        .start(BIN);
    let started = s.admin().send(
        "POST",
        "/v1/services/api/rollouts",
        Some(
            &json!({"canary": "green", "steps": [50, 100], "interval": "1h", "max_error_rate": 1.0})
                .to_string(),
        ),
        &[],
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let client = http1_client();
    let mut i = 0;
    let shielded = wait_until(Duration::from_secs(10), || {
        i += 1;
        let resp = client
            .get(s.url("api.test", "/shield"))
            .header("X-Request-Id", format!("shield-{i}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        s.backend("green").requests() > 0
    });
    assert!(shielded, "the canary never got a request");
    let line = line_with(&s, &format!("\"shield-{i}\""));
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["retried"], true, "{line}");
    assert_eq!(e["pool"], "blue", "{line}");
    assert_eq!(e["status"], 200);
    assert_eq!(
        e["tries"], 2,
        "the canary's try and the stable pool's: {line}"
    );
    // A request that stayed on stable is not marked.
    let plain: Vec<Value> = s
        .proxy
        .access_log()
        .into_iter()
        .filter(|e| e["retried"] == false)
        .collect();
    assert!(
        plain.iter().all(|e| e["pool"] == "blue" && e["tries"] == 1),
        "{plain:?}"
    );
}
