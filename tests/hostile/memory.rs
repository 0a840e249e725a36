//! The memory an idle keep-alive client connection costs the proxy: thousands of idle clients
//! must not exhaust an edge proxy's memory.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use testkit::*;

use crate::wire::*;
use crate::BIN;

const CONNECTIONS: usize = 1000;
/// Bound per idle connection (the contract's 8 KB, with room for the allocator and a loose
/// measurement: one process, 1,000 connections, 2 s after).
const MAX_PER_CONNECTION: u64 = 24 * 1024;

/// The soft "Max open files" limit of this process (the proxy child inherits it).
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Max open files in /proc/self/limits:\n{limits}"))
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kb * 1024
}

/// One keep-alive request on `stream`; panics unless it is answered 200.
fn one_request(stream: &mut TcpStream, i: usize) {
    stream
        .write_all(format!("GET /conn/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n").as_bytes())
        .unwrap();
    let ex = read_exchange(stream, 1, Duration::ZERO);
    assert_eq!(ex.statuses(), [200], "connection {i}: {}", ex.describe());
    assert!(!ex.closed, "connection {i} was closed after its request");
}

#[test]
fn an_idle_keepalive_connection_costs_at_most_24_kb() {
    let limit = open_files_limit();
    assert!(
        limit >= 4096,
        "this test needs at least 4096 open files (it has {limit}): run `ulimit -n 4096` first"
    );
    let blue = Backend::spawn("blue").unwrap();
    let http = port();
    let proxy = Proxy::start(
        BIN,
        &fill(
            "{server}\n{http_listener}\n{catch_all_blue}",
            &[("http", &http), ("blue", &blue.addr)],
        ),
    );
    let addr = local(http);
    let mut warm = open(addr);
    one_request(&mut warm, 0);
    drop(warm);
    let before = rss(proxy.pid());

    let mut idle = Vec::with_capacity(CONNECTIONS);
    for i in 1..=CONNECTIONS {
        let mut stream = open(addr);
        one_request(&mut stream, i);
        idle.push(stream);
    }
    // The contract measures a while after the last request, once the connections sit idle.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss(proxy.pid());
    let per_connection = after.saturating_sub(before) / CONNECTIONS as u64;
    assert!(
        per_connection <= MAX_PER_CONNECTION,
        "{CONNECTIONS} idle keep-alive connections cost {} KB of RSS each \
         (RSS {} KB before, {} KB after); the bound is {} KB",
        per_connection / 1024,
        before / 1024,
        after / 1024,
        MAX_PER_CONNECTION / 1024
    );
    // Still serving, with every idle connection open.
    normal_get(addr, "h.test", "/after").unwrap();
    drop(idle);
}
