//! Limits as nginx counts them, over real sockets: requests in progress per key (each h2 stream
//! counted, with nghttp; idle keep-alive connections not), a sliding-window zone's exact count,
//! a configurable refusal status, and a 413 that reaches a client still sending its body
//! (curl without `Expect:`, a raw client that sends everything before reading, chunked).
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

const LIMITS: &str = r#"
[limits]
status = 503

[limits.zones.busy]
kind = "concurrency"
key = "client_ip"
max = 2

[limits.zones.hourly]
kind = "window"
key = "client_ip"
rate = "5r/h"

[limits.zones.strict]
key = "client_ip"
rate = "1r/h"
status = 429

"#;

fn setup() -> Running {
    World::new()
        .https()
        .fallback_certificate("example.com")
        .backend("blue")
        .admin()
        .pool("api", "blue", 1, &["blue"])
        .toml(LIMITS)
        .route("*", "api")
        .route_with(Route::new("busy.test", "api").set("limits", vec!["busy"]))
        .route_with(Route::new("hourly.test", "api").set("limits", vec!["hourly"]))
        .route_with(Route::new("strict.test", "api").set("limits", vec!["strict"]))
        .route_with(Route::new("upload.test", "api").set("max_body_size", "1KB"))
        .start(BIN)
}

fn keys(s: &Running, zone: &str) -> Option<f64> {
    let text = Admin::new(s.admin_port(), None).get("/metrics").text;
    metric(&text, "switchyard_rate_limit_keys", &[("zone", zone)])
}

/// `nghttp` fetching `path` `n` times at once over one HTTP/2 connection: the statuses.
fn nghttp_statuses(s: &Running, path: &str, n: usize) -> Vec<u16> {
    let nghttp = peer("nghttp", "nghttp2-client");
    let out = Command::new(nghttp)
        .args(["-nv", "-m", &n.to_string(), "-H", ":authority: busy.test"])
        .arg(format!("https://127.0.0.1:{}{path}", s.https()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // One connection, n streams.
    assert_eq!(
        text.matches("] Connected").count(),
        1,
        "one connection:\n{text}"
    );
    assert_eq!(
        text.matches("send HEADERS frame").count(),
        n,
        "{n} streams:\n{text}"
    );
    text.lines()
        .filter_map(|l| l.trim().split_once(":status: ").map(|(_, v)| v.trim()))
        .filter_map(|v| v.parse().ok())
        .collect()
}

#[test]
fn concurrency_counts_h2_streams_and_not_idle_connections() {
    let s = setup();
    // Four streams at once on one h2 connection, each held 3 s by the backend: two pass, two
    // are refused at once with the global status (503) and no Retry-After.
    let mut statuses = nghttp_statuses(&s, "/delay/3000", 4);
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 503, 503]);
    // Every request ended: nothing counted any more (keys at 0 are dropped).
    assert!(
        wait_until(Duration::from_secs(5), || keys(&s, "busy") == Some(0.0)),
        "keys: {:?}",
        keys(&s, "busy")
    );

    // A refusal's answer (HTTP/1.1 this time).
    let client = http1_client();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = s.url("busy.test", "/delay/4000");
            let c = http1_client();
            std::thread::spawn(move || c.get(url).send().unwrap().status())
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || keys(&s, "busy") == Some(1.0)));
    // Both slow requests in progress (on a busy machine the second may start late).
    let in_flight = || {
        let text = Admin::new(s.admin_port(), None).get("/metrics").text;
        metric(&text, "switchyard_requests_in_flight", &[])
    };
    assert!(
        wait_until(Duration::from_secs(5), || in_flight() == Some(2.0)),
        "in flight: {:?}",
        in_flight()
    );
    let mut refused = None;
    // Both slow requests are in progress for most of their 4 s.
    let third = wait_until(Duration::from_secs(4), || {
        let r = client.get(s.url("busy.test", "/x")).send().unwrap();
        let busy = r.status() == 503;
        if busy {
            refused = Some(r);
        }
        busy
    });
    assert!(third, "a third request in progress must be refused");
    let refused = refused.unwrap();
    assert!(refused.headers().get("retry-after").is_none());
    let body = json_body(refused);
    assert_eq!(body["status"], 503);
    assert_eq!(body["error"], "too many requests in progress");
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }

    // Idle keep-alive connections hold nothing: three clients each leave one open, then two
    // requests at once still pass.
    let idle: Vec<_> = (0..3)
        .map(|_| {
            let c = http1_client();
            assert_eq!(
                c.get(s.url("busy.test", "/x")).send().unwrap().status(),
                200
            );
            c
        })
        .collect();
    let pair: Vec<_> = (0..2)
        .map(|_| {
            let url = s.url("busy.test", "/delay/500");
            let c = http1_client();
            std::thread::spawn(move || c.get(url).send().unwrap().status())
        })
        .collect();
    for t in pair {
        assert_eq!(t.join().unwrap(), 200);
    }
    drop(idle);

    // A client that goes away mid-request gives its place back.
    let mut gone = TcpStream::connect(("127.0.0.1", s.http())).unwrap();
    gone.write_all(b"GET /delay/3000 HTTP/1.1\r\nHost: busy.test\r\n\r\n")
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || keys(&s, "busy") == Some(1.0)));
    drop(gone);
    assert!(
        wait_until(Duration::from_secs(6), || keys(&s, "busy") == Some(0.0)),
        "the aborted request still counts: {:?}",
        keys(&s, "busy")
    );
}

