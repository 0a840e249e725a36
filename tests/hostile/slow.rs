//! Slow clients: slowloris heads, silent and idle connections are cut off by the client timeouts,
//! and a slow upload or a client hammering a slow endpoint never gets the only upstream server
//! ejected (passive health is for the server's failures, not the client's).

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::*;

use crate::wire::*;
use crate::BIN;

/// Small client timeouts so the tests are quick; the one server may be ejected after a single
/// failure, so anything counted against it would show.
const CONFIG: &str = r#"
{server}
{http_listener}
[admin]
address = "127.0.0.1:{admin}"

[defaults]
client_header_timeout = "2s"
client_body_timeout = "4s"
keepalive_timeout = "2s"
read_timeout = "1s"

[[routes]]
host = "*"
service = "api"

[services.api.passive]
max_fails = 1
fail_timeout = "30s"

[services.api.pools.main]
weight = 1
servers = ["{blue}"]
"#;

/// Generous: timers of 2-4 s on two busy cores.
const CUT_OFF: Duration = Duration::from_secs(20);
/// When a dripping client stops waiting.
const GIVE_UP: Duration = Duration::from_secs(30);

struct Rig {
    _blue: Backend,
    proxy: Proxy,
    http: u16,
    admin: Admin,
}

impl Rig {
    fn addr(&self) -> SocketAddr {
        local(self.http)
    }

    fn metrics(&self) -> String {
        self.admin.get("/metrics").text
    }

    /// `switchyard_client_errors_total{listener="http",kind}`.
    fn client_errors(&self, kind: &str) -> f64 {
        metric_sum(
            &self.metrics(),
            "switchyard_client_errors_total",
            &[("listener", "http"), ("kind", kind)],
        )
    }

    fn ejections(&self) -> f64 {
        metric_sum(
            &self.metrics(),
            "switchyard_upstream_ejections_total",
            &[("service", "api")],
        )
    }
}

fn rig(config: &str) -> Rig {
    let blue = Backend::spawn("blue").unwrap();
    let (http, admin) = (port(), port());
    let proxy = Proxy::start(
        BIN,
        &fill(
            config,
            &[("http", &http), ("admin", &admin), ("blue", &blue.addr)],
        ),
    );
    Rig {
        _blue: blue,
        proxy,
        http,
        admin: Admin::new(admin, None),
    }
}

/// What a dripping client saw.
struct Dripped {
    /// Every byte the proxy sent.
    got: Vec<u8>,
    /// When the proxy closed the connection (since connect), if it did.
    closed_after: Option<Duration>,
}

impl Dripped {
    fn response(&self) -> Option<RawResponse> {
        parse_response(&self.got, self.closed_after.is_some()).map(|(r, _)| r)
    }

    fn describe(&self) -> String {
        format!(
            "closed after {:?}, got {}",
            self.closed_after,
            snippet(&self.got)
        )
    }
}

