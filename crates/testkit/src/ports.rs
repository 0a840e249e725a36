//! Ports for the servers a test starts that no other socket of the test run can be handed: taken below the kernel's ephemeral range, so a port-0 bind (a backend, a client) never gets one.
//!
//! A port of `bind 127.0.0.1:0, then release` could be taken by a parallel test's port-0 bind
//! before the proxy child binds it. Ports from [`port`] come from `[FIRST, ephemeral start)`,
//! starting in a block chosen by the process id (test binaries of parallel runs start apart), one
//! after the other from an atomic counter (threads of one binary never share one), each checked
//! free by a bind before it is handed out.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out (above the well-known and most registered service ports).
const FIRST: u16 = 10_000;
/// Ports per process block.
const BLOCK: u32 = 256;
/// The kernel's default start of the ephemeral range, when /proc does not say.
const DEFAULT_EPHEMERAL_START: u16 = 32_768;
/// Where the kernel's ephemeral range is configured.
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The span ports are handed out from and where this process starts in it.
struct Span {
    /// Ports in `[FIRST, FIRST + len)`.
    len: u32,
    /// This process's first port, as an offset from `FIRST`.
    start: u32,
}

fn span() -> &'static Span {
    static SPAN: OnceLock<Span> = OnceLock::new();
    SPAN.get_or_init(|| {
        let ephemeral = ephemeral_start();
        assert!(
            u32::from(ephemeral) >= u32::from(FIRST) + 4 * BLOCK,
            "the ephemeral port range starts at {ephemeral} ({PORT_RANGE}): the tests need \
             ports {FIRST} and up outside it"
        );
        let len = u32::from(ephemeral - FIRST);
        let blocks = len / BLOCK;
        Span {
            len,
            start: (std::process::id() % blocks) * BLOCK,
        }
    })
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string(PORT_RANGE)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

/// A TCP port on 127.0.0.1 that is free now and that no port-0 bind can take: for a listener
/// the test tells a child process to bind.
pub fn port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = span();
    for _ in 0..span.len {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = (span.start + n) % span.len;
        let port = FIRST + u16::try_from(offset).expect("offset below the ephemeral start");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {FIRST} and the ephemeral range")
}

/// A port from [`port`] that is free for UDP too (a DNS server binds both).
pub fn udp_and_tcp_port() -> u16 {
    loop {
        let port = port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port nothing listens on, and nothing in the tests can start listening on: taken from the
/// privileged range 600-999 (the OS never hands those out for port 0, and [`port`] starts far
/// above), a new one per call within this test process so that two dead servers of one config
/// have distinct addresses (and so distinct health state).
pub fn closed_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 400;
    600 + u16::try_from(n).expect("below 400")
}

/// `127.0.0.1:PORT` for a [`closed_port`]: a dead server.
pub fn closed_addr() -> String {
    format!("127.0.0.1:{}", closed_port())
}
