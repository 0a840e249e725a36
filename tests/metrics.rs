//! Prometheus metrics over real sockets: `/metrics` on the admin listener after real proxied
//! requests, the alert rules checked and unit-tested by the real `promtool`, and a real Prometheus
//! server scraping Switchyard and answering PromQL through its HTTP API.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (scripts/test.sh installs
//! it). When missing, the test fails with what to install; it never skips.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// The checked-in alert rules.
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus/alerts.yml");
/// The checked-in Grafana dashboard.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/prometheus/grafana-dashboard.json"
);

/// Service "api" (host api.test): blue is a live backend, green has weight 0. Service "mixed"
/// (mixed.test): one dead and one live server, so connect failures are retried on the live one,
/// and the dead one is ejected after one failure. Service "down" (down.test): its only server is
/// a closed port, which passive checks never eject (it is the last server able to take the
/// traffic). Service "checked": its only server is a closed port its active check takes out.
fn setup() -> Running {
    World::new()
        .backend("blue")
        .backend("green")
        .dead("dead_a")
        .dead("dead_b")
        .dead("dead_c")
        .route("api.test", "api")
        .route("mixed.test", "mixed")
        .route("down.test", "down")
        .route("checked.test", "checked")
        .pool("api", "blue", 100, &["blue"])
        .pool("api", "green", 0, &["green"])
        .passive("mixed", 1, "5m")
        .pool("mixed", "main", 1, &["dead_a", "blue"])
        .toml("[services.checked.health]\npath = \"/health\"\ninterval = \"1s\"")
        .pool("checked", "only", 1, &["dead_c"])
        .passive("down", 1, "5m")
        .pool("down", "only", 1, &["dead_b"])
        .admin()
        .start(BIN)
}

/// GET http://{host}:{port}{path} through the proxy; returns the status.
fn get(http: u16, host: &str, path: &str) -> u16 {
    http1_client()
        .get(format!("http://{host}:{http}{path}"))
        .send()
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
        .status()
        .as_u16()
}

/// `GET /metrics` on the admin listener, without a token.
fn scrape(admin: u16) -> String {
    let resp = http1_client()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200, "GET /metrics without a token");
    let content_type = header(&resp, "content-type");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().unwrap()
}

