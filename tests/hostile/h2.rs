//! HTTP/2 and TLS clients: the h2 header list is bounded like an HTTP/1 head, a stalled h2 request body is cut off by client_body_timeout, and what clients do wrong never reaches the error log.

use std::io::{Read, Write};
use std::time::Duration;

use testkit::*;

use crate::wire::*;
use crate::BIN;

const CONFIG: &str = r#"
{server}
{https_listener}
[admin]
address = "127.0.0.1:{admin}"

[[certificates]]
cert = "{certs}/localhost.crt"
key = "{certs}/localhost.key"
fallback = true

[defaults]
client_body_timeout = "1s"

[[routes]]
host = "*"
service = "api"

[services.api.pools.main]
weight = 1
servers = ["{blue}"]
"#;

struct Rig {
    blue: Backend,
    proxy: Proxy,
    https: u16,
    admin: Admin,
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https)
    }

    fn client_errors(&self, kind: &str) -> f64 {
        metric_sum(
            &self.admin.get("/metrics").text,
            "switchyard_client_errors_total",
            &[("listener", "https"), ("kind", kind)],
        )
    }
}

fn rig() -> Rig {
    rig_with(CONFIG)
}

fn rig_with(config: &str) -> Rig {
    let blue = Backend::spawn("blue").unwrap();
    let (https, admin) = (port(), port());
    let proxy = Proxy::start(
        BIN,
        &fill(
            config,
            &[("https", &https), ("admin", &admin), ("blue", &blue.addr)],
        ),
    );
    Rig {
        blue,
        proxy,
        https,
        admin: Admin::new(admin, None),
    }
}

#[test]
fn an_h2_header_list_over_max_header_size_never_reaches_the_upstream() {
    let rig = rig();
    let client = https_client();
    // 20 KB of headers: within the default 32 KB, forwarded over h2.
    let ok = client
        .get(rig.url("/fits"))
        .header("x-big", "a".repeat(20_000))
        .send()
        .unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    assert_eq!(ok.status(), 200);
    let forwarded = rig.blue.requests();
    // 40 KB: over the header list size the proxy advertised. h2 refuses the stream (or the
    // proxy answers 431); either way the request goes nowhere.
    match client
        .get(rig.url("/too-big"))
        .header("x-big", "a".repeat(40_000))
        .send()
    {
        Ok(resp) => assert_eq!(resp.status(), 431, "a 40 KB h2 header list was accepted"),
        Err(e) => assert!(
            e.is_request() || e.is_connect() || e.to_string().contains("stream"),
            "{e}"
        ),
    }
    assert_eq!(
        rig.blue.requests(),
        forwarded,
        "the oversized request was forwarded"
    );
}

/// A request body that sends a little, then stalls.
struct Stall {
    sent: bool,
}

impl Read for Stall {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.sent {
            self.sent = true;
            buf[..5].copy_from_slice(b"hello");
            return Ok(5);
        }
        // Far longer than client_body_timeout; the proxy gives up first.
        std::thread::sleep(Duration::from_secs(5));
        Ok(0)
    }
}

#[test]
fn a_stalled_h2_request_body_is_cut_off_by_the_body_timeout() {
    let rig = rig();
    let client = client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let result = client
        .post(rig.url("/upload"))
        .body(reqwest::blocking::Body::new(Stall { sent: false }))
        .send();
    if let Ok(resp) = &result {
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(
            resp.status(),
            408,
            "the stalled upload was not answered 408"
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || rig
            .client_errors("body_timeout")
            >= 1.0),
        "no body_timeout counted: {result:?}"
    );
}

#[test]
fn client_failures_on_tls_are_counted_and_never_logged_as_errors() {
    let rig = rig();
    // Not TLS and not HTTP: the handshake fails.
    let mut garbage = open(local(rig.https));
    garbage
        .write_all(b"\x00\x01\x02\x03 not a client hello\r\n\r\n")
        .unwrap();
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink);
    // A TLS client that goes away halfway through its handshake.
    let mut half = open(local(rig.https));
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    drop(half);
    // Plain HTTP on the TLS port.
    let ex = exchange(
        local(rig.https),
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        1,
    );
    assert_eq!(ex.responses.first().map(|r| r.status), Some(400));
    // An h2 request the client abandons.
    let client = client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let _ = client.get(rig.url("/delay/3000")).send();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = rig.admin.get("/metrics").text;
            metric_sum(
                &m,
                "switchyard_tls_handshake_errors_total",
                &[("listener", "https")],
            ) >= 2.0
                && rig.client_errors("plain_http_on_tls") >= 1.0
        }),
        "the handshake failures and the plain HTTP request were not counted:\n{}",
        rig.admin.get("/metrics").text
    );
    let errors: Vec<_> = rig
        .proxy
        .stderr()
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .map(str::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "client failures logged at ERROR:\n{}",
        errors.join("\n")
    );
}

/// Short client timeouts on a TLS listener.
fn short_timeouts() -> String {
    CONFIG.replace(
        "[defaults]\nclient_body_timeout = \"1s\"",
        "[defaults]\nclient_header_timeout = \"2s\"\nkeepalive_timeout = \"2s\"",
    )
}

#[test]
fn a_silent_tls_client_and_an_idle_h2_connection_are_closed() {
    let config = short_timeouts();
    assert!(config.contains("keepalive_timeout = \"2s\""));
    let rig = rig_with(&config);
    let (https, admin) = (rig.https, &rig.admin);

    // Connects and never starts its handshake: the handshake is bounded by
    // client_header_timeout (2 s), not pingora's fixed 60 s.
    let started = std::time::Instant::now();
    let mut silent = open(local(https));
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the silent TLS client got bytes");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a silent TLS client stayed {:?}",
        started.elapsed()
    );

    // An h2 connection left idle (the client keeps it pooled) is closed after keepalive_timeout.
    let client = https_client();
    let resp = client
        .get(format!("https://localhost:{https}/"))
        .send()
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    drop(resp);
    let open_connections = || {
        metric_sum(
            &admin.get("/metrics").text,
            "switchyard_downstream_connections",
            &[("listener", "https")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(20), || open_connections() == 0.0),
        "the idle h2 connection is still open"
    );
    drop(client);
}