/// Connects, sends `head`, then one byte of `drip` every `every` (`None`: `a` forever) until
/// the proxy sends anything; then reads until the proxy closes or `give_up` passes.
fn drip(
    addr: SocketAddr,
    head: &[u8],
    drip: Option<&[u8]>,
    every: Duration,
    give_up: Duration,
) -> Dripped {
    let started = Instant::now();
    let mut stream = open(addr);
    stream.write_all(head).unwrap();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut writable = true;
    loop {
        let left = give_up.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Dripped {
                got,
                closed_after: None,
            };
        }
        stream.set_read_timeout(Some(every.min(left))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let next = match drip {
                    None => Some(b'a'),
                    Some(bytes) => bytes.get(sent).copied(),
                };
                if let (Some(byte), true, true) = (next, got.is_empty(), writable) {
                    // A write into a connection the proxy already closed fails: just read on.
                    writable = stream.write_all(&[byte]).is_ok();
                    sent += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Dripped {
        got,
        closed_after: Some(started.elapsed()),
    }
}

#[test]
fn a_slowloris_head_gets_408_and_a_close() {
    let rig = rig(CONFIG);
    let head = b"GET /slowloris HTTP/1.1\r\nHost: h.test\r\nX-Slow: ";
    let d = drip(rig.addr(), head, None, Duration::from_millis(500), GIVE_UP);
    let closed = d
        .closed_after
        .unwrap_or_else(|| panic!("a slowloris head was not cut off: {}", d.describe()));
    assert!(
        closed <= CUT_OFF,
        "cut off only after {closed:?} (client_header_timeout 2s)"
    );
    let resp = d
        .response()
        .unwrap_or_else(|| panic!("no 408 before the close: {}", d.describe()));
    assert_proxy_answer(&resp, 408);
    assert!(
        wait_until(Duration::from_secs(5), || rig
            .client_errors("header_timeout")
            >= 1.0),
        "switchyard_client_errors_total{{kind=\"header_timeout\"}} was not counted:\n{}",
        rig.metrics()
    );
}

#[test]
fn a_silent_connection_is_closed_without_an_answer() {
    let rig = rig(CONFIG);
    let mut stream = open(rig.addr());
    let started = Instant::now();
    let (closed, got) = wait_closed(&mut stream, GIVE_UP);
    let elapsed = started.elapsed();
    assert!(
        closed,
        "a connection that sent nothing was still open after {GIVE_UP:?}"
    );
    assert!(
        elapsed <= CUT_OFF,
        "closed only after {elapsed:?} (client_header_timeout 2s)"
    );
    assert!(
        got.is_empty(),
        "nothing was asked, yet the proxy answered {}",
        snippet(&got)
    );
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let rig = rig(CONFIG);
    let mut stream = open(rig.addr());
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: h.test\r\n\r\n")
        .unwrap();
    let ex = read_exchange(&mut stream, 1, Duration::ZERO);
    assert_eq!(ex.statuses(), [200], "{}", ex.describe());
    assert!(!ex.closed, "the keep-alive connection was closed at once");
    let idle = Instant::now();
    let (closed, got) = wait_closed(&mut stream, GIVE_UP);
    let elapsed = idle.elapsed();
    assert!(
        closed,
        "an idle keep-alive connection was open after {GIVE_UP:?}"
    );
    assert!(
        elapsed <= CUT_OFF,
        "closed only after {elapsed:?} idle (keepalive_timeout 2s)"
    );
    assert!(
        got.is_empty(),
        "the proxy sent {} on an idle connection",
        snippet(&got)
    );
}

#[test]
fn a_stalled_upload_gets_408_and_the_only_server_stays_in() {
    let rig = rig(CONFIG);
    let load = Load::start(
        &format!("http://h.test:{}", rig.http),
        1,
        Duration::from_millis(20),
    );
    // Two uploads that stall after one byte of ten (the next byte would come after 10 s, far
    // past client_body_timeout = 4s), at the same time.
    let addr = rig.addr();
    let uploads: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let head = format!(
                    "POST /upload/{i} HTTP/1.1\r\nHost: h.test\r\nContent-Length: 10\r\n\r\nx"
                );
                drip(
                    addr,
                    head.as_bytes(),
                    Some(b"yyyyyyyyy"),
                    Duration::from_secs(10),
                    GIVE_UP,
                )
            })
        })
        .collect();
    let results: Vec<Dripped> = uploads.into_iter().map(|t| t.join().unwrap()).collect();
    let seen = load.finish();
    for d in &results {
        let resp = d
            .response()
            .unwrap_or_else(|| panic!("a stalled upload got no answer: {}", d.describe()));
        assert_proxy_answer(&resp, 408);
        let closed = d
            .closed_after
            .unwrap_or_else(|| panic!("still open after the 408: {}", d.describe()));
        assert!(closed <= CUT_OFF, "408 only after {closed:?}");
    }
    let failed = failures(&seen);
    assert!(
        failed.is_empty(),
        "{} of {} normal requests failed meanwhile: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(!seen.is_empty(), "the normal client sent nothing");
    assert_eq!(
        rig.ejections(),
        0.0,
        "a client's slow upload ejected the server:\n{}",
        rig.proxy.stderr()
    );
    normal_get(rig.addr(), "h.test", "/after").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || rig.client_errors("body_timeout")
            >= 2.0),
        "switchyard_client_errors_total{{kind=\"body_timeout\"}} did not count both uploads:\n{}",
        rig.metrics()
    );
}

#[test]
fn a_slow_upload_within_the_body_timeout_is_not_an_upstream_timeout() {
    // Four body bytes 1.5 s apart: well under client_body_timeout (4s) each time, 6 s in all,
    // far past read_timeout (1s), which starts only once the whole body went upstream.
    let rig = rig(CONFIG);
    let d = drip(
        rig.addr(),
        b"POST /upload HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
        Some(b"abcd"),
        Duration::from_millis(1500),
        GIVE_UP,
    );
    let resp = d
        .response()
        .unwrap_or_else(|| panic!("no answer to a slow upload: {}", d.describe()));
    assert_eq!(
        resp.status,
        200,
        "a slow upload within client_body_timeout failed: {}",
        snippet(&resp.body)
    );
    let echo: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(echo["body_bytes"], 4, "{echo}");
    assert_eq!(rig.ejections(), 0.0);
}

/// Only existing config keys: the route times out after 1 s, one timeout would be enough to
/// eject the server under the old rule.
const HAMMER: &str = r#"
{server}
{http_listener}
[admin]
address = "127.0.0.1:{admin}"

[[routes]]
host = "*"
service = "api"
read_timeout = "1s"

