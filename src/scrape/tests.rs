//! Metrics as a scrape shows them: names, labels, counts across snapshot changes and reloads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::AccessLog;
use crate::config::AccessLogTarget;
use crate::metrics::testing::value;
use crate::metrics::Finished;
use crate::runtime::{ChangeError, Runtime};
use crate::snapshot::Snapshot;

const CONFIG: &str = r#"
[server]
metrics = true

[[listeners]]
name = "http"
address = "127.0.0.1:1"

[[routes]]
host = "api.test"
service = "api"

[services.api.pools.blue]
weight = 90
servers = ["127.0.0.1:2", "127.0.0.1:3"]

[services.api.pools.green]
weight = 10
servers = ["127.0.0.1:4"]
"#;

fn runtime(config: &str, path: &Path) -> Arc<Runtime> {
    let config = crate::config::parse(config, path).expect("test config is valid");
    let fallback = crate::tls::self_signed(&["switchyard.invalid"]).expect("self-signed");
    let log = AccessLog::open(&AccessLogTarget::Off).expect("access log off");
    Runtime::new(config, path.into(), fallback, log, None).expect("runtime")
}

fn finished(snap: &Snapshot, pool: Option<usize>, status: u16) -> Finished<'_> {
    Finished {
        handles: &snap.handles,
        routes: &snap.routes,
        services: &snap.services,
        route: Some(0),
        pool,
        status,
        duration: Duration::from_millis(3),
        upstream_seconds: pool.map(|_| 0.002),
    }
}

#[test]
fn names_types_and_units_follow_the_conventions() {
    let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
    let text = rt.render_metrics();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split(' ').skip(2);
        let name = parts.next().expect("name");
        let kind = parts.next().expect("type");
        types.insert(name.to_string(), kind.to_string());
    }
    // Prometheus' standard process families keep their usual names (dashboards and alerts
    // written for any exporter read them); everything else is ours.
    const PROCESS: &[&str] = &[
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ];
    for name in PROCESS {
        assert!(types.contains_key(*name), "{name} missing from:\n{text}");
    }
    for (name, kind) in &types {
        assert!(
            name.starts_with("switchyard_") || PROCESS.contains(&name.as_str()),
            "{name}"
        );
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
        if kind == "histogram" {
            assert!(name.ends_with("_seconds"), "{name}");
        }
    }
    for name in [
        "switchyard_build_info",
        "switchyard_request_duration_seconds",
        "switchyard_upstream_response_seconds",
        "switchyard_upstream_connect_errors_total",
        "switchyard_upstream_retries_total",
        "switchyard_upstream_ejections_total",
        "switchyard_config_generation",
        "switchyard_config_reloads_total",
        "switchyard_config_last_reload_success_timestamp_seconds",
        "switchyard_requests_in_flight",
        "switchyard_server_healthy",
        "switchyard_server_available",
        "switchyard_pool_weight",
        "switchyard_pool_weight_overridden",
        "switchyard_maintenance",
    ] {
        assert!(types.contains_key(name), "{name} missing from:\n{text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&text, "switchyard_build_info", &[("version", version)]),
        Some(1.0)
    );
    // Both outcomes exist from the start, so increase(...{result="failure"}) works at once.
    for result in ["success", "failure"] {
        let v = value(
            &text,
            "switchyard_config_reloads_total",
            &[("result", result)],
        );
        assert_eq!(v, Some(0.0), "{result}");
    }
}