/// Scrapes until `check` passes (the access-log phase that records a request may still be
/// running when the client has its response), or panics with the last scrape.
fn scrape_until(admin: u16, what: &str, mut check: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(admin);
        if check(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("/metrics never showed {what}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_endpoint_counts_proxied_requests() {
    let s = setup();
    let requests = "switchyard_requests_total";
    let initial = scrape(s.admin_port());
    // Series of every weighted pool exist before any request, at 0.
    let blue = [("service", "api"), ("pool", "blue")];
    let no_errors = metric(&initial, "switchyard_upstream_connect_errors_total", &blue);
    assert_eq!(no_errors, Some(0.0), "{initial}");
    assert_eq!(
        metric_value(&initial, "switchyard_config_generation"),
        Some(1.0)
    );

    for _ in 0..3 {
        assert_eq!(get(s.http(), "api.test", "/"), 200);
    }
    assert_eq!(get(s.http(), "api.test", "/status/503"), 503);
    assert_eq!(get(s.http(), "nowhere.test", "/"), 404);
    assert_eq!(get(s.http(), "down.test", "/"), 502);
    for _ in 0..4 {
        assert_eq!(
            get(s.http(), "mixed.test", "/"),
            200,
            "retried on the live server"
        );
    }

    let expected = [
        (("api.test/", "api", "blue", "200"), 3.0),
        (("api.test/", "api", "blue", "503"), 1.0),
        (("", "", "", "404"), 1.0),
        (("down.test/", "down", "only", "502"), 1.0),
        (("mixed.test/", "mixed", "main", "200"), 4.0),
    ];
    let text = scrape_until(s.admin_port(), "the 10 requests", |t| {
        metric_sum(t, requests, &[]) >= 10.0
            && metric_sum(t, "switchyard_request_duration_seconds_count", &[]) >= 10.0
    });
    for ((route, service, pool, code), want) in expected {
        let labels = [
            ("route", route),
            ("service", service),
            ("pool", pool),
            ("code", code),
        ];
        assert_eq!(
            metric(&text, requests, &labels),
            Some(want),
            "{labels:?}\n{text}"
        );
    }
    assert_eq!(
        metric_sum(&text, requests, &[]),
        10.0,
        "no other series:\n{text}"
    );

    let count = |service, pool| {
        metric(
            &text,
            "switchyard_request_duration_seconds_count",
            &[("service", service), ("pool", pool)],
        )
    };
    assert_eq!(count("api", "blue"), Some(4.0));
    assert_eq!(count("", ""), Some(1.0), "the request without a route");
    assert_eq!(count("api", "green"), Some(0.0));
    let le_inf = metric(
        &text,
        "switchyard_request_duration_seconds_bucket",
        &[("service", "api"), ("pool", "blue"), ("le", "+Inf")],
    );
    assert_eq!(le_inf, Some(4.0));
    let upstream = metric(&text, "switchyard_upstream_response_seconds_count", &blue);
    assert_eq!(upstream, Some(4.0), "the backend answered 4 times");

    // down.test: one connect error, no other server to retry on; max_fails = 1 is reached, but
    // the server is the last one able to take the traffic, so it is not ejected.
    let down = [("service", "down"), ("pool", "only")];
    assert_eq!(
        metric(&text, "switchyard_upstream_connect_errors_total", &down),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "switchyard_upstream_retries_total", &down),
        Some(0.0)
    );
    let ejections = |service| {
        metric(
            &text,
            "switchyard_upstream_ejections_total",
            &[("service", service)],
        )
    };
    assert_eq!(
        ejections("down"),
        Some(0.0),
        "the last server is never ejected"
    );
    assert_eq!(metric_sum(&text, "switchyard_server_available", &down), 1.0);

    // mixed.test: every connect error went to the live server instead, and the dead server,
    // which the live one can stand in for, was ejected at its first failure.
    let mixed = [("service", "mixed"), ("pool", "main")];
    let errors = metric(&text, "switchyard_upstream_connect_errors_total", &mixed).unwrap();
    let retries = metric(&text, "switchyard_upstream_retries_total", &mixed).unwrap();
    assert_eq!(
        errors, 1.0,
        "4 round-robin requests over 2 servers hit the dead one, once"
    );
    assert_eq!(retries, errors, "each failed connect was retried");
    assert_eq!(ejections("mixed"), Some(1.0));
    assert_eq!(
        metric_sum(&text, "switchyard_server_available", &mixed),
        1.0,
        "the ejected server is unavailable"
    );
    assert_eq!(
        metric_sum(&text, "switchyard_server_healthy", &mixed),
        2.0,
        "but not unhealthy"
    );

    assert_eq!(metric(&text, "switchyard_pool_weight", &blue), Some(100.0));
    assert_eq!(
        metric(&text, "switchyard_pool_weight_overridden", &blue),
        Some(0.0)
    );
    assert_eq!(metric_sum(&text, "switchyard_server_available", &blue), 1.0);
    assert_eq!(
        metric_value(&text, "switchyard_requests_in_flight"),
        Some(0.0)
    );
    let version = env!("CARGO_PKG_VERSION");
    let build = metric(&text, "switchyard_build_info", &[("version", version)]);
    assert_eq!(build, Some(1.0));
}

#[test]
fn reload_outcomes_and_generation_are_exported() {
    let mut s = setup();
    let good = s.proxy.config();
    let reloads = |t: &str, result| {
        metric(t, "switchyard_config_reloads_total", &[("result", result)]).unwrap_or(-1.0)
    };
    let stamp = |t: &str| {
        metric_value(t, "switchyard_config_last_reload_success_timestamp_seconds").unwrap()
    };
    let before = scrape(s.admin_port());
    assert_eq!(
        (reloads(&before, "success"), reloads(&before, "failure")),
        (0.0, 0.0)
    );

    s.proxy.reload_with("[server]\nthreads = 0\n");
    let failed = scrape_until(s.admin_port(), "a failed reload", |t| {
        reloads(t, "failure") == 1.0
    });
    assert_eq!(reloads(&failed, "success"), 0.0);
    assert_eq!(
        stamp(&failed),
        stamp(&before),
        "a failure leaves the timestamp"
    );
    assert_eq!(
        metric_value(&failed, "switchyard_config_generation"),
        Some(1.0)
    );

    // The next success must be stamped later than the start: wait until the clock says so.
    let started = stamp(&before);
    assert!(wait_until(Duration::from_secs(5), || unix_now() > started));
    s.proxy
        .reload_with(&good.replace("weight = 0", "weight = 5"));
    // Counters are read as the scrape encodes, the generation a moment before from the snapshot:
    // a scrape that overlaps the reload may show the new count with the old generation.
    let ok = scrape_until(s.admin_port(), "a successful reload", |t| {
        reloads(t, "success") == 1.0
            && metric_value(t, "switchyard_config_generation") == Some(2.0)
            && stamp(t) > stamp(&before)
    });
    assert!(stamp(&ok) > stamp(&before));
    let green = [("service", "api"), ("pool", "green")];
    assert_eq!(metric(&ok, "switchyard_pool_weight", &green), Some(5.0));
}

#[test]
fn client_connections_and_failed_tls_handshakes_are_counted_per_listener() {
    use std::io::{Read, Write};

    // A plain and a TLS listener in front of one backend.
    let w = World::bare()
        .listener("plain", false)
        .listener("secure", true)
        .fallback_certificate("localhost")
        .admin()
        .catch_all_blue()
        .start(BIN);
    let (http, https, admin) = (w.port("plain"), w.port("secure"), w.admin_port());
    let value = |t: &str, name: &str, listener: &str| metric(t, name, &[("listener", listener)]);
    let open = "switchyard_downstream_connections";
    let opened = "switchyard_downstream_connections_opened_total";
    let tls_errors = "switchyard_tls_handshake_errors_total";
    // `Proxy::start` probes each listener with one connect-then-close: a plain connection opened
    // and closed, and a TLS handshake that never completed. Wait until both are counted.
    let start = scrape_until(admin, "the start-up probes counted and closed", |t| {
        value(t, opened, "plain").is_some_and(|n| n >= 1.0)
            && value(t, tls_errors, "secure").is_some_and(|n| n >= 1.0)
            && value(t, open, "plain") == Some(0.0)
            && value(t, open, "secure") == Some(0.0)
            && value(t, "switchyard_tls_handshakes_in_progress", "secure") == Some(0.0)
    });
    let errors_before = value(&start, tls_errors, "secure").unwrap();
    let opened_before = value(&start, opened, "plain").unwrap();
    assert_eq!(
        value(&start, tls_errors, "plain"),
        None,
        "no TLS on the plain listener"
    );

    // One keep-alive connection per listener, held open.
    let mut plain = connect(format!("127.0.0.1:{http}").parse().unwrap());
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut plain).status, 200);
    let client = https_client();
    let resp = client
        .get(format!("https://localhost:{https}/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let both = scrape_until(admin, "one open connection per listener", |t| {
        value(t, open, "plain") == Some(1.0) && value(t, open, "secure") == Some(1.0)
    });
    assert_eq!(value(&both, opened, "plain"), Some(opened_before + 1.0));
    assert_eq!(
        value(&both, tls_errors, "secure"),
        Some(errors_before),
        "a good handshake"
    );

    // Two handshakes that never complete: bytes that are not TLS, and connect-then-close. Plain
    // HTTP to the TLS port is answered 400 before any handshake and counted as a client error.
    let mut not_tls = connect(format!("127.0.0.1:{https}").parse().unwrap());
    not_tls
        .write_all(b"\x00\x01 not a client hello\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = not_tls.read_to_end(&mut rest);
    drop(connect(format!("127.0.0.1:{https}").parse().unwrap()));
    let mut plain_http = connect(format!("127.0.0.1:{https}").parse().unwrap());
    plain_http
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut plain_http).status, 400);
    scrape_until(admin, "two handshake errors", |t| {
        value(t, tls_errors, "secure") == Some(errors_before + 2.0)
            && value(t, "switchyard_tls_handshakes_in_progress", "secure") == Some(0.0)
            && metric(
                t,
                "switchyard_client_errors_total",
                &[("listener", "secure"), ("kind", "plain_http_on_tls")],
            ) == Some(1.0)
    });

    drop(plain);
    drop(client);
    scrape_until(admin, "the connections closed", |t| {
        value(t, open, "plain") == Some(0.0) && value(t, open, "secure") == Some(0.0)
    });
}

