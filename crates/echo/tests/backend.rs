//! The echo backend on the wire: raw requests over a socket, checked byte for byte where tests rely on it.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use echo::{websocket_accept, Backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn websocket_accept_matches_rfc_6455_example() {
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

/// Reads one response (head and content-length body) from `stream`, leaving anything after it.
fn read_response(stream: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "EOF inside response head"
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    (head, body)
}

fn connect(backend: &Backend) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(backend.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

#[test]
fn serves_keepalive_requests_with_bodies() {
    let backend = Backend::spawn("blue").unwrap();
    let mut stream = connect(&backend);
    // Two pipelined requests: content-length and chunked bodies.
    stream
        .write_all(
            b"POST /x?y=1 HTTP/1.1\r\nHost: h\r\nA: 1\r\nA: 2\r\nContent-Length: 5\r\n\r\nhello\
              PUT /status/418 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        )
        .unwrap();
    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("x-backend: blue\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert_eq!(body.last(), Some(&b'\n'));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["backend"], "blue");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/x?y=1");
    assert_eq!(json["headers"]["a"], "1, 2");
    assert_eq!(json["headers"]["host"], "h");
    assert_eq!(json["body_bytes"], 5);

    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 418 I'm a teapot\r\n"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["method"], "PUT");
    assert_eq!(json["body_bytes"], 7);
    assert_eq!(backend.requests(), 2);

    // Connection: close is honoured.
    stream
        .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut stream);
    assert!(head.contains("connection: close\r\n"), "{head}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn drop_closes_without_answer() {
    let backend = Backend::spawn("blue").unwrap();
    let mut stream = connect(&backend);
    stream
        .write_all(b"GET /drop HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // Either a clean EOF or a reset; never an answer.
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn delay_waits() {
    let backend = Backend::spawn("slow").unwrap();
    let mut stream = connect(&backend);
    let start = std::time::Instant::now();
    stream
        .write_all(b"GET /delay/200 HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn websocket_upgrade_echoes() {
    let backend = Backend::spawn("ws").unwrap();
    let mut stream = connect(&backend);
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly",
        )
        .unwrap();
    let (head, _) = read_response(&mut stream);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    stream.write_all(b" and late \x00\xff").unwrap();
    let mut echoed = vec![0u8; 17];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, b"early and late \x00\xff");
}

#[test]
fn fail_ratio_one_always_fails() {
    let backend = Backend::builder("bad").fail_ratio(1.0).spawn().unwrap();
    assert_eq!(
        (
            backend.injected_failures(),
            backend.first_injected_failure()
        ),
        (0, None)
    );
    let before = Instant::now();
    let mut stream = connect(&backend);
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut stream);
        assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["backend"], "bad");
    }
    assert_eq!(backend.injected_failures(), 3);
    let times = backend.injected_failure_times();
    assert_eq!(times.len(), 3);
    assert!(times[0] >= before && times[0] <= times[2]);
    assert_eq!(backend.first_injected_failure(), Some(times[0]));
}

#[test]
fn stops_on_drop() {
    let backend = Backend::spawn("gone").unwrap();
    let addr = backend.addr;
    drop(backend);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn spawn_works_inside_a_runtime() {
    let backend = Backend::spawn("nested").unwrap();
    let mut stream = tokio::net::TcpStream::connect(backend.addr).await.unwrap();
    stream
        .write_all(b"GET /status/204 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "204 has no body: {text}");
    drop(backend);
}

#[test]
fn expect_continue_is_answered_before_the_body() {
    let backend = Backend::spawn("blue").unwrap();
    let mut stream = connect(&backend);
    stream
        .write_all(
            b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
    let (head, _) = read_response(&mut stream);
    assert_eq!(head, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").unwrap();
    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["body_bytes"], 5);
    assert_eq!(json["headers"]["expect"], "100-continue");
}

#[test]
fn head_announces_the_length_without_a_body() {
    let backend = Backend::spawn("blue").unwrap();
    let mut stream = connect(&backend);
    stream
        .write_all(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /h HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    // The HEAD answer's head, read byte by byte: its announced body must not follow it.
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let announced: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    let (get, body) = read_response(&mut stream);
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["method"], "GET");
    // The same echo but for the method's name: "HEAD" is one byte longer than "GET".
    assert_eq!(
        announced,
        body.len() + 1,
        "HEAD announces its own echo's length"
    );
}

#[test]
fn http10_closes_after_the_answer_and_bad_codes_are_400() {
    let backend = Backend::spawn("old").unwrap();
    for (request, status) in [
        (&b"GET /status/99 HTTP/1.0\r\n\r\n"[..], " 400 "),
        (&b"GET /delay/soon HTTP/1.0\r\n\r\n"[..], " 400 "),
        (&b"GET /status/503 HTTP/1.0\r\n\r\n"[..], " 503 "),
    ] {
        let mut stream = connect(&backend);
        stream.write_all(request).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(text.lines().next().unwrap().contains(status), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["backend"], "old");
    }
}

#[test]
fn websocket_without_key_is_400() {
    let backend = Backend::spawn("ws").unwrap();
    let mut stream = connect(&backend);
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
    let (head, _) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
}
