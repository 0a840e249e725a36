//! HTTP/1 header names on the wire: normalised by default (titled when well known, lowercase otherwise, as HAProxy and Envoy write them), kept as written with `preserve_header_case`, in both directions.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;

use testkit::*;

/// An upstream that answers every request with a header in mixed case and a body holding the
/// request head exactly as it arrived (one request per connection).
fn raw_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nX-Mixed-CASE: yes\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                head.len()
            );
            let _ = conn.write_all(answer.as_bytes());
            let _ = conn.write_all(&head);
        }
    });
    port
}

const CONFIG: &str = r#"
[server]
access_log = "off"
{case}

[[listeners]]
name = "http"
address = "127.0.0.1:{http}"

[[routes]]
host = "*"
service = "raw"

[services.raw.pools.main]
servers = ["127.0.0.1:{upstream}"]
"#;

/// The response head and body a client gets for a request with mixed-case header names.
fn exchange(case: &str) -> (String, String) {
    let (http, upstream) = (port(), raw_upstream());
    let _proxy = Proxy::start(
        bin!(),
        &fill(
            CONFIG,
            &[("case", &case), ("http", &http), ("upstream", &upstream)],
        ),
    );
    let (tx, rx) = mpsc::channel();
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    std::thread::spawn(move || {
        let mut conn = raw::connect(addr);
        conn.write_all(b"GET / HTTP/1.1\r\nHost: case.test\r\nX-Client-MiXed: 1\r\n\r\n")
            .unwrap();
        let head = raw::read_head(&mut conn);
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_string)
            })
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).unwrap();
        tx.send((head, String::from_utf8(body).unwrap())).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap()
}

#[test]
fn header_names_are_normalised_by_default() {
    let (head, upstream_saw) = exchange("");
    assert!(head.contains("\r\nx-mixed-case: yes\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain\r\n"), "{head}");
    assert!(
        upstream_saw.contains("\r\nx-client-mixed: 1\r\n"),
        "{upstream_saw}"
    );
    assert!(
        upstream_saw.contains("\r\nHost: case.test\r\n"),
        "{upstream_saw}"
    );
}

#[test]
fn header_case_is_kept_when_asked() {
    let (head, upstream_saw) = exchange("preserve_header_case = true");
    assert!(head.contains("\r\nX-Mixed-CASE: yes\r\n"), "{head}");
    assert!(
        upstream_saw.contains("\r\nX-Client-MiXed: 1\r\n"),
        "{upstream_saw}"
    );
}