// ------------------------------------------------------------------------------------------------
// promtool and Prometheus: Debian's `prometheus` package
// ------------------------------------------------------------------------------------------------

/// The path of `tool` (`promtool` or `prometheus`), from Debian's `prometheus` package (see the
/// module docs).
fn prometheus_tool(tool: &str) -> PathBuf {
    peer(tool, "prometheus")
}

/// Seconds since the Unix epoch, as the proxy's timestamps count them.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_checks_the_alert_rules() {
    let promtool = prometheus_tool("promtool");
    let (ok, out) = run(Command::new(&promtool).args(["check", "rules", ALERTS]));
    assert!(ok, "promtool check rules {ALERTS}:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Unit tests of the alert rules on synthetic series: each alert fires where it should and only
/// there. ALERTS{} is compared rather than the alerts themselves, so the annotation texts can
/// change without touching this test.
const RULE_TESTS: &str = r#"
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # blue: 10 rps of 200 and 1 rps of 502 (9% 5xx); green: 1% 5xx; canary: all 500 but < 1 rps.
      - series: 'switchyard_requests_total{route="*/",service="api",pool="blue",code="200"}'
        values: '0+600x30'
      - series: 'switchyard_requests_total{route="*/",service="api",pool="blue",code="502"}'
        values: '0+60x30'
      - series: 'switchyard_requests_total{route="*/",service="api",pool="green",code="200"}'
        values: '0+600x30'
      - series: 'switchyard_requests_total{route="*/",service="api",pool="green",code="503"}'
        values: '0+6x30'
      - series: 'switchyard_requests_total{route="*/",service="api",pool="canary",code="500"}'
        values: '0+1x30'
      # blue: every request between 1 s and 2.5 s; green: every request under 100 ms.
      - series: 'switchyard_request_duration_seconds_bucket{service="api",pool="blue",le="1"}'
        values: '0x30'
      - series: 'switchyard_request_duration_seconds_bucket{service="api",pool="blue",le="2.5"}'
        values: '0+660x30'
      - series: 'switchyard_request_duration_seconds_bucket{service="api",pool="blue",le="+Inf"}'
        values: '0+660x30'
      - series: 'switchyard_request_duration_seconds_count{service="api",pool="blue"}'
        values: '0+660x30'
      - series: 'switchyard_request_duration_seconds_bucket{service="api",pool="green",le="0.1"}'
        values: '0+606x30'
      - series: 'switchyard_request_duration_seconds_bucket{service="api",pool="green",le="+Inf"}'
        values: '0+606x30'
      - series: 'switchyard_request_duration_seconds_count{service="api",pool="green"}'
        values: '0+606x30'
      # blue has weight and both servers down; green has weight 0 and its server down.
      - series: 'switchyard_server_available{service="api",pool="blue",server="10.0.0.1:80"}'
        values: '0x30'
      - series: 'switchyard_server_available{service="api",pool="blue",server="10.0.0.2:80"}'
        values: '0x30'
      - series: 'switchyard_server_available{service="api",pool="green",server="10.0.0.3:80"}'
        values: '0x30'
      - series: 'switchyard_server_available{service="api",pool="canary",server="10.0.0.4:80"}'
        values: '1x30'
      - series: 'switchyard_pool_weight{service="api",pool="blue"}'
        values: '10x30'
      - series: 'switchyard_pool_weight{service="api",pool="green"}'
        values: '0x30'
      - series: 'switchyard_pool_weight{service="api",pool="canary"}'
        values: '1x30'
      # One failed reload at minute 3.
      - series: 'switchyard_config_reloads_total{result="failure"}'
        values: '0 0 0 1x27'
      - series: 'switchyard_config_reloads_total{result="success"}'
        values: '0+1x30'
    promql_expr_test:
      - expr: ALERTS{alertname="SwitchyardPool5xxRatioHigh"}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardPool5xxRatioHigh",alertstate="firing",severity="critical",service="api",pool="blue"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardPoolLatencyP99High"}
        eval_time: 20m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardPoolLatencyP99High",alertstate="firing",severity="warning",service="api",pool="blue"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardServerDown"}
        eval_time: 2m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardServerDown",alertstate="firing",severity="warning",service="api",pool="blue",server="10.0.0.1:80"}'
            value: 1
          - labels: 'ALERTS{alertname="SwitchyardServerDown",alertstate="firing",severity="warning",service="api",pool="blue",server="10.0.0.2:80"}'
            value: 1
      # green is at weight 0 (the stopped idle colour): its server being down is no incident.
      - expr: ALERTS{alertname="SwitchyardPoolDown"}
        eval_time: 2m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardPoolDown",alertstate="firing",severity="critical",service="api",pool="blue"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardReloadFailed"}
        eval_time: 2m
        exp_samples: []
      - expr: ALERTS{alertname="SwitchyardReloadFailed"}
        eval_time: 5m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardReloadFailed",alertstate="firing",severity="warning",result="failure"}'
            value: 1
  - interval: 1m
    input_series:
      # ACME certificates: one expires 10 days after the test's epoch, one in 60 days.
      - series: 'switchyard_cert_expiry_timestamp_seconds{name="soon.example.com"}'
        values: '864000x120'
      - series: 'switchyard_cert_expiry_timestamp_seconds{name="later.example.com"}'
        values: '5184000x120'
      # Certificate files: one expires 3 days after the epoch, one in a year.
      - series: 'switchyard_cert_file_expiry_timestamp_seconds{file="/etc/ssl/a.crt",name="a.example.com"}'
        values: '259200x120'
      - series: 'switchyard_cert_file_expiry_timestamp_seconds{file="/etc/ssl/b.crt",name="b.example.com"}'
        values: '31536000x120'
    promql_expr_test:
      - expr: ALERTS{alertname="SwitchyardCertificateExpiringSoon"}
        eval_time: 5m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardCertificateExpiringSoon",alertstate="pending",severity="warning",name="soon.example.com"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardCertificateExpiringSoon"}
        eval_time: 1h
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardCertificateExpiringSoon",alertstate="firing",severity="warning",name="soon.example.com"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardCertificateFileExpiringSoon"}
        eval_time: 1h
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardCertificateFileExpiringSoon",alertstate="firing",severity="warning",file="/etc/ssl/a.crt",name="a.example.com"}'
            value: 1
  - interval: 1m
    input_series:
      # api: one automatic rollback at minute 3, its counter present at 0 before (as Switchyard
      # exports it since the first scrape); shop: an operator abort (no alert). cart: a counter
      # born at 1 by its first rollback, as Switchyard exported it before creating the series
      # at 0: increase() sees no increase, so the alert cannot fire (why they start at 0).
      - series: 'switchyard_rollout_rollbacks_total{service="api",reason="error_rate"}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'switchyard_rollout_rollbacks_total{service="cart",reason="latency"}'
        values: '_ _ _ 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'switchyard_rollout_rollbacks_total{service="shop",reason="operator"}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
    promql_expr_test:
      - expr: ALERTS{alertname="SwitchyardCanaryRolledBack"}
        eval_time: 2m
        exp_samples: []
      - expr: ALERTS{alertname="SwitchyardCanaryRolledBack"}
        eval_time: 5m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardCanaryRolledBack",alertstate="firing",severity="warning",service="api",reason="error_rate"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardCanaryRolledBack"}
        eval_time: 24m
        exp_samples: []
  - interval: 1m
    input_series:
      # edge-1 grows past 1 GiB at minute 5; edge-2 stays small; a node exporter's process
      # (no switchyard_* series) is above 1 GiB throughout and never alerts.
      - series: 'process_resident_memory_bytes{instance="edge-1",job="switchyard"}'
        values: '50000000+0x4 2000000000+0x20'
      - series: 'process_resident_memory_bytes{instance="edge-2",job="switchyard"}'
        values: '50000000+0x25'
      - series: 'process_resident_memory_bytes{instance="db",job="node"}'
        values: '4000000000+0x25'
      - series: 'switchyard_config_generation{instance="edge-1",job="switchyard"}'
        values: '1+0x25'
      - series: 'switchyard_config_generation{instance="edge-2",job="switchyard"}'
        values: '1+0x25'
    promql_expr_test:
      - expr: ALERTS{alertname="SwitchyardMemoryHigh"}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardMemoryHigh",alertstate="pending",severity="warning",instance="edge-1",job="switchyard"}'
            value: 1
      - expr: ALERTS{alertname="SwitchyardMemoryHigh"}
        eval_time: 16m
        exp_samples:
          - labels: 'ALERTS{alertname="SwitchyardMemoryHigh",alertstate="firing",severity="warning",instance="edge-1",job="switchyard"}'
            value: 1
