//! PROXY protocol behind a real HAProxy (`send-proxy-v2` and `send-proxy`): the client HAProxy saw
//! is the client for the access log, X-Real-IP/X-Forwarded-For and rate-limit keys; peers not in
//! `trusted_proxies` and connections without a header are refused. Everything runs on loopback,
//! so the clients bind 127.0.0.2 and up, and only 127.0.0.1 (HAProxy, or the test writing a
//! header by hand) is trusted.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// A HAProxy in TCP mode: one frontend per entry, each to `target` with the given server
/// option (`send-proxy-v2`, `send-proxy`). Stopped by PID when dropped.
struct Haproxy {
    child: Child,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(target: u16, modes: &[&str]) -> Haproxy {
        let haproxy = peer("haproxy", "haproxy");
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = String::from(
            "global\n  maxconn 256\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n\n",
        );
        let mut ports = Vec::new();
        for (i, mode) in modes.iter().enumerate() {
            let port = port();
            ports.push(port);
            cfg.push_str(&format!(
                "frontend fe{i}\n  bind 127.0.0.1:{port}\n  default_backend be{i}\n\n\
                 backend be{i}\n  server sy 127.0.0.1:{target} {mode}\n\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let h = Haproxy {
            child,
            ports,
            _dir: dir,
        };
        for port in &h.ports {
            let up = wait_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", *port)).is_ok()
            });
            assert!(up, "haproxy did not listen on {port}");
        }
        h
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to 127.0.0.1:`to` from the loopback address `from` (std cannot bind before
/// connecting; tokio's socket can, and hands the connection over).
fn connect_from(from: [u8; 4], to: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket
            .connect(SocketAddr::from(([127, 0, 0, 1], to)))
            .await
            .unwrap()
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// One GET over `stream` (which may start with `preamble`, a hand-written PROXY header).
fn get(mut stream: TcpStream, preamble: &[u8], host: &str) -> RawResponse {
    let request = format!("GET /who HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(preamble).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut stream)
}

/// Whether the proxy closed `stream` without a byte of answer.
fn refused(mut stream: TcpStream, send: &[u8]) -> bool {
    let _ = stream.write_all(send);
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

fn world() -> World {
    World::new()
        .listener_option("http", "proxy_protocol", true)
        .catch_all_blue()
        .admin()
        .toml(
            r#"
[limits]
trusted_proxies = ["127.0.0.1"]

[limits.zones.per_client]
key = "client_ip"
rate = "1r/h"
burst = 1

[defaults]
limits = ["per_client"]
"#,
        )
}

fn client_errors(w: &Running, kind: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", w.admin_url()))
        .unwrap()
        .text()
        .unwrap();
    metric(
        &text,
        "switchyard_client_errors_total",
        &[("listener", "http"), ("kind", kind)],
    )
    .unwrap_or(0.0)
}

#[test]
fn haproxy_clients_are_the_clients_for_headers_logs_and_rate_limits() {
    let w = world().start(BIN);
    let haproxy = Haproxy::start(w.http(), &["send-proxy-v2", "send-proxy"]);
    let (v2, v1) = (haproxy.ports[0], haproxy.ports[1]);

    // Through send-proxy-v2, from 127.0.0.2: the backend is told 127.0.0.2, not HAProxy.
    let r = get(connect_from([127, 0, 0, 2], v2), b"", "a.test");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let echo = r.json();
    assert_eq!(echo["headers"]["x-real-ip"], "127.0.0.2");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.2");

    // Through send-proxy (v1), from 127.0.0.3.
    let r = get(connect_from([127, 0, 0, 3], v1), b"", "a.test");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-real-ip"], "127.0.0.3");

    // Rate-limit keys: 127.0.0.2 runs out of its two requests (rate 1 + burst 1) ...
    let r = get(connect_from([127, 0, 0, 2], v2), b"", "a.test");
    assert_eq!(r.status, 200);
    let r = get(connect_from([127, 0, 0, 2], v2), b"", "a.test");
    assert_eq!(r.status, 429, "the third request of 127.0.0.2");
    // ... while 127.0.0.3, behind the same HAProxy, still has one left: keyed by client.
    let r = get(connect_from([127, 0, 0, 3], v2), b"", "a.test");
    assert_eq!(r.status, 200, "127.0.0.3 has its own key");

    // The access log names the clients.
    let clients = || -> Vec<String> {
        w.proxy
            .access_log()
            .iter()
            .filter_map(|e| e["client_ip"].as_str().map(str::to_string))
            .collect()
    };
    assert!(wait_until(Duration::from_secs(5), || clients().len() >= 5));
    let clients = clients();
    assert!(
        clients.iter().all(|c| c == "127.0.0.2" || c == "127.0.0.3"),
        "{clients:?}"
    );
    assert!(
        !clients.iter().any(|c| c == "127.0.0.1"),
        "never HAProxy itself"
    );
}

#[test]
fn untrusted_peers_and_missing_headers_are_refused() {
    let w = world().start(BIN);
    let header = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n";

    // A trusted peer (127.0.0.1) writing the header by hand: its client is 203.0.113.9.
    let r = get(connect_from([127, 0, 0, 1], w.http()), header, "a.test");
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["headers"]["x-real-ip"], "203.0.113.9");
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.9");

    // The same header from a peer that is not trusted: closed without an answer.
    let request = [header.as_slice(), b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"].concat();
    assert!(refused(connect_from([127, 0, 0, 5], w.http()), &request));
    assert!(wait_until(Duration::from_secs(5), || client_errors(
        &w,
        "proxy_protocol_untrusted"
    ) >= 1.0));

    // A trusted peer without a header: closed too.
    assert!(refused(
        connect_from([127, 0, 0, 1], w.http()),
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    ));
    // And a malformed one.
    assert!(refused(
        connect_from([127, 0, 0, 1], w.http()),
        b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n"
    ));
    assert!(wait_until(Duration::from_secs(5), || client_errors(
        &w,
        "proxy_protocol_invalid"
    ) >= 2.0));
}

#[test]
fn tls_listener_behind_haproxy_sees_the_client_and_still_answers_plain_http() {
    let w = World::bare()
        .https()
        .certificate("localhost")
        .listener_option("https", "proxy_protocol", true)
        .catch_all_blue()
        .toml("[limits]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start(BIN);
    let haproxy = Haproxy::start(w.https(), &["send-proxy-v2"]);
    let front = haproxy.ports[0];

    // TLS through HAProxy's TCP pass-through, from 127.0.0.4.
    let client = client_builder()
        .local_address(IpAddr::from([127, 0, 0, 4]))
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://localhost:{front}/who"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo = json_body(resp);
    assert_eq!(echo["headers"]["x-real-ip"], "127.0.0.4");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // Plain HTTP sent to the TLS listener, after the PROXY header: still the 400 that says so.
    let r = get(connect_from([127, 0, 0, 4], front), b"", "localhost");
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("plain HTTP"));
}

#[test]
fn connection_caps_count_the_client_not_haproxy() {
    let w = World::new()
        .listener_option("http", "proxy_protocol", true)
        .catch_all_blue()
        .toml("[limits]\ntrusted_proxies = [\"127.0.0.1\"]\nmax_connections_per_ip = 1\n")
        .start(BIN);
    let haproxy = Haproxy::start(w.http(), &["send-proxy-v2"]);
    let front = haproxy.ports[0];
    // 127.0.0.2 holds its one connection open (keep-alive after a first request).
    let mut held = connect_from([127, 0, 0, 2], front);
    held.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut held).status, 200);
    // A second one of 127.0.0.2 is over its cap ...
    let r = get(connect_from([127, 0, 0, 2], front), b"", "a.test");
    assert_eq!(r.status, 503, "127.0.0.2 is at max_connections_per_ip");
    // ... while 127.0.0.3, through the same HAProxy, is not.
    let r = get(connect_from([127, 0, 0, 3], front), b"", "a.test");
    assert_eq!(r.status, 200, "127.0.0.3 has its own count");
    drop(held);
}