#[test]
fn requests_are_counted_by_route_service_pool_and_code() {
    let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
    let snap = rt.snapshot();
    let m = &rt.metrics;
    m.record_request(&finished(&snap, Some(0), 200));
    m.record_request(&finished(&snap, Some(0), 200));
    m.record_request(&finished(&snap, Some(1), 502));
    m.record_request(&finished(&snap, None, 413));
    m.record_request(&finished(&snap, Some(0), 0));
    // Outside 100..=599: no slot, resolved by name.
    m.record_request(&finished(&snap, Some(0), 999));
    m.record_request(&Finished {
        route: None,
        pool: None,
        status: 404,
        ..finished(&snap, None, 404)
    });
    m.record_request(&Finished {
        route: Some(99),
        ..finished(&snap, None, 404)
    });
    let text = rt.render_metrics();
    let req = |route: &str, service: &str, pool: &str, code: &str| {
        value(
            &text,
            "switchyard_requests_total",
            &[
                ("route", route),
                ("service", service),
                ("pool", pool),
                ("code", code),
            ],
        )
    };
    assert_eq!(req("api.test/", "api", "blue", "200"), Some(2.0), "{text}");
    assert_eq!(req("api.test/", "api", "green", "502"), Some(1.0));
    assert_eq!(req("api.test/", "api", "", "413"), Some(1.0));
    assert_eq!(req("api.test/", "api", "blue", "0"), Some(1.0));
    assert_eq!(req("api.test/", "api", "blue", "999"), Some(1.0));
    assert_eq!(req("", "", "", "404"), Some(2.0));
    let count = |service: &str, pool: &str| {
        value(
            &text,
            "switchyard_request_duration_seconds_count",
            &[("service", service), ("pool", pool)],
        )
    };
    assert_eq!(count("api", "blue"), Some(4.0));
    assert_eq!(count("api", "green"), Some(1.0));
    assert_eq!(count("api", ""), Some(1.0));
    assert_eq!(count("", ""), Some(2.0));
    let bucket = value(
        &text,
        "switchyard_request_duration_seconds_bucket",
        &[("service", "api"), ("pool", "blue"), ("le", "0.005")],
    );
    assert_eq!(bucket, Some(4.0), "3 ms falls in the 5 ms bucket");
    let upstream = value(
        &text,
        "switchyard_upstream_response_seconds_count",
        &[("service", "api"), ("pool", "green")],
    );
    assert_eq!(upstream, Some(1.0));
}

#[test]
fn counts_survive_snapshot_changes_and_old_snapshots_still_count() {
    let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
    let old = rt.snapshot();
    rt.metrics.record_request(&finished(&old, Some(0), 200));
    rt.change(|_, book| {
        book.overrides
            .entry("api".into())
            .or_default()
            .insert("green".into(), 50);
        Ok::<_, ChangeError>(((), Vec::new()))
    })
    .expect("override applies");
    let new = rt.snapshot();
    assert!(new.generation > old.generation);
    rt.metrics.record_request(&finished(&new, Some(0), 200));
    // A request that started before the change finishes after it: resolved by name.
    rt.metrics.record_request(&finished(&old, Some(0), 200));
    rt.metrics.record_connect_error(&old.handles, 0, 1, true);
    rt.metrics.record_connect_error(&new.handles, 0, 1, false);
    rt.metrics.record_ejection(&new.handles, 0);
    let text = rt.render_metrics();
    let labels = [("service", "api"), ("pool", "blue"), ("code", "200")];
    assert_eq!(
        value(&text, "switchyard_requests_total", &labels),
        Some(3.0)
    );
    let green = [("service", "api"), ("pool", "green")];
    let errors = value(&text, "switchyard_upstream_connect_errors_total", &green);
    assert_eq!(errors, Some(2.0));
    assert_eq!(
        value(&text, "switchyard_upstream_retries_total", &green),
        Some(1.0)
    );
    let ejections = value(
        &text,
        "switchyard_upstream_ejections_total",
        &[("service", "api")],
    );
    assert_eq!(ejections, Some(1.0));
    let generation = value(&text, "switchyard_config_generation", &[]);
    assert_eq!(generation, Some(new.generation as f64));
    let weight = |pool| value(&text, "switchyard_pool_weight", &[("pool", pool)]);
    assert_eq!((weight("blue"), weight("green")), (Some(90.0), Some(50.0)));
    let overridden = |pool| {
        value(
            &text,
            "switchyard_pool_weight_overridden",
            &[("pool", pool)],
        )
    };
    assert_eq!(
        (overridden("blue"), overridden("green")),
        (Some(0.0), Some(1.0))
    );
}

