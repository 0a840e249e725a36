//! Rate and connection limits over real sockets: nginx-equivalent burst numbers, a stricter zone on
//! one path, exempt paths, X-Forwarded-For trusted only from configured proxies, connection caps,
//! and a spray of distinct keys that stays within the zone's key bound.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// The zones and the routes that use them. Every zone but `tick` refills per hour, far slower than
/// a test runs, so no request of a test gets a token back however slow the machine is; `tick`
/// (one request every 3 s) is the one a test waits for.
const LIMITS: &str = r#"
[limits]
exempt_paths = ["/health"]

[limits.zones.per_ip]
key = "client_ip"
rate = "100r/h"
burst = 20

[limits.zones.login]
key = "client_ip"
rate = "6r/h"
burst = 1

[limits.zones.tick]
key = "client_ip"
rate = "20r/m"
burst = 0

[limits.zones.sprayed]
key = "client_ip"
rate = "1r/h"
burst = 0
max_keys = 256

[limits.zones.by_key]
key = "header:X-Api-Key"
rate = "1r/h"
burst = 0

[defaults]
limits = ["per_ip"]

[[routes]]
host = "*"
service = "api"

[[routes]]
host = "*"
path = "/login"
service = "api"
limits = ["per_ip", "login"]

[[routes]]
host = "tick.test"
service = "api"
limits = ["tick"]

[[routes]]
host = "spray.test"
service = "api"
limits = ["sprayed"]

[[routes]]
host = "keyed.test"
service = "api"
limits = ["by_key"]

[[routes]]
host = "open.test"
service = "api"
limits = []
"#;

/// Service "api" (one backend, "blue") behind [`LIMITS`], with `limits_extra` added to `[limits]`.
fn world(limits_extra: &str) -> World {
    World::new()
        .backend("blue")
        .admin()
        .pool("api", "blue", 1, &["blue"])
        .toml(LIMITS)
        .toml(&format!("[limits]\n{limits_extra}"))
}

fn setup(limits_extra: &str) -> Running {
    world(limits_extra).start(BIN)
}

fn get(s: &Running, host: &str, path: &str, xff: Option<&str>) -> reqwest::blocking::Response {
    let mut req = http1_client().get(s.url(host, path));
    if let Some(x) = xff {
        req = req.header("X-Forwarded-For", x);
    }
    req.send().unwrap()
}

/// Asserts that a 429's Retry-After is the zone's emission interval (`interval` whole seconds)
/// rounded up, less the time since the bucket was first drawn on (the first request sent after
/// `since`): exactly `interval` when the requests took under a second, as they do on an idle
/// machine; a rounding down would show one less.
fn assert_retry_after(limited: &reqwest::blocking::Response, interval: u64, since: Instant) {
    let passed = since.elapsed().as_secs();
    let got: u64 = header(limited, "retry-after")
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After {:?}: {e}", header(limited, "retry-after")));
    assert!(
        (interval.saturating_sub(passed).max(1)..=interval).contains(&got),
        "Retry-After {got}: expected the {interval} s interval rounded up, less the {passed} whole \
         seconds the requests took"
    );
}

/// `switchyard_rate_limited_total` of `zone`.
fn rate_limited(metrics: &str, zone: &str) -> Option<f64> {
    metric(metrics, "switchyard_rate_limited_total", &[("zone", zone)])
}

