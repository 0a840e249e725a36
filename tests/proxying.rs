//! What the proxy adds and enforces on the way through: forwarded headers, request ids, the access log,
//! websockets, redirects, body limits, timeouts and upstream failures.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Every host to backend "blue" (service "api"), over plain HTTP and TLS, with a route per
/// option under test and one to a dead server.
fn setup() -> Running {
    World::new()
        .https()
        .fallback_certificate("example.com")
        .toml("[defaults.response_headers]\nX-Test-Header = \"from-defaults\"")
        .catch_all_blue()
        .dead("closed")
        .route_with(Route::new("secure.example.com", "api").set("redirect_https", true))
        .route_with(Route::new("limits.example.com", "api").set("max_body_size", "1KB"))
        .route_with(Route::new("slow.example.com", "api").set("read_timeout", "300ms"))
        .route("dead.example.com", "dead")
        .route_with(Route::new("nozip.example.com", "api").set("compression", false))
        .route_with(Route::new("nows.example.com", "api").set("websocket", false))
        .toml(
            "[[routes]]\nhost = \"hdr.example.com\"\nservice = \"api\"\n\
             [routes.response_headers]\nX-Test-Header = \"from-route\"",
        )
        .pool("dead", "main", 1, &["closed"])
        .start(BIN)
}

fn http_addr(s: &Running) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.http()))
}