[services.api.passive]
max_fails = 2
fail_timeout = "30s"

[services.api.pools.main]
weight = 1
servers = ["{blue}"]
"#;

#[test]
fn one_client_hammering_a_slow_endpoint_never_ejects_the_only_server() {
    let rig = rig(HAMMER);
    for i in 0..4 {
        let ex = exchange(
            rig.addr(),
            b"GET /delay/2500 HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
            1,
        );
        let resp = ex
            .responses
            .first()
            .unwrap_or_else(|| panic!("slow request {i}: no answer ({})", ex.describe()));
        if let Err(e) = check_proxy_answer(resp, 504) {
            panic!("slow request {i}: {e}\n{}", rig.proxy.stderr());
        }
    }
    let fast = normal_get(rig.addr(), "h.test", "/fast");
    assert!(
        fast.is_ok(),
        "right after the timeouts, a fast request to the same server failed ({}): \
         the only server was ejected\n{}",
        fast.unwrap_err(),
        rig.proxy.stderr()
    );
    assert_eq!(
        rig.ejections(),
        0.0,
        "one client's timeouts ejected the server:\n{}",
        rig.proxy.stderr()
    );
}

/// client_body_timeout is short here, the route's read_timeout long: after a 101 the upgraded
/// connection is timed by read_timeout both ways, not by the body timeout.
const WEBSOCKET: &str = r#"
{server}
{http_listener}
[admin]
address = "127.0.0.1:{admin}"

[defaults]
client_body_timeout = "1s"
read_timeout = "30s"

[[routes]]
host = "*"
service = "api"

[services.api.pools.main]
weight = 1
servers = ["{blue}"]
"#;

#[test]
fn an_idle_websocket_outlives_the_body_timeout() {
    let rig = rig(WEBSOCKET);
    let mut stream = open(rig.addr());
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for round in 0..2 {
        // Quiet for well over client_body_timeout (1 s), then a message: still echoed.
        std::thread::sleep(Duration::from_millis(2500));
        let message = format!("still here {round}");
        stream.write_all(message.as_bytes()).unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream
            .read_exact(&mut echoed)
            .unwrap_or_else(|e| panic!("round {round}: the idle websocket was cut: {e}"));
        assert_eq!(echoed, message.as_bytes());
    }
    assert_eq!(rig.client_errors("body_timeout"), 0.0);
}

#[test]
fn timeouts_eject_a_server_only_when_two_clients_see_them() {
    let blue = Backend::spawn("blue").unwrap();
    let green = Backend::spawn("green").unwrap();
    let (http, admin) = (port(), port());
    // HAMMER with two servers, so that ejection is possible: what the clients do decides it.
    let two_servers = HAMMER.replace(
        "servers = [\"{blue}\"]",
        "servers = [\"{blue}\", \"{green}\"]",
    );
    assert!(two_servers.contains("{green}"));
    let proxy = Proxy::start(
        BIN,
        &fill(
            &two_servers,
            &[
                ("http", &http),
                ("admin", &admin),
                ("blue", &blue.addr),
                ("green", &green.addr),
            ],
        ),
    );
    let admin = Admin::new(admin, None);
    let ejections = || {
        metric_sum(
            &admin.get("/metrics").text,
            "switchyard_upstream_ejections_total",
            &[("service", "api")],
        )
    };
    // A client per loopback address (the proxy sees each as its own client IP).
    let client_from = |ip: [u8; 4]| {
        client_builder()
            .local_address(std::net::IpAddr::from(ip))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let slow = format!("http://127.0.0.1:{http}/delay/2500");
    // One client's requests time out on both servers (round robin), twice each: max_fails is
    // reached on both, but one client alone never ejects.
    let a = client_from([127, 0, 0, 1]);
    for _ in 0..4 {
        assert_eq!(a.get(&slow).send().unwrap().status(), 504);
    }
    assert_eq!(
        ejections(),
        0.0,
        "one client ejected a server:\n{}",
        proxy.stderr()
    );
    // A second client's timeouts join the streaks: now a server goes, but only one of the two
    // (the other is the last one able to take the traffic).
    let b = client_from([127, 0, 0, 2]);
    for _ in 0..2 {
        assert_eq!(b.get(&slow).send().unwrap().status(), 504);
    }
    assert!(
        wait_until(Duration::from_secs(5), || ejections() == 1.0),
        "timeouts from two clients did not eject exactly one server ({}):\n{}",
        ejections(),
        proxy.stderr()
    );
    assert!(
        proxy
            .stderr()
            .contains("response timeouts from several clients"),
        "the ejection's cause is not logged:\n{}",
        proxy.stderr()
    );
    assert_eq!(
        a.get(format!("http://127.0.0.1:{http}/fast"))
            .send()
            .unwrap()
            .status(),
        200,
        "the server left takes the traffic"
    );
}
