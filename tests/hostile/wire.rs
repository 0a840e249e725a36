//! Client-side raw socket helpers that never panic on what a hostile exchange can do to a
//! connection (EOF, reset, silence), so a test can assert on it, and the proxy-error checks.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::{is_request_id, ChunkedDecoder, RawResponse};

/// How long to wait for any answer at all.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep listening after the expected answers, for an extra (smuggled) one.
pub const QUIET: Duration = Duration::from_millis(500);

/// What came back on one connection.
#[derive(Debug)]
pub struct Exchange {
    /// Complete final responses, in order (1xx interim responses left out).
    pub responses: Vec<RawResponse>,
    /// Whether the proxy closed (EOF or reset) the connection.
    pub closed: bool,
    /// Bytes after the last complete response.
    pub leftover: Vec<u8>,
}

impl Exchange {
    /// The statuses of the responses, for messages.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        format!(
            "statuses {:?}, closed {}, bytes after them: {}",
            self.statuses(),
            self.closed,
            snippet(&self.leftover)
        )
    }
}

/// Connects to `addr` (no timeouts set).
pub fn open(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("set_nodelay");
    stream
}

/// Sends `request` on a fresh connection and reads the answers: see [`read_exchange`].
pub fn exchange(addr: SocketAddr, request: &[u8], want: usize) -> Exchange {
    let mut stream = open(addr);
    // A proxy that refuses early may close before taking every byte; what it answered still counts.
    let _ = stream.write_all(request);
    read_exchange(&mut stream, want, QUIET)
}

/// Reads responses until the connection closes, or until `want` responses came and then nothing
/// more for `quiet`, or until [`ANSWER_TIMEOUT`] passes without `want` responses.
pub fn read_exchange(stream: &mut TcpStream, want: usize, quiet: Duration) -> Exchange {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some((resp, used)) = parse_response(&buf, closed) {
            buf.drain(..used);
            if resp.status >= 200 {
                responses.push(resp);
            }
        }
        if closed {
            break;
        }
        let wait = if responses.len() >= want {
            quiet
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        if wait.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(wait))
            .expect("set_read_timeout");
        match stream.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => closed = true,
        }
    }
    Exchange {
        responses,
        closed,
        leftover: buf,
    }
}

/// Waits up to `timeout` for the peer to close the connection; returns whether it did and every
/// byte read meanwhile.
pub fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, got);
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (false, got)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (true, got),
        }
    }
}

/// At most 200 bytes of `bytes` as text, for messages.
pub fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    if bytes.len() > 200 {
        format!("{text:?}... ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One complete response from the start of `buf` and how many bytes it took; `eof` says that no
/// more bytes will come (a body without framing then ends here).
pub fn parse_response(buf: &[u8], eof: bool) -> Option<(RawResponse, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find_header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let rest = &buf[head_end..];
    let (body, used) = if status < 200 || status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if find_header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let used = decoder.decode(rest, &mut body).ok()?;
        if !decoder.is_done() {
            return None;
        }
        (body, used)
    } else if let Some(len) = find_header("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        (rest[..len].to_vec(), len)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    Some((
        RawResponse {
            status,
            headers,
            body,
        },
        head_end + used,
    ))
}

/// Checks that `resp` is an answer the proxy made itself with `status`, as the contract has it:
/// `Content-Type: application/json`, an `X-Request-Id` header, no `Server: Pingora`, and the body
/// `{"error": "...", "status": N, "request_id": "..."}`.
pub fn check_proxy_answer(resp: &RawResponse, status: u16) -> Result<(), String> {
    let body = snippet(&resp.body);
    if resp.status != status {
        return Err(format!(
            "status {} instead of {status} (body {body})",
            resp.status
        ));
    }
    let content_type = resp.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "{status} with Content-Type {content_type:?} instead of application/json (body {body})"
        ));
    }
    if resp.header("x-request-id").unwrap_or_default().is_empty() {
        return Err(format!("{status} without an X-Request-Id header"));
    }
    if let Some(server) = resp.header("server") {
        if server.to_ascii_lowercase().contains("pingora") {
            return Err(format!("{status} with a `Server: {server}` header"));
        }
    }
    let json: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("{status} body is not JSON ({e}): {body}"))?;
    if json["status"] != status {
        return Err(format!("{status} body has the wrong status: {json}"));
    }
    if json["error"].as_str().unwrap_or_default().is_empty() {
        return Err(format!("{status} body without an error text: {json}"));
    }
    if !is_request_id(json["request_id"].as_str().unwrap_or_default()) {
        return Err(format!(
            "{status} body without a generated request_id: {json}"
        ));
    }
    Ok(())
}

/// [`check_proxy_answer`] that panics.
pub fn assert_proxy_answer(resp: &RawResponse, status: u16) {
    if let Err(e) = check_proxy_answer(resp, status) {
        panic!("{e}");
    }
}

/// A plain `GET path` with `Connection: close` on a fresh connection; Ok when it gets a 200.
pub fn normal_get(addr: SocketAddr, host: &str, path: &str) -> Result<RawResponse, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut ex = exchange(addr, request.as_bytes(), 1);
    if ex.responses.is_empty() {
        return Err(format!(
            "a normal GET {path} got no answer ({})",
            ex.describe()
        ));
    }
    let r = ex.responses.swap_remove(0);
    if r.status == 200 {
        Ok(r)
    } else {
        Err(format!(
            "a normal GET {path} got {} ({})",
            r.status,
            snippet(&r.body)
        ))
    }
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
