//! Servers named by DNS, against a real DNS server: Debian's pebble-challtestsrv, started once for this binary, its A records set through its management API.
//!
//! pebble-challtestsrv answers NOERROR with no records for a name it has none for (NODATA) and
//! SERVFAIL on request; it never answers NXDOMAIN. Its answers have TTL 0, so the proxy
//! re-resolves every `resolve_min`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use testkit::{
    check, failures, http1_client, json_body, metric, port, wait_until, Backend, Bin, Dns, Load,
    World,
};

const BIN: Bin = testkit::bin!();

fn dns() -> &'static Dns {
    static DNS: OnceLock<Dns> = OnceLock::new();
    DNS.get_or_init(Dns::start)
}

/// A world whose service "api" has one pool of `servers` (names or addresses), resolved by the
/// test DNS server every 300 ms.
fn world(servers: &[&str]) -> World {
    World::new()
        .server_option("resolvers", vec![dns().resolver()])
        .server_option("resolve_min", "300ms")
        .server_option("resolve_max", "2s")
        .admin()
        .route("*", "api")
        .pool("api", "main", 1, servers)
}

/// Two echo backends on one port, at 127.0.0.2 and 127.0.0.3: what a name moving from one
/// container to another looks like.
fn two_backends() -> (Backend, Backend, u16) {
    for _ in 0..20 {
        let p = port();
        let at = |ip: [u8; 4]| SocketAddr::from((ip, p));
        let (Ok(a), Ok(b)) = (
            Backend::spawn_on(at([127, 0, 0, 2]), "two"),
            Backend::spawn_on(at([127, 0, 0, 3]), "three"),
        ) else {
            continue;
        };
        return (a, b, p);
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn backend_of(w: &testkit::Running) -> (u16, String) {
    let resp = http1_client()
        .get(w.url("api.test", "/"))
        .send()
        .expect("proxy answers");
    let status = resp.status().as_u16();
    let body = json_body(resp);
    (status, body["backend"].as_str().unwrap_or("").to_string())
}

#[test]
fn a_name_follows_its_records_with_no_reload_and_no_failed_request() {
    let dns = dns();
    let (_two, _three, p) = two_backends();
    let name = "moving.switchyard.test";
    dns.set_a(name, &["127.0.0.2"]);
    let server = format!("{name}:{p}");
    let w = world(&[&server]).start(BIN);
    assert_eq!(backend_of(&w), (200, "two".into()));

    // The record moves to the other container while requests flow.
    let load = Load::start(&format!("http://127.0.0.1:{}", w.http()), 1, Duration::ZERO);
    assert!(load.wait_for(20));
    let generation = w.admin().get("/v1/services").json["generation"].as_u64();
    dns.set_a(name, &["127.0.0.3"]);
    let moved = wait_until(Duration::from_secs(10), || {
        load.count() > 0 && backend_of(&w).1 == "three"
    });
    assert!(moved, "traffic never moved to the new address");
    let before = load.count();
    assert!(load.wait_for(before + 20));
    let seen = load.finish();
    let failed = failures(&seen);
    assert!(failed.is_empty(), "no request may fail: {failed:?}");
    let last: Vec<&str> = seen
        .iter()
        .rev()
        .take(10)
        .map(|s| s.backend.as_str())
        .collect();
    assert!(last.iter().all(|b| *b == "three"), "{last:?}");
    let view = w.admin().get("/v1/services");
    assert!(
        view.json["generation"].as_u64() > generation,
        "a new snapshot was published, without a reload"
    );
    assert!(w.proxy.stderr().contains("now resolves to [127.0.0.3]"));

    // The admin API and ctl show the name with its current address.
    let names = &view.json["services"][0]["pools"][0]["names"];
    assert_eq!(names[0]["name"], server.as_str(), "{names}");
    assert_eq!(
        names[0]["addresses"],
        serde_json::json!([format!("127.0.0.3:{p}")])
    );
    assert_eq!(names[0]["error"], serde_json::Value::Null);
    let servers = &view.json["services"][0]["pools"][0]["servers"];
    assert_eq!(servers[0]["name"], name);
    let status = BIN.ctl(&[("SWITCHYARD_ADMIN", &w.admin_url())], &["status"]);
    assert!(
        status.stdout.contains(&format!("{server} → 127.0.0.3:{p}")),
        "{}",
        status.stdout
    );

    // NODATA, then SERVFAIL: the last good address keeps serving, and each is logged once.
    dns.clear(name);
    keeps_last_good(&w, dns, name, "no A or AAAA record (NODATA)");
    dns.servfail(name);
    keeps_last_good(&w, dns, name, "SERVFAIL");
    let text = http1_client()
        .get(format!("http://127.0.0.1:{}/metrics", w.admin_port()))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    let ok = metric(
        &text,
        "switchyard_dns_lookups_total",
        &[("name", name), ("result", "ok")],
    );
    let failed = metric(
        &text,
        "switchyard_dns_lookups_total",
        &[("name", name), ("result", "failed")],
    );
    assert!(ok.is_some_and(|n| n >= 3.0), "{ok:?}");
    assert!(failed.is_some_and(|n| n >= 2.0), "{failed:?}");
    assert_eq!(
        metric(&text, "switchyard_dns_addresses", &[("name", name)]),
        Some(1.0)
    );
}

/// With `name`'s lookups failing (`why` is in the error): a warning is logged, the admin API
/// shows the error, requests still reach the last good address ("three"). Then the record
/// comes back and the name is seen good again.
fn keeps_last_good(w: &testkit::Running, dns: &Dns, name: &str, why: &str) {
    let logged = w.proxy.wait_for_log(
        &format!("\"{name}\" does not resolve ({why}"),
        Duration::from_secs(10),
    );
    assert!(logged, "no warning for {why}:\n{}", w.proxy.stderr());
    let error = || {
        let v = w.admin().get("/v1/services");
        v.json["services"][0]["pools"][0]["names"][0]["error"].clone()
    };
    let shown = wait_until(Duration::from_secs(10), || {
        error().as_str().is_some_and(|e| e.contains(why))
    });
    assert!(
        shown,
        "the admin API shows the failed lookup ({why}): {}",
        error()
    );
    for _ in 0..5 {
        assert_eq!(
            backend_of(w),
            (200, "three".into()),
            "{why}: last good kept"
        );
    }
    dns.set_a(name, &["127.0.0.3"]);
    let back = w.proxy.wait_for_log(
        &format!("\"{name}\" resolves again"),
        Duration::from_secs(10),
    );
    assert!(back);
    assert!(wait_until(Duration::from_secs(10), || error().is_null()));
}

#[test]
fn a_name_that_does_not_resolve_is_a_warning_then_503_until_it_does() {
    let dns = dns();
    let name = "late.switchyard.test";
    dns.clear(name);
    let backend = Backend::spawn("late").expect("backend");
    let p = backend
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let server = format!("{name}:{}", p.expect("port"));
    let config = world(&[&server]).config();

    let (code, stdout, stderr) = check(BIN, &config);
    assert_eq!(
        code, 0,
        "a name that does not resolve is not an error: {stderr}"
    );
    assert!(stdout.contains("config ok"), "{stdout}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(&format!("warning: server name \"{name}\" does not resolve")))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    // file:line:col of the entry in the pool's servers.
    let line_of_entry = config
        .lines()
        .position(|l| l.contains(&server))
        .map(|i| i + 1)
        .expect("entry in config");
    assert!(
        warning.starts_with(&format!("switchyard.toml:{line_of_entry}:")),
        "{warning}"
    );

    let w = world(&[&server]).start(BIN);
    let resp = http1_client()
        .get(w.url("api.test", "/"))
        .send()
        .expect("proxy answers");
    assert_eq!(resp.status().as_u16(), 503);
    let body = json_body(resp);
    assert_eq!(
        body["error"],
        format!("no upstream server available: server name \"{server}\" has no address yet"),
        "{body}"
    );
    assert!(w
        .proxy
        .stderr()
        .contains(&format!("\"{name}\" does not resolve")));

    dns.set_a(name, &["127.0.0.1"]);
    let served = wait_until(Duration::from_secs(10), || {
        backend_of(&w) == (200, "late".into())
    });
    assert!(served, "the name resolved but no request reached it");
}

#[test]
fn backup_servers_take_requests_only_while_the_others_cannot() {
    let main = Backend::spawn("main").expect("backend");
    let spare = Backend::spawn("spare").expect("backend");
    let addr = |b: &Backend| b.url().trim_start_matches("http://").to_string();
    let w = World::new()
        .address("main", addr(&main))
        .address("spare", addr(&spare))
        .admin()
        .route("*", "api")
        .pool("api", "p", 1, &["main"])
        .toml("[services.api.pools.p]\nservers = [\"{main}\", { address = \"{spare}\", backup = true }]\n")
        .start(BIN);
    for _ in 0..20 {
        assert_eq!(backend_of(&w), (200, "main".into()));
    }
    assert_eq!(spare.requests(), 0, "the backup is idle while main is up");
    let view = w.admin().get("/v1/services/api");
    let servers = &view.json["pools"][0]["servers"];
    assert_eq!(servers[0]["backup"], false, "{servers}");
    assert_eq!(servers[1]["backup"], true, "{servers}");
    main.stop();
    for _ in 0..10 {
        assert_eq!(
            backend_of(&w),
            (200, "spare".into()),
            "the backup takes over"
        );
    }
}