#[test]
fn window_zone_allows_exactly_n_then_the_zone_status() {
    let s = setup();
    let client = http1_client();
    for i in 0..5 {
        let r = client.get(s.url("hourly.test", "/x")).send().unwrap();
        assert_eq!(r.status(), 200, "request {i} of 5 per hour");
    }
    let limited = client.get(s.url("hourly.test", "/x")).send().unwrap();
    assert_eq!(limited.status(), 503, "the 6th, with [limits] status = 503");
    // The two-window estimate lets the 5 (sent at the start of the zone's first window) fade
    // over the next hour: one more passes once 5 * (1 - g) <= 4, 72 min after them.
    let wait: u64 = header(&limited, "retry-after").parse().unwrap();
    assert!((3600..=4320).contains(&wait), "Retry-After {wait}");
    assert_eq!(header(&limited, "ratelimit-limit"), "5");
    assert_eq!(json_body(limited)["error"], "rate limit exceeded");
    // A route without the zone is unaffected.
    assert_eq!(
        client
            .get(s.url("other.test", "/x"))
            .send()
            .unwrap()
            .status(),
        200
    );

    // A zone's own status wins over [limits] status.
    assert_eq!(
        client
            .get(s.url("strict.test", "/x"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let r = client.get(s.url("strict.test", "/x")).send().unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
}

fn upload_addr(s: &Running) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.http()))
}

/// Sends `head` and then `body` whole before reading anything, as a simple client does: the
/// answer, or the error the client saw.
fn send_all_then_read(s: &Running, head: &[u8], body: &[u8]) -> Result<String, String> {
    let mut stream = TcpStream::connect(upload_addr(s)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head).map_err(|e| format!("head: {e}"))?;
    stream.write_all(body).map_err(|e| format!("body: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(String::from_utf8_lossy(&answer).to_string())
}

#[test]
fn a_body_over_the_limit_gets_its_413_not_a_reset() {
    let s = setup();
    let big = vec![b'x'; 8 << 20];
    // Declared length over the limit, the whole body sent before reading.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: upload.test\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let answer = send_all_then_read(&s, head.as_bytes(), &big).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body too large"), "{answer}");

    // Chunked, crossing the limit on the way.
    let mut chunked = Vec::new();
    for piece in big.chunks(64 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /upload HTTP/1.1\r\nHost: upload.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = send_all_then_read(&s, head.as_bytes(), &chunked).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // curl with the body from a file, without and with Expect: 100-continue.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let curl = peer("curl", "curl");
    for expect in [&["-H", "Expect:"][..], &[][..]] {
        let out = Command::new(&curl)
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(expect)
            .args(["-H", "Host: upload.test", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("http://127.0.0.1:{}/upload", s.http()))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "413",
            "curl {expect:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "curl {expect:?}: {out:?}");
    }
    // Only the chunked upload reached the backend: it streams until it crosses the limit.
    assert_eq!(s.backend("blue").requests(), 1);
}

#[test]
fn zone_config_errors() {
    let bad = |zone: &str| {
        let config = World::new()
            .catch_all_blue()
            .toml(&format!("[limits.zones.z]\n{zone}"))
            .config();
        let (code, _, err) = check(BIN, &config);
        assert_ne!(code, 0, "{zone} must be refused");
        err
    };
    assert!(
        bad("kind = \"concurrency\"\nrate = \"1r/s\"\nmax = 1").contains("`rate` does not apply")
    );
    assert!(bad("kind = \"concurrency\"").contains("needs `max`"));
    assert!(bad("kind = \"window\"\nrate = \"1r/s\"\nburst = 3").contains("`burst` does not apply"));
    assert!(bad("kind = \"sliding\"\nrate = \"1r/s\"").contains("unknown zone kind"));
    assert!(bad("rate = \"1r/s\"\nstatus = 200").contains("between 400 and 599"));
}