#[test]
fn forwarded_headers_over_http() {
    let s = setup();
    let client = http1_client();
    let host = format!("fwd.example.com:{}", s.http());

    let resp = client
        .get(format!("http://{host}/hdr?x=1"))
        .header("X-Forwarded-For", "1.2.3.4")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let response_id = header(&resp, "x-request-id");
    let body = json_body(resp);
    let h = &body["headers"];
    assert_eq!(body["backend"], "blue");
    assert_eq!(body["path"], "/hdr?x=1");
    assert_eq!(h["host"], host.as_str(), "Host must be preserved");
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    let fwd_host = h["x-forwarded-host"].as_str().unwrap_or_default();
    assert!(
        fwd_host == host || fwd_host == "fwd.example.com",
        "x-forwarded-host {fwd_host:?}, expected the client's Host"
    );
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert!(
        is_request_id(&response_id),
        "generated x-request-id {response_id:?}"
    );
    assert_eq!(
        h["x-request-id"],
        response_id.as_str(),
        "backend and client see the same request id"
    );

    // Without a client X-Forwarded-For the proxy starts one; every request gets a fresh id.
    let resp = client.get(format!("http://{host}/again")).send().unwrap();
    let second_id = header(&resp, "x-request-id");
    let body = json_body(resp);
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(is_request_id(&second_id));
    assert_ne!(
        second_id, response_id,
        "request ids must differ per request"
    );

    // X-Forwarded-For cannot be named hop-by-hop (pingora refuses a Connection field that names
    // it, as it does Host and X-Forwarded-Host/-Proto): the list the upstream request carries is
    // always the one the client sent, which `request_filter` reads once for `forwarded::apply`.
    let resp = client
        .get(format!("http://{host}/hop"))
        .header("Connection", "X-Forwarded-For")
        .header("X-Forwarded-For", "1.2.3.4")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .get(format!("http://{host}/keep"))
        .header("Connection", "keep-alive, X-Custom")
        .header("X-Custom", "hop")
        .header("X-Forwarded-For", "1.2.3.4")
        .send()
        .unwrap();
    let body = json_body(resp);
    assert_eq!(body["headers"]["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(body["headers"]["x-custom"], serde_json::Value::Null);

    // A client-supplied request id is kept.
    let resp = client
        .get(format!("http://{host}/mine"))
        .header("X-Request-Id", "client-chosen-id-42")
        .send()
        .unwrap();
    assert_eq!(header(&resp, "x-request-id"), "client-chosen-id-42");
    let body = json_body(resp);
    assert_eq!(body["headers"]["x-request-id"], "client-chosen-id-42");
}

/// A forwarding field a client sends (each name alone, as a spoofing client would send it) is
/// replaced by ours upstream, never passed on beside it.
#[test]
fn forwarding_fields_a_client_sends_are_replaced_not_repeated() {
    let s = setup();
    let client = http1_client();
    let host = format!("fwd.example.com:{}", s.http());
    for (name, value) in [
        ("X-Real-IP", "198.51.100.6"),
        ("X-Forwarded-Proto", "gopher"),
        ("X-Forwarded-Host", "evil.test"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ] {
        let resp = client
            .get(format!("http://{host}/spoof"))
            .header(name, value)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let body = json_body(resp);
        let h = &body["headers"];
        assert_eq!(h["x-real-ip"], "127.0.0.1", "{name}");
        assert_eq!(h["x-forwarded-proto"], "http", "{name}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{name}");
        let fwd_host = h["x-forwarded-host"].as_str().unwrap_or_default();
        assert!(
            fwd_host == host || fwd_host == "fwd.example.com",
            "{name}: x-forwarded-host {fwd_host:?}"
        );
        // The trace goes on under our span: one traceparent, the client's trace id in it.
        let trace = h["traceparent"].as_str().unwrap_or_default();
        assert!(!trace.contains(','), "{name}: traceparent {trace:?}");
        assert_eq!(trace.len(), 55, "{name}: traceparent {trace:?}");
        if name == "traceparent" {
            assert!(
                trace.contains("0af7651916cd43dd8448eb211c80319c"),
                "{trace:?}"
            );
            assert_ne!(trace, value);
        }
    }
}

#[test]
fn forwarded_proto_is_https_over_tls() {
    let s = setup();
    let resp = http1_client()
        .get(format!("https://fwd.example.com:{}/tls", s.https()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let body = json_body(resp);
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        body["headers"]["host"],
        format!("fwd.example.com:{}", s.https())
    );
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
}

/// Values new on every response (the request id) go out over h2 as HPACK "never indexed"
/// literals (nghttp marks those fields "sensitive"): indexed, each would take a slot of the
/// dynamic table that no later response uses, evicting the fields that repeat. The fields that
/// repeat are still indexed.
#[test]
fn per_response_values_are_never_indexed_over_h2() {
    let s = setup();
    let nghttp = peer("nghttp", "nghttp2-client");
    let out = std::process::Command::new(nghttp)
        .args(["-nv", "-m", "2", "-H", ":authority: fwd.example.com"])
        .arg(format!("https://127.0.0.1:{}/h2", s.https()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "[  0.028] recv (stream_id=13, sensitive) x-request-id: 442133dc..."
    let received = |name: &str| -> Vec<(bool, String)> {
        text.lines()
            .filter_map(|l| l.split_once("] recv (stream_id=").map(|(_, r)| r))
            .filter_map(|r| r.split_once(") "))
            .filter_map(|(meta, field)| {
                let value = field.strip_prefix(name)?.strip_prefix(": ")?;
                Some((meta.contains("sensitive"), value.to_string()))
            })
            .collect()
    };
    let ids = received("x-request-id");
    assert_eq!(ids.len(), 2, "two responses:\n{text}");
    assert!(
        ids.iter().all(|(never_indexed, _)| *never_indexed),
        "{text}"
    );
    assert_ne!(ids[0].1, ids[1].1);
    let types = received("content-type");
    assert_eq!(types.len(), 2, "{text}");
    assert!(
        types.iter().all(|(never_indexed, _)| !never_indexed),
        "{text}"
    );
}

/// Waits for the access log line with `request_id`.
fn access_log_entry(proxy: &Proxy, request_id: &str) -> serde_json::Value {
    let mut found = None;
    let appeared = wait_until(Duration::from_secs(5), || {
        found = proxy
            .access_log()
            .into_iter()
            .find(|e| e["request_id"] == request_id);
        found.is_some()
    });
    assert!(
        appeared,
        "no access log line with request_id {request_id}; log:\n{}",
        std::fs::read_to_string(proxy.access_log_path()).unwrap_or_default()
    );
    found.unwrap()
}

#[test]
fn access_log_line_per_request() {
    let s = setup();
    let client = http1_client();

    let resp = client
        .post(format!(
            "http://log.example.com:{}/status/201?x=1",
            s.http()
        ))
        .header("X-Request-Id", "access-log-test-1")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    let sent = resp.bytes().unwrap().len();

    let e = access_log_entry(&s.proxy, "access-log-test-1");
    assert!(
        !e["time"].as_str().unwrap_or_default().is_empty(),
        "time: {e}"
    );
    assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
    assert_eq!(e["method"], "POST", "{e}");
    assert!(
        e["host"]
            .as_str()
            .unwrap_or_default()
            .starts_with("log.example.com"),
        "host: {e}"
    );
    assert!(
        e["path"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/status/201"),
        "path: {e}"
    );
    assert_eq!(e["status"], 201, "{e}");
    let bytes = e["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("bytes is not a number: {e}"));
    assert!(
        bytes as usize >= sent,
        "bytes {bytes} < body size {sent}: {e}"
    );
    assert!(
        e["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "duration_ms: {e}"
    );
    assert!(!e["route"].is_null(), "route: {e}");
    assert_eq!(e["service"], "api", "{e}");
    assert_eq!(e["pool"], "blue", "{e}");
    assert_eq!(e["upstream"], s.backend("blue").addr.to_string(), "{e}");
    assert!(
        e["upstream_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "upstream_ms: {e}"
    );

    // A generated id is logged too.
    let resp = client
        .get(format!("http://log.example.com:{}/gen", s.http()))
        .send()
        .unwrap();
    let id = header(&resp, "x-request-id");
    assert!(is_request_id(&id));
    let e = access_log_entry(&s.proxy, &id);
    assert_eq!(e["method"], "GET", "{e}");
    assert_eq!(e["status"], 200, "{e}");
}

/// Connects to the http listener and sends a websocket upgrade request for `/ws` on `host`.
fn websocket_upgrade(s: &Running, host: &str) -> TcpStream {
    let mut stream = connect(http_addr(s));
    stream
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {host}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                s.http()
            )
            .as_bytes(),
        )
        .unwrap();
    stream
}

#[test]
fn websocket_upgrade_and_echo() {
    let s = setup();
    let mut stream = websocket_upgrade(&s, "ws.example.com");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    assert!(lower.contains("x-backend: blue\r\n"), "{head}");

    for message in [
        &b"hello websocket"[..],
        &[0x81, 0x05, 0x00, 0xff, 0x10, b'\r', b'\n'][..],
    ] {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
}

#[test]
fn route_redirect_https() {
    let s = setup();
    let client = http1_client();
    let resp = client
        .get(format!(
            "http://secure.example.com:{}/a/b?c=d&e=f",
            s.http()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        header(&resp, "location"),
        "https://secure.example.com/a/b?c=d&e=f"
    );

    // Other routes on the same listener are not redirected.
    let resp = client
        .get(format!("http://x.example.com:{}/a", s.http()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Over TLS the redirecting route serves normally.
    let resp = client
        .get(format!("https://secure.example.com:{}/a/b?c=d", s.https()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body(resp)["path"], "/a/b?c=d");
    assert_eq!(
        s.backend("blue").requests(),
        2,
        "the redirect must not reach the backend"
    );
}

#[test]
fn listener_redirect_https() {
    let w = World::bare()
        .listener("plain", false)
        .https()
        .fallback_certificate("example.com")
        .catch_all_blue();
    let https = w.port("https");
    let w = w
        .listener_option("plain", "redirect_https", true)
        .listener_option("plain", "https_port", i64::from(https))
        .start(BIN);
    let (http, blue) = (w.port("plain"), w.backend("blue"));
    let client = http1_client();
    for (host, path) in [("a.example.com", "/"), ("other.test", "/x/y?q=1&r")] {
        let resp = client
            .get(format!("http://{host}:{http}{path}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 308, "{host}{path}");
        assert_eq!(
            header(&resp, "location"),
            format!("https://{host}:{https}{path}")
        );
    }
    let resp = client
        .get(format!("https://a.example.com:{https}/x/y?q=1"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body(resp)["path"], "/x/y?q=1");
    assert_eq!(blue.requests(), 1);
}

#[test]
fn content_length_over_limit_is_413() {
    let s = setup();
    let client = http1_client();
    let url = format!("http://limits.example.com:{}/upload", s.http());

    let resp = client.post(&url).body(vec![b'a'; 1000]).send().unwrap();
    assert_eq!(resp.status(), 200, "1000 bytes are under the 1KB limit");
    assert_eq!(json_body(resp)["body_bytes"], 1000);

    let resp = client.post(&url).body(vec![b'a'; 1025]).send().unwrap();
    assert_eq!(resp.status(), 413);
    assert_proxy_error(&json_body(resp), 413);

    // Declared too large: refused from the headers alone.
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: limits.example.com\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n"
            .to_vec();
    request.extend_from_slice(&[b'b'; 2048]);
    let resp = raw_request(http_addr(&s), &request);
    assert_eq!(resp.status, 413);
    assert_proxy_error(&resp.json(), 413);
    assert_eq!(
        s.backend("blue").requests(),
        1,
        "only the small upload may reach the backend"
    );
}

#[test]
fn chunked_body_over_limit_is_413() {
    let s = setup();
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: limits.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    let chunk = [b'c'; 512];
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_request(http_addr(&s), &request);
    assert_eq!(resp.status, 413, "2048 chunked bytes over a 1KB limit");
    assert_proxy_error(&resp.json(), 413);

    // Under the limit, chunked passes.
    let request = b"POST /upload HTTP/1.1\r\nHost: limits.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                    5\r\nhello\r\n0\r\n\r\n";
    let resp = raw_request(http_addr(&s), request);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_bytes"], 5);
}

#[test]
fn slow_upstream_is_504() {
    let s = setup();
    let start = Instant::now();
    // The backend would answer after 10 s; the 504 comes after the 300 ms read timeout (with
    // 10x room for a loaded machine).
    let resp = http1_client()
        .get(format!("http://slow.example.com:{}/delay/10000", s.http()))
        .send()
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(resp.status(), 504);
    assert_proxy_error(&json_body(resp), 504);
    assert!(
        elapsed < Duration::from_secs(3),
        "504 took {elapsed:?} with read_timeout 300ms"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "504 came before the read timeout: {elapsed:?}"
    );

    // A fast answer on the same route is fine.
    let resp = http1_client()
        .get(format!("http://slow.example.com:{}/delay/10", s.http()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn closed_upstream_port_is_502_quickly() {
    let s = setup();
    let start = Instant::now();
    let resp = http1_client()
        .get(format!("http://dead.example.com:{}/", s.http()))
        .send()
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(resp.status(), 502);
    let request_id = header(&resp, "x-request-id");
    let body = json_body(resp);
    assert_proxy_error(&body, 502);
    assert_eq!(body["request_id"], request_id.as_str());
    // At once (a refused connect), not after the 30 s connect timeout; room for a loaded machine.
    assert!(elapsed < Duration::from_secs(5), "502 took {elapsed:?}");
}

#[test]
fn backend_status_passes_through() {
    let s = setup();
    let resp = http1_client()
        .get(format!("http://a.example.com:{}/status/503", s.http()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-backend"), "blue");
    let body = json_body(resp);
    assert_eq!(
        body["backend"], "blue",
        "a backend's own 503 is forwarded as is"
    );
}

#[test]
fn configured_response_headers() {
    let s = setup();
    let client = http1_client();
    let resp = client
        .get(format!("http://a.example.com:{}/", s.http()))
        .send()
        .unwrap();
    assert_eq!(header(&resp, "x-test-header"), "from-defaults");
    let resp = client
        .get(format!("http://hdr.example.com:{}/", s.http()))
        .send()
        .unwrap();
    assert_eq!(header(&resp, "x-test-header"), "from-route");
    assert_eq!(resp.headers().get_all("x-test-header").iter().count(), 1);
}

#[test]
fn compression_follows_the_route_option() {
    let s = setup();
    let client = http1_client();
    let get = |host: &str| {
        client
            .get(format!("http://{host}:{}/compress-me", s.http()))
            .header("Accept-Encoding", "gzip")
            .send()
            .unwrap()
    };
    let zipped = get("zip.example.com");
    assert_eq!(zipped.status(), 200);
    assert_eq!(header(&zipped, "content-encoding"), "gzip");
    let bytes = zipped.bytes().unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");

    let plain = get("nozip.example.com");
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(json_body(plain)["path"], "/compress-me");
}

#[test]
fn websocket_off_drops_the_upgrade() {
    let s = setup();
    let mut stream = websocket_upgrade(&s, "nows.example.com");
    let resp = read_response(&mut stream);
    assert_eq!(resp.status, 200, "the backend answers a plain request");
    let seen = resp.json();
    assert!(seen["headers"].get("upgrade").is_none(), "{seen}");
}