#[test]
fn burst_then_429_then_one_more_after_the_emission_interval() {
    let s = setup("rate_limit_headers = true");
    // rate=100r/h burst=20 nodelay in nginx: 21 at once.
    let since = Instant::now();
    for i in 0..21 {
        let r = get(&s, "a.test", "/x", None);
        assert_eq!(r.status(), 200, "request {i} of the burst");
        assert_eq!(header(&r, "ratelimit-limit"), "21");
        assert_eq!(header(&r, "ratelimit-remaining"), (20 - i).to_string());
    }
    let limited = get(&s, "a.test", "/x", None);
    assert_eq!(limited.status(), 429);
    // 3600 s / 100 = 36 s.
    assert_retry_after(&limited, 36, since);
    assert_eq!(header(&limited, "ratelimit-remaining"), "0");
    let body = json_body(limited);
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "rate limit exceeded");
    assert!(is_request_id(body["request_id"].as_str().unwrap()));

    // The emission interval, on a zone of one request every 3 s without burst: refused until the
    // interval has passed since the first request, then one more, and only one.
    let since = Instant::now();
    assert_eq!(get(&s, "tick.test", "/x", None).status(), 200);
    let first_answered = Instant::now();
    let limited = get(&s, "tick.test", "/x", None);
    assert_eq!(limited.status(), 429, "within 3 s of the first");
    assert_retry_after(&limited, 3, since);
    std::thread::sleep(
        (first_answered + Duration::from_millis(3050)).saturating_duration_since(Instant::now()),
    );
    assert_eq!(
        get(&s, "tick.test", "/x", None).status(),
        200,
        "one more after 3 s"
    );
    assert_eq!(
        get(&s, "tick.test", "/x", None).status(),
        429,
        "and only one"
    );

    let metrics = Admin::new(s.admin_port(), None).get("/metrics").text;
    let counted = (
        rate_limited(&metrics, "per_ip"),
        rate_limited(&metrics, "tick"),
    );
    assert_eq!(
        counted,
        (Some(1.0), Some(2.0)),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rate_limit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_stricter_zone_on_one_path_and_exempt_paths() {
    let s = setup("");
    let since = Instant::now();
    let first = get(&s, "a.test", "/login", None);
    assert_eq!(first.status(), 200);
    assert!(
        first.headers().get("ratelimit-remaining").is_none(),
        "RateLimit headers on passing responses only with rate_limit_headers = true"
    );
    assert_eq!(get(&s, "a.test", "/login", None).status(), 200);
    let r = get(&s, "a.test", "/login", None);
    assert_eq!(r.status(), 429, "login allows burst 1 + 1");
    // 6r/h: one every 600 s.
    assert_retry_after(&r, 600, since);
    // The same client is still within per_ip elsewhere.
    assert_eq!(get(&s, "a.test", "/other", None).status(), 200);
    // /health is exempt whatever the zones say, and a route with no zones is never limited.
    for _ in 0..40 {
        assert_eq!(get(&s, "a.test", "/health/ready", None).status(), 200);
        assert_eq!(get(&s, "open.test", "/", None).status(), 200);
    }
}

#[test]
fn a_request_refused_by_one_zone_is_not_counted_by_the_others() {
    let s = setup("");
    // /login: per_ip (burst 20, 21 at once) then login (burst 1, 2 at once). The 3rd and later
    // are refused by login; as in nginx they must not use per_ip's budget.
    for _ in 0..2 {
        assert_eq!(get(&s, "a.test", "/login", None).status(), 200);
    }
    for _ in 0..10 {
        assert_eq!(get(&s, "a.test", "/login", None).status(), 429);
    }
    // per_ip has counted 2 of its 21: 19 more pass elsewhere, then the 20th is refused.
    for n in 0..19 {
        let status = get(&s, "a.test", "/other", None).status();
        assert_eq!(status, 200, "request {n} after the refusals");
    }
    assert_eq!(get(&s, "a.test", "/other", None).status(), 429);
}

#[test]
fn header_keyed_zone_counts_per_key_and_skips_requests_without_it() {
    let s = setup("");
    let with_key = |key: &str| {
        http1_client()
            .get(s.url("keyed.test", "/"))
            .header("X-Api-Key", key)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(with_key("alpha"), 200);
    assert_eq!(with_key("alpha"), 429);
    assert_eq!(with_key("beta"), 200, "another key has its own bucket");
    for _ in 0..3 {
        assert_eq!(
            get(&s, "keyed.test", "/", None).status(),
            200,
            "no key, not counted"
        );
    }
}

#[test]
fn forwarded_for_is_ignored_from_untrusted_peers() {
    let s = setup("");
    // Every request claims another client; the peer (127.0.0.1) is not trusted, so one bucket.
    for i in 0..21 {
        let r = get(&s, "a.test", "/", Some(&format!("203.0.113.{i}")));
        assert_eq!(r.status(), 200);
        if i == 0 {
            assert_eq!(json_body(r)["headers"]["x-real-ip"], "127.0.0.1");
        }
    }
    assert_eq!(get(&s, "a.test", "/", Some("198.51.100.77")).status(), 429);
    let logged = s.proxy.access_log_path();
    assert!(wait_until(Duration::from_secs(3), || {
        std::fs::read_to_string(&logged)
            .unwrap_or_default()
            .contains("\"status\":429")
    }));
    let log = s.proxy.access_log();
    assert!(
        log.iter().all(|l| l["client_ip"] == "127.0.0.1"),
        "logs use the socket address"
    );
}

#[test]
fn forwarded_for_is_honoured_from_trusted_proxies() {
    let s = setup(r#"trusted_proxies = ["127.0.0.0/8"]"#);
    for i in 0..30 {
        let r = get(&s, "a.test", "/", Some(&format!("6.6.6.6, 203.0.113.{i}")));
        assert_eq!(r.status(), 200, "each request is another client");
        if i == 0 {
            let seen = json_body(r);
            assert_eq!(seen["headers"]["x-real-ip"], "203.0.113.0");
            assert_eq!(
                seen["headers"]["x-forwarded-for"],
                "6.6.6.6, 203.0.113.0, 127.0.0.1"
            );
        }
    }
    // The client named by the trusted proxy is the key: it runs out like any client.
    for _ in 0..21 {
        get(&s, "a.test", "/", Some("198.51.100.9"));
    }
    assert_eq!(get(&s, "a.test", "/", Some("198.51.100.9")).status(), 429);
    assert!(
        wait_until(Duration::from_secs(3), || s
            .proxy
            .access_log()
            .iter()
            .any(|l| l["client_ip"] == "198.51.100.9")),
        "logs use the real client IP"
    );
}

fn open_idle(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: open.test\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut c);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    c
}

#[test]
fn connection_caps_per_ip_and_total() {
    // The start-up probe of the listener (a connect and a close) counts until the proxy has
    // seen it closed: the caps are checked from a clean slate.
    let no_connection = |s: &Running| {
        let admin = Admin::new(s.admin_port(), None);
        let idle = wait_until(Duration::from_secs(5), || {
            metric_sum(
                &admin.get("/metrics").text,
                "switchyard_downstream_connections",
                &[],
            ) == 0.0
        });
        assert!(idle, "the start-up probe connection never closed");
    };
    let s = setup("max_connections_per_ip = 2");
    let addr = SocketAddr::from(([127, 0, 0, 1], s.http()));
    no_connection(&s);
    let first = open_idle(addr);
    let _second = open_idle(addr);
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut refused = String::new();
    third.read_to_string(&mut refused).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    assert!(refused.contains("too many connections"), "{refused}");
    drop(first);
    // The freed slot is usable again once the proxy has seen the close.
    let started = Instant::now();
    let ok = wait_until(Duration::from_secs(3), || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: open.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        text.starts_with("HTTP/1.1 200")
    });
    assert!(
        ok,
        "no slot after closing a connection ({:?})",
        started.elapsed()
    );
    let metrics = Admin::new(s.admin_port(), None).get("/metrics").text;
    // At least the third connection; a retry above may have raced the close and been refused too.
    let refused: u64 = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_connections_refused_total{reason=\"per_ip\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{metrics}");

    let t = setup("max_connections = 1");
    let taddr = SocketAddr::from(([127, 0, 0, 1], t.http()));
    no_connection(&t);
    let _only = open_idle(taddr);
    let mut over = TcpStream::connect(taddr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    over.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
}

#[test]
fn a_spray_of_distinct_clients_stays_within_max_keys() {
    let s = setup(r#"trusted_proxies = ["127.0.0.0/8"]"#);
    let client = http1_client();
    for i in 0..3000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let r = client
            .get(s.url("spray.test", "/"))
            .header("X-Forwarded-For", ip)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "a new client always has its burst");
    }
    let metrics = Admin::new(s.admin_port(), None).get("/metrics").text;
    let keys: f64 = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_rate_limit_keys{zone=\"sprayed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no key gauge in:\n{metrics}"));
    assert!(
        keys > 0.0 && keys <= 256.0,
        "zone holds {keys} keys, bound is 256"
    );
}

#[test]
fn reload_keeps_counters_of_unchanged_zones_and_resets_changed_ones() {
    let mut s = setup("");
    for _ in 0..2 {
        get(&s, "a.test", "/login", None);
    }
    assert_eq!(get(&s, "a.test", "/login", None).status(), 429);

    // Same zones, another route added: the login zone keeps its count.
    let same = s.config_with(|w| w.route("extra.test", "api"));
    s.proxy.reload_with(&same);
    assert!(s.proxy.wait_for_log("generation 2", Duration::from_secs(5)));
    assert_eq!(
        get(&s, "a.test", "/login", None).status(),
        429,
        "counter kept"
    );

    // The login zone changes (burst 1 → 3): it starts empty.
    let changed = s.config_with(|w| {
        w.route("extra.test", "api")
            .toml("[limits.zones.login]\nburst = 3")
    });
    assert_ne!(changed, same);
    s.proxy.reload_with(&changed);
    assert!(s.proxy.wait_for_log("generation 3", Duration::from_secs(5)));
    for i in 0..4 {
        assert_eq!(
            get(&s, "a.test", "/login", None).status(),
            200,
            "request {i}"
        );
    }
    assert_eq!(get(&s, "a.test", "/login", None).status(), 429);
}