"#;

#[test]
fn promtool_unit_tests_the_alert_rules() {
    let promtool = prometheus_tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("alerts_test.yml");
    std::fs::write(&tests, RULE_TESTS.replace("{alerts}", ALERTS)).unwrap();
    let (ok, out) = run(Command::new(&promtool).arg("test").arg("rules").arg(&tests));
    assert!(ok, "promtool test rules:\n{out}");
}

/// `promtool check metrics` on a scrape: Prometheus' own linter of the text format (names,
/// units, `_total` on counters only, no `quantile` label outside summaries...). Returns what it
/// said when it finds a problem.
fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// The metric names an expression reads: `switchyard_*` and `process_*`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = ["switchyard_", "process_"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        names.push(word);
    }
    names
}

/// The `expr:` of every rule in a rules file, one-line or block (`expr: |`).
fn rule_exprs(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if rest.trim() != "|" {
            exprs.push(rest.trim().to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) = lines.next_if(|l| l.len() - l.trim_start().len() > indent) {
            block.push_str(next.trim());
            block.push('\n');
        }
        exprs.push(block);
    }
    exprs
}

/// Every query of the dashboard: its panels' targets and its annotations.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().unwrap();
    let targets = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten());
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    targets
        .chain(annotations)
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// Whether the scrape has a sample of `name` (any labels).
fn scraped(text: &str, name: &str) -> bool {
    samples(text).iter().any(|(n, _, _)| n == name)
}

