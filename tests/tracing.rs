//! Process logs and traces: JSON process-log lines with structured events, W3C trace context kept and continued upstream, and one OTLP span per request at a receiver that decodes with the official proto.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::*;

const BIN: Bin = testkit::bin!();

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// The process log's lines that are JSON objects.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

#[test]
fn the_json_process_log_carries_events_as_fields() {
    let mut w = World::blue_green()
        .server_option("log_format", "json")
        .admin_token("tracing-token-0123456789")
        .start(BIN);
    // A `log` record from start-up (bridged), as JSON.
    let started = wait_until(Duration::from_secs(10), || {
        json_lines(&w.proxy.stderr())
            .iter()
            .any(|l| l["message"].as_str().unwrap_or("").contains("serving"))
    });
    assert!(started, "no JSON start-up line:\n{}", w.proxy.stderr());

    let config = w.proxy.config();
    w.proxy.reload_with(&config);
    let mut reload = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            reload = json_lines(&w.proxy.stderr())
                .into_iter()
                .find(|l| l["event"] == "reload")
                .unwrap_or(Value::Null);
            !reload.is_null()
        }),
        "no reload event:\n{}",
        w.proxy.stderr()
    );
    assert_eq!(reload["result"], "ok", "{reload}");
    assert_eq!(reload["by"], "SIGHUP", "{reload}");
    assert_eq!(reload["generation"], 2, "{reload}");
    assert_eq!(reload["level"], "INFO", "{reload}");
    assert_eq!(reload["target"], "switchyard::runtime", "{reload}");

    // A rollout's start is an event with the service and the step as fields.
    let admin = w.admin();
    let started = admin.send(
        "POST",
        "/v1/services/api/rollouts",
        Some(&json!({"canary": "green"}).to_string()),
        &[],
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let mut event = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            event = json_lines(&w.proxy.stderr())
                .into_iter()
                .find(|l| l["target"] == "switchyard::rollout" && l["event"] == "started")
                .unwrap_or(Value::Null);
            !event.is_null()
        }),
        "no rollout event:\n{}",
        w.proxy.stderr()
    );
    assert_eq!(event["service"], "api", "{event}");
    assert_eq!(event["step"], 0, "{event}");
    assert!(event["canary_weight"].is_u64(), "{event}");
}

#[test]
fn a_bad_log_format_is_a_config_error() {
    let config = World::new()
        .catch_all_blue()
        .server_option("log_format", "yaml")
        .config();
    let (code, _, stderr) = check(BIN, &config);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("log_format must be \"text\" or \"json\""),
        "{stderr}"
    );
}

/// The backend's view of the `traceparent` it got, and the access log's trace id, for a
/// request to `path` (a path of its own, so its log line is told from the others).
fn traced_request(w: &Running, path: &str, traceparent: Option<&str>) -> (String, String) {
    let mut req = http1_client().get(w.url("127.0.0.1", path));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let body = json_body(req.send().unwrap());
    let upstream = body["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {body}"))
        .to_string();
    let mut logged = String::new();
    assert!(wait_until(Duration::from_secs(10), || {
        logged = w
            .proxy
            .access_log()
            .iter()
            .rev()
            .find(|l| l["path"] == path)
            .map(|l| l["trace_id"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        !logged.is_empty()
    }));
    (upstream, logged)
}

#[test]
fn trace_context_is_kept_or_started_and_logged() {
    let w = World::new().catch_all_blue().start(BIN);
    let (upstream, logged) = traced_request(&w, "/traced", Some(&traceparent()));
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], CLIENT_TRACE, "the client's trace continues");
    assert_ne!(parts[2], CLIENT_SPAN, "a new span id for the hop");
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01");
    assert_eq!(logged, CLIENT_TRACE);

    // None sent (or an invalid one): a new trace, the same id upstream and in the log.
    for (path, sent) in [
        ("/new", None),
        ("/invalid", Some("00-zz-00f067aa0ba902b7-01")),
    ] {
        let (upstream, logged) = traced_request(&w, path, sent);
        let parts: Vec<&str> = upstream.split('-').collect();
        assert_eq!(parts.len(), 4, "{upstream}");
        assert_eq!(parts[1].len(), 32);
        assert_ne!(parts[1], "0".repeat(32));
        assert_ne!(parts[1], CLIENT_TRACE);
        assert_eq!(logged, parts[1]);
    }
}

/// The test OTLP receiver (`peers/otlp_receiver.py`), killed on drop.
struct Receiver {
    port: u16,
    out: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.jsonl");
        let port = testkit::port();
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/crates/testkit/peers/otlp_receiver.py"
            ))
            .arg(port.to_string())
            .arg(&out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the OTLP receiver (scripts/test.sh installs opentelemetry-proto)");
        let mut r = Receiver {
            port,
            out,
            child,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                || r.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && r.child.try_wait().ok().flatten().is_none(),
            "the OTLP receiver did not start (python3 with opentelemetry-proto?)"
        );
        r
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An attribute's value in protobuf's JSON mapping (`{"stringValue": ...}` / `{"intValue": "200"}`).
fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            v.get("stringValue")
                .or_else(|| v.get("intValue"))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .unwrap_or(Value::Null)
}

#[test]
fn one_span_per_request_reaches_an_otlp_receiver() {
    let receiver = Receiver::start();
    let w = World::new()
        .catch_all_blue()
        .toml(&format!(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\nservice_name = \"edge-test\"\nexport_interval = \"100ms\"\n",
            receiver.port
        ))
        .start(BIN);
    let (upstream, _) = traced_request(&w, "/traced", Some(&traceparent()));
    let our_span = upstream.split('-').nth(2).unwrap().to_string();
    let mut span = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            span = receiver
                .spans()
                .into_iter()
                .find(|s| s["traceId"] == CLIENT_TRACE)
                .unwrap_or(Value::Null);
            !span.is_null()
        }),
        "no span at the receiver; proxy log:\n{}",
        w.proxy.stderr()
    );
    assert_eq!(span["spanId"], our_span.as_str(), "{span}");
    assert_eq!(span["parentSpanId"], CLIENT_SPAN, "{span}");
    assert_eq!(span["kind"], "SPAN_KIND_SERVER", "{span}");
    assert_eq!(attribute(&span, "http.request.method"), "GET");
    assert_eq!(attribute(&span, "url.path"), "/traced");
    assert_eq!(attribute(&span, "http.response.status_code"), "200");
    assert_eq!(attribute(&span, "switchyard.pool"), "blue");
    let start: u64 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(end >= start && start > 1_600_000_000_000_000_000, "{span}");
    assert!(
        span.get("status").is_none_or(|s| s.get("code").is_none()),
        "{span}"
    );
    let service = &span["resource"]["attributes"];
    assert!(
        service.to_string().contains("edge-test"),
        "service.name: {service}"
    );
}

#[test]
fn an_unreachable_otlp_endpoint_is_logged_and_serving_goes_on() {
    let w = World::new()
        .catch_all_blue()
        .toml(&format!(
            "[tracing]\notlp_endpoint = \"http://{}/v1/traces\"\nexport_interval = \"100ms\"\n",
            closed_addr()
        ))
        .start(BIN);
    let (upstream, _) = traced_request(&w, "/traced", None);
    assert!(!upstream.is_empty());
    assert!(
        w.proxy.wait_for_log(
            "span(s) dropped: cannot reach the OTLP endpoint",
            Duration::from_secs(20)
        ),
        "{}",
        w.proxy.stderr()
    );
}