#[test]
fn server_health_and_availability_are_read_at_scrape_time() {
    let rt = runtime(CONFIG, Path::new("/nonexistent/switchyard.toml"));
    let snap = rt.snapshot();
    let blue = &snap.services[0].pools[0];
    blue.servers[0].state.set_healthy(false);
    let policy = crate::config::PassivePolicy {
        max_fails: 1,
        fail_timeout: Duration::from_secs(60),
    };
    assert!(blue.servers[1]
        .state
        .report_failure(&policy, crate::upstream::Failure::Connect)
        .is_some());
    blue.servers[1].state.eject(&policy);
    let text = rt.render_metrics();
    let server = |metric: &str, addr: &str| {
        value(
            &text,
            metric,
            &[("service", "api"), ("pool", "blue"), ("server", addr)],
        )
    };
    assert_eq!(
        server("switchyard_server_healthy", "127.0.0.1:2"),
        Some(0.0)
    );
    assert_eq!(
        server("switchyard_server_available", "127.0.0.1:2"),
        Some(0.0)
    );
    assert_eq!(
        server("switchyard_server_healthy", "127.0.0.1:3"),
        Some(1.0)
    );
    assert_eq!(
        server("switchyard_server_available", "127.0.0.1:3"),
        Some(0.0),
        "ejected"
    );
    let green = [
        ("service", "api"),
        ("pool", "green"),
        ("server", "127.0.0.1:4"),
    ];
    assert_eq!(
        value(&text, "switchyard_server_available", &green),
        Some(1.0)
    );
    let _in_flight = rt.begin_request();
    let text = rt.render_metrics();
    assert_eq!(
        value(&text, "switchyard_requests_in_flight", &[]),
        Some(1.0)
    );
}

#[test]
fn reload_outcomes_are_counted_and_removed_pools_disappear() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    let rt = runtime(CONFIG, &path);
    let before = value(
        &rt.render_metrics(),
        "switchyard_config_last_reload_success_timestamp_seconds",
        &[],
    )
    .expect("timestamp");
    assert!(before > 1.6e9, "a Unix time: {before}");
    std::fs::write(&path, "this is not toml [").expect("write bad config");
    assert!(rt.reload("").is_err());
    let without_green = CONFIG.replace(
        "[services.api.pools.green]\nweight = 10\nservers = [\"127.0.0.1:4\"]\n",
        "",
    );
    assert_ne!(without_green, CONFIG);
    std::fs::write(&path, &without_green).expect("write config");
    rt.reload("").expect("reload");
    rt.reload("").expect("reload");
    let text = rt.render_metrics();
    let reloads = |result| {
        value(
            &text,
            "switchyard_config_reloads_total",
            &[("result", result)],
        )
    };
    assert_eq!(
        (reloads("success"), reloads("failure")),
        (Some(2.0), Some(1.0))
    );
    let after = value(
        &text,
        "switchyard_config_last_reload_success_timestamp_seconds",
        &[],
    );
    assert!(after.expect("timestamp") >= before);
    assert_eq!(
        value(&text, "switchyard_pool_weight", &[("pool", "green")]),
        None
    );
    let gone = [("pool", "green"), ("server", "127.0.0.1:4")];
    assert_eq!(value(&text, "switchyard_server_healthy", &gone), None);
}

#[test]
fn metrics_switch_parses_and_defaults_to_on() {
    let path = Path::new("t.toml");
    let on = crate::config::parse(CONFIG, path).expect("valid");
    assert!(on.server.metrics);
    let default = crate::config::parse(&CONFIG.replace("metrics = true\n", ""), path);
    assert!(default.expect("valid").server.metrics);
    let off = crate::config::parse(&CONFIG.replace("metrics = true", "metrics = false"), path);
    assert!(!off.expect("valid").server.metrics);
}