/// Metrics the dashboard reads that only exist with `[acme]` certificates (tests/acme.rs covers
/// them against a real ACME server).
const ONLY_WITH_ACME: &[&str] = &[
    "switchyard_cert_expiry_timestamp_seconds",
    "switchyard_cert_next_renewal_timestamp_seconds",
    "switchyard_cert_pending",
    "switchyard_acme_orders_total",
    "switchyard_acme_failures_total",
];

/// A live Switchyard with a plain and a TLS listener, traffic on both, a canary rolled back by
/// its error-rate gate and a weight override: its scrapes pass `promtool check metrics`, the
/// counters the alert rules read are there at 0 from the first scrape, and every metric the
/// Grafana dashboard (which selects instances) reads is in the scrape.
#[test]
fn a_live_scrape_passes_promtool_and_feeds_the_alerts_and_the_dashboard() {
    let green = Backend::builder("green")
        .fail_ratio(1.0)
        .spawn()
        .expect("backend");
    let s = World::new()
        .https()
        .fallback_certificate("localhost")
        .backend("blue")
        .with_backend("green", green)
        .route("*", "api")
        .pool("api", "blue", 100, &["blue"])
        .pool("api", "green", 0, &["green"])
        .toml("[limits.zones.per_ip]\nrate = \"1000r/s\"\nburst = 1000\n[defaults]\nlimits = [\"per_ip\"]")
        .admin()
        .start(BIN);
    let admin = s.admin();

    // The first scrape: every counter an alert rule reads is there, at 0, so the first event of
    // the process is an increase that increase()/rate() can see.
    let first = scrape(s.admin_port());
    promtool_check_metrics(&first).unwrap_or_else(|e| panic!("promtool: {e}\n{first}"));
    let rules = std::fs::read_to_string(ALERTS).unwrap();
    // The rules that fire on an event read its counter's increase(); a ratio of rates
    // (switchyard_requests_total by status code, which cannot exist before the code is seen)
    // loses at most its first request.
    let counters: std::collections::BTreeSet<String> = rule_exprs(&rules)
        .iter()
        .flat_map(|e| {
            e.split("increase(")
                .skip(1)
                .map(metric_names)
                .collect::<Vec<_>>()
        })
        .filter_map(|names| names.into_iter().next())
        .collect();
    assert!(counters.len() >= 2, "{counters:?}");
    assert_eq!(rule_exprs(&rules).len(), rules.matches("- alert:").count());
    for name in &counters {
        assert!(
            scraped(&first, name),
            "{name} is missing from the first scrape:\n{first}"
        );
    }
    let rollbacks = "switchyard_rollout_rollbacks_total";
    for reason in ["error_rate", "latency"] {
        let labels = [("service", "api"), ("reason", reason)];
        assert_eq!(metric(&first, rollbacks, &labels), Some(0.0), "{first}");
    }
    let failures = [("result", "failure")];
    let reloads = metric(&first, "switchyard_config_reloads_total", &failures);
    assert_eq!(reloads, Some(0.0));

    // Traffic on both listeners, then a rollout of the failing canary, rolled back.
    for _ in 0..3 {
        assert_eq!(get(s.http(), "api.test", "/"), 200);
        let resp = http1_client()
            .get(format!("https://localhost:{}/", s.https()))
            .send()
            .expect("GET over TLS");
        assert_eq!(resp.status(), 200);
    }
    let load = Load::start(&s.url("api.test", ""), 1, Duration::from_millis(5));
    assert!(load.wait_for(5), "the load loop made no request");
    let body = r#"{"canary": "green", "steps": [50, 100], "interval": "10s", "min_requests": 5}"#;
    let started = admin.send("POST", "/v1/services/api/rollouts", Some(body), &[]);
    assert_eq!(started.status, 201, "{}", started.text);
    let rolled_back = scrape_until(s.admin_port(), "the rollback", |t| {
        metric(
            t,
            rollbacks,
            &[("service", "api"), ("reason", "error_rate")],
        ) == Some(1.0)
    });
    drop(load.finish());
    promtool_check_metrics(&rolled_back)
        .unwrap_or_else(|e| panic!("promtool after the rollback: {e}\n{rolled_back}"));
    let reply = admin.put_weights("api", r#"{"blue": 90, "green": 10}"#);
    assert_eq!(reply.status, 200, "{}", reply.text);
    for _ in 0..3 {
        get(s.http(), "api.test", "/");
    }
    let text = scrape_until(s.admin_port(), "the window gauges and the override", |t| {
        let green = [("service", "api"), ("pool", "green")];
        metric(t, "switchyard_pool_weight_overridden", &green) == Some(1.0)
            && scraped(t, "switchyard_pool_window_p99_seconds")
    });
    promtool_check_metrics(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let v = metric_value(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(v > 0.0, "{name} = {v}");
    }
    let expiry = samples(&text)
        .into_iter()
        .find(|(n, l, _)| {
            n == "switchyard_cert_file_expiry_timestamp_seconds"
                && l["name"] == "localhost"
                && l["file"].ends_with("/certs/localhost.crt")
        })
        .map(|(_, _, v)| v);
    assert!(
        expiry.is_some_and(|t| t > unix_now()),
        "the certificate file's expiry: {expiry:?}\n{text}"
    );

    // The dashboard: an instance selector that every query uses, rollout and certificate
    // panels, and only metrics this scrape has (or that only ACME makes).
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance selector");
    assert_eq!(instance["multi"], true);
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for row in ["Rollouts", "Certificates"] {
        assert!(titles.contains(&row), "no {row} row: {titles:?}");
    }
    let exprs = dashboard_exprs(&dashboard);
    let mut read = std::collections::BTreeSet::new();
    for expr in &exprs {
        assert!(
            expr.contains(r#"instance=~"$instance""#),
            "a query without the instance selector: {expr}"
        );
        read.extend(metric_names(expr));
    }
    for name in [
        "switchyard_rollout_canary_weight",
        "switchyard_cert_file_expiry_timestamp_seconds",
    ] {
        assert!(read.contains(name), "no panel reads {name}");
    }
    for name in &read {
        if ONLY_WITH_ACME.contains(&name.as_str()) {
            continue;
        }
        assert!(
            scraped(&text, name),
            "the dashboard reads {name}, which no scrape has:\n{text}"
        );
    }
}

/// A Prometheus server started by a test; stopped by PID (TERM, then KILL) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free 127.0.0.1 port, scraping `target` every second and
    /// evaluating the checked-in alert rules every second.
    fn start(dir: &Path, target: &str) -> Prometheus {
        let binary = prometheus_tool("prometheus");
        let port = port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {ALERTS}\n\
                 scrape_configs:\n  - job_name: switchyard\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET /api/v1/{path} with query parameters; the JSON answer, or None while not up yet.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Option<serde_json::Value> {
        let resp = http1_client()
            .get(format!("http://127.0.0.1:{}/api/v1/{path}", self.port))
            .query(params)
            .send()
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let json: serde_json::Value = resp.json().ok()?;
        (json["status"] == "success").then_some(json)
    }

    /// Runs `expr` as an instant query; the error Prometheus reports, if any.
    fn query_error(&self, expr: &str) -> Option<String> {
        let resp = http1_client()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expr)])
            .send()
            .unwrap();
        let json: serde_json::Value = resp.json().unwrap();
        (json["status"] != "success").then(|| json.to_string())
    }

    /// Polls `check` on the answer of `path` every 250 ms for up to 30 s.
    fn wait_for(
        &mut self,
        what: &str,
        path: &str,
        params: &[(&str, &str)],
        mut check: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if let Some(json) = self.api(path, params) {
                if check(&json) {
                    return json;
                }
                last = Some(json);
            }
            if Instant::now() > deadline {
                panic!(
                    "Prometheus never answered {what} within 30 s; last answer: {last:?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_prometheus_scrapes_switchyard_and_answers_promql() {
    let s = setup();
    for _ in 0..3 {
        assert_eq!(get(s.http(), "api.test", "/"), 200);
    }
    // The active check takes service "checked"'s only server out: SwitchyardServerDown and
    // SwitchyardPoolDown go pending.
    assert_eq!(get(s.http(), "down.test", "/"), 502);
    scrape_until(s.admin_port(), "the 4 requests", |t| {
        metric_sum(t, "switchyard_requests_total", &[]) == 4.0
            && metric_sum(t, "switchyard_server_healthy", &[("service", "checked")]) == 0.0
    });

    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", s.admin_port());
    let mut prom = Prometheus::start(dir.path(), &target);

    let query = r#"switchyard_requests_total{service="api",pool="blue"}"#;
    let answer = prom.wait_for(
        "the blue pool's requests",
        "query",
        &[("query", query)],
        |j| {
            j["data"]["result"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0]["value"][1] == "3")
        },
    );
    let series = &answer["data"]["result"][0]["metric"];
    assert_eq!(series["__name__"], "switchyard_requests_total");
    assert_eq!(series["route"], "api.test/");
    assert_eq!(series["code"], "200");
    assert_eq!(series["job"], "switchyard");
    assert_eq!(series["instance"], target.as_str());

    // The target is healthy, and so is every alert rule once evaluated against real series.
    prom.wait_for("the target up", "query", &[("query", "up")], |j| {
        j["data"]["result"][0]["value"][1] == "1"
    });
    let in_file = std::fs::read_to_string(ALERTS)
        .unwrap()
        .matches("- alert:")
        .count();
    let rules = prom.wait_for("the alert rules evaluated", "rules", &[], |j| {
        let groups = j["data"]["groups"].as_array().cloned().unwrap_or_default();
        let rules: Vec<_> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.len() == in_file && rules.iter().all(|r| r["health"] == "ok")
    });
    assert_eq!(rules["data"]["groups"][0]["name"], "switchyard");

    // Every query of the Grafana dashboard is valid PromQL for this Prometheus.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for expr in &exprs {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$service", ".*")
            .replace("$instance", ".*");
        if let Some(error) = prom.query_error(&expr) {
            panic!("dashboard query {expr:?} is rejected: {error}");
        }
    }

    // The server taken out trips the server-down and pool-down alerts (pending: `for: 1m`).
    let pending = prom.wait_for("the alerts pending", "query", &[("query", "ALERTS")], |j| {
        let names: Vec<String> = j["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| a["metric"]["service"] == "checked")
            .map(|a| a["metric"]["alertname"].as_str().unwrap_or("").to_string())
            .collect();
        names.contains(&"SwitchyardServerDown".to_string())
            && names.contains(&"SwitchyardPoolDown".to_string())
    });
    let alerts = pending["data"]["result"].as_array().unwrap();
    assert!(
        alerts.iter().all(|a| a["metric"]["service"] == "checked"),
        "no alert about the healthy services: {alerts:?}"
    );
    drop(prom);
    drop(s);
}
