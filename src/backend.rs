//! A tiny HTTP/1.1 echo server that plays the upstream in `switchyard demo`, the tests and the benchmarks.
//
// Every answer describes the request it received as JSON, so a test can see exactly what the proxy
// forwarded:
//
//   {"backend":"blue","method":"GET","path":"/a?b=c","headers":{"host":"..."},"body_bytes":0}
//
// Special paths: `/status/{code}` answers with that status, `/delay/{ms}` waits before answering,
// `/drop` closes the connection without answering, and `/ws` with `Upgrade: websocket` switches
// protocols and echoes every byte back until EOF.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Largest accepted request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Longest accepted chunk-size or trailer line in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Upper bound for `/delay/{ms}`.
const MAX_DELAY_MS: u64 = 60_000;
/// How many injected failures a backend keeps the time of.
const FAILURE_TIMES: usize = 16;
/// The fixed GUID of RFC 6455 section 1.3.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// An echo backend running on its own thread; it stops when dropped.
pub struct Backend {
    /// The address the backend listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Options for a backend; see [`Backend::builder`].
#[derive(Debug, Clone)]
pub struct BackendBuilder {
    name: String,
    addr: SocketAddr,
    fail_ratio: f64,
    delay: Duration,
}

/// State shared by all connections of one backend.
struct Shared {
    name: String,
    fail_ratio: f64,
    /// Every answer waits this long first (a slow backend).
    delay: Duration,
    requests: AtomicU64,
    /// Answers turned into 500 by `fail_ratio`, and when the first [`FAILURE_TIMES`] of them
    /// were decided (the lock is taken on injected failures only).
    injected_failures: AtomicU64,
    failure_times: parking_lot::Mutex<Vec<Instant>>,
}

impl Backend {
    /// Starts a backend called `name` on a free port of 127.0.0.1.
    pub fn spawn(name: &str) -> std::io::Result<Backend> {
        Backend::builder(name).spawn()
    }

    /// Starts a backend called `name` on `addr` (the demo uses fixed ports).
    pub fn spawn_on(addr: SocketAddr, name: &str) -> std::io::Result<Backend> {
        Backend::builder(name).addr(addr).spawn()
    }

    /// Options beyond the name: listen address and failure injection.
    pub fn builder(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fail_ratio: 0.0,
            delay: Duration::ZERO,
        }
    }

    /// The name the backend reports in `x-backend` and in its JSON bodies.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests this backend has parsed so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// How many answers `fail_ratio` has turned into 500 so far.
    pub fn injected_failures(&self) -> u64 {
        self.shared.injected_failures.load(Ordering::Relaxed)
    }

    /// When the first answer was turned into 500 by `fail_ratio` (the rollback benchmark's "first
    /// canary error"); `None` before that.
    pub fn first_injected_failure(&self) -> Option<Instant> {
        self.shared.failure_times.lock().first().copied()
    }

    /// When the first 16 answers turned into 500 by `fail_ratio` were decided, in order.
    pub fn injected_failure_times(&self) -> Vec<Instant> {
        self.shared.failure_times.lock().clone()
    }

    /// Stops the backend and waits for its thread; open connections are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may already be gone (its runtime failed); nothing to tell it then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the backend thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl BackendBuilder {
    /// Share of requests (0.0 to 1.0) answered with 500 instead of their normal status.
    pub fn fail_ratio(mut self, ratio: f64) -> BackendBuilder {
        self.fail_ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// Makes every answer wait `delay` before it is sent (on top of `/delay/{ms}`).
    pub fn delay(mut self, delay: Duration) -> BackendBuilder {
        self.delay = delay;
        self
    }

    /// Address to bind (default 127.0.0.1:0, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> BackendBuilder {
        self.addr = addr;
        self
    }

    /// Binds the address and serves on a new thread with its own single-threaded runtime.
    pub fn spawn(self) -> std::io::Result<Backend> {
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(self.into_shared());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("backend-{}", shared.name))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            log::error!(
                                "backend {}: cannot register listener: {err}",
                                thread_shared.name
                            );
                            return;
                        }
                    };
                    tokio::select! {
                        _ = accept_loop(listener, thread_shared) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime here cancels every connection task and closes its socket.
            })?;
        Ok(Backend {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Serves on an already bound listener inside the caller's runtime; runs until cancelled.
    pub async fn serve(self, listener: TcpListener) {
        accept_loop(listener, Arc::new(self.into_shared())).await
    }

    fn into_shared(self) -> Shared {
        Shared {
            name: self.name,
            fail_ratio: self.fail_ratio,
            delay: self.delay,
            requests: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
            failure_times: parking_lot::Mutex::new(Vec::with_capacity(FAILURE_TIMES)),
        }
    }
}

/// Serves the echo backend called `name` on `listener` in the caller's runtime; runs until cancelled.
pub async fn serve(listener: TcpListener, name: String) {
    Backend::builder(&name).serve(listener).await
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(handle_connection(stream, Arc::clone(&shared)));
            }
            Err(err) => {
                // Typically EMFILE: back off briefly instead of spinning.
                log::warn!("backend {}: accept failed: {err}", shared.name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn handle_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    // Latency matters more than packet count for a test upstream; failure only costs speed.
    let _ = stream.set_nodelay(true);
    if let Err(err) = serve_connection(&mut stream, &shared).await {
        log::debug!("backend {}: connection ended: {err}", shared.name);
    }
}

/// Why a connection stopped being served.
#[derive(Debug)]
enum ConnError {
    Io(std::io::Error),
    Parse(ParseError),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(err) => write!(f, "i/o error: {err}"),
            ConnError::Parse(err) => write!(f, "bad request: {err}"),
        }
    }
}

impl From<std::io::Error> for ConnError {
    fn from(err: std::io::Error) -> Self {
        ConnError::Io(err)
    }
}

impl From<ParseError> for ConnError {
    fn from(err: ParseError) -> Self {
        ConnError::Parse(err)
    }
}

/// Serves requests on one connection until the client closes it or asks to.
async fn serve_connection(stream: &mut TcpStream, shared: &Shared) -> Result<(), ConnError> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Request head.
        let head_len = loop {
            skip_leading_crlf(&mut buf);
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                write_error(stream, 431).await?;
                return Ok(());
            }
            if read_more(stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = match parse_head(&buf[..head_len]) {
            Ok(head) => head,
            Err(err) => {
                write_error(stream, 400).await?;
                return Err(err.into());
            }
        };
        buf.drain(..head_len);
        shared.requests.fetch_add(1, Ordering::Relaxed);

        let path = head.path();
        if path == "/ws" && head.is_websocket_upgrade() {
            return websocket_echo(stream, shared, &head, buf).await;
        }

        // Request body.
        let framing = match body_framing(&head.headers) {
            Ok(framing) => framing,
            Err(err) => {
                write_error(stream, 400).await?;
                return Err(err.into());
            }
        };
        if framing != Framing::Empty && buf.is_empty() && head.expects_continue() {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body_bytes = match framing {
            Framing::Empty => 0,
            Framing::Length(len) => discard_exact(stream, &mut buf, len).await?,
            Framing::Chunked => match read_chunked(stream, &mut buf).await? {
                Some(len) => len,
                None => return Ok(()),
            },
        };

        // Answer.
        let mut status = 200;
        if path == "/drop" {
            return Ok(());
        } else if let Some(code) = path.strip_prefix("/status/") {
            status = match code.parse::<u16>() {
                Ok(code) if (200..=599).contains(&code) => code,
                _ => 400,
            };
        } else if let Some(ms) = path.strip_prefix("/delay/") {
            match ms.parse::<u64>() {
                Ok(ms) => tokio::time::sleep(Duration::from_millis(ms.min(MAX_DELAY_MS))).await,
                Err(_) => status = 400,
            }
        }
        if !shared.delay.is_zero() {
            tokio::time::sleep(shared.delay).await;
        }
        if shared.fail_ratio > 0.0 && fastrand::f64() < shared.fail_ratio {
            status = 500;
            shared.injected_failures.fetch_add(1, Ordering::Relaxed);
            let mut times = shared.failure_times.lock();
            if times.len() < FAILURE_TIMES {
                times.push(Instant::now());
            }
        }
        let keep_alive = head.keep_alive();
        let response = echo_response(shared, &head, status, body_bytes, keep_alive);
        stream.write_all(&response).await?;
        if !keep_alive {
            // The client asked to close; a failed FIN changes nothing for it.
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// Reads whatever the socket has into `buf`; 0 means EOF.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(8192);
    stream.read_buf(buf).await
}

/// Consumes exactly `len` body bytes (first from `buf`, then from the socket) without keeping them.
async fn discard_exact(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    len: u64,
) -> Result<u64, ConnError> {
    let buffered = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    buf.drain(..buffered);
    let mut remaining = len - buffered as u64;
    let mut scratch = vec![0u8; 16 * 1024];
    while remaining > 0 {
        let want = scratch
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = stream.read(&mut scratch[..want]).await?;
        if n == 0 {
            return Err(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "body ended early").into(),
            );
        }
        remaining -= n as u64;
    }
    Ok(len)
}

/// Decodes a chunked body, keeping only its length; `None` when the client closed mid-body.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<u64>, ConnError> {
    let mut decoder = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut total = 0u64;
    loop {
        let consumed = match decoder.decode(buf, &mut data) {
            Ok(consumed) => consumed,
            Err(err) => {
                write_error(stream, 400).await?;
                return Err(err.into());
            }
        };
        buf.drain(..consumed);
        total += data.len() as u64;
        data.clear();
        if decoder.is_done() {
            return Ok(Some(total));
        }
        if read_more(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Answers the upgrade and then echoes every byte back until the client closes its side.
async fn websocket_echo(
    stream: &mut TcpStream,
    shared: &Shared,
    head: &RequestHead,
    leftover: Vec<u8>,
) -> Result<(), ConnError> {
    let Some(key) = head.header("sec-websocket-key") else {
        write_error(stream, 400).await?;
        return Ok(());
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\nx-backend: {}\r\n\r\n",
        websocket_accept(key),
        shared.name
    );
    stream.write_all(response.as_bytes()).await?;
    if !leftover.is_empty() {
        stream.write_all(&leftover).await?;
    }
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut scratch).await?;
        if n == 0 {
            // Mirror the client's close; it may already be gone.
            let _ = stream.shutdown().await;
            return Ok(());
        }
        stream.write_all(&scratch[..n]).await?;
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn websocket_accept(key: &str) -> String {
    let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key.trim().as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finish())
}

async fn write_error(stream: &mut TcpStream, status: u16) -> std::io::Result<()> {
    stream.write_all(&plain_error_response(status)).await
}

/// A bodiless answer that closes the connection, for requests too broken to echo.
fn plain_error_response(status: u16) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        reason_phrase(status)
    )
    .into_bytes()
}

/// The JSON body every ordinary answer carries.
#[derive(Serialize)]
struct Echo<'a> {
    backend: &'a str,
    method: &'a str,
    path: &'a str,
    headers: BTreeMap<String, String>,
    body_bytes: u64,
}

fn echo_response(
    shared: &Shared,
    head: &RequestHead,
    status: u16,
    body_bytes: u64,
    keep_alive: bool,
) -> Vec<u8> {
    let echo = Echo {
        backend: &shared.name,
        method: &head.method,
        path: &head.target,
        headers: head.joined_headers(),
        body_bytes,
    };
    // Invariant: Echo holds only strings, a string-keyed map and an integer, which always serialize.
    let mut body = serde_json::to_vec(&echo).expect("echo body always serializes");
    body.push(b'\n');

    let mut out = Vec::with_capacity(body.len() + 160);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    out.extend_from_slice(
        format!(
            "x-backend: {}\r\ncontent-type: application/json\r\n",
            shared.name
        )
        .as_bytes(),
    );
    // 204 and 304 never carry a body; HEAD answers announce the length they would have.
    let no_body = status == 204 || status == 304;
    if !no_body {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !no_body && head.method != "HEAD" {
        out.extend_from_slice(&body);
    }
    out
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown")
}

/// A malformed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

/// Request line and headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestHead {
    method: String,
    /// The raw request target, query included.
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor_version: u8,
    /// Header names lowercased, in arrival order, repeats kept.
    headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The target without its query.
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The first value of header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any value of header `name` lists `token` (comma-separated, case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        header_tokens(&self.headers, name).any(|t| t.eq_ignore_ascii_case(token))
    }

    fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            false
        } else {
            self.minor_version >= 1 || self.has_token("connection", "keep-alive")
        }
    }

    fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }

    fn is_websocket_upgrade(&self) -> bool {
        self.method == "GET" && self.has_token("upgrade", "websocket")
    }

    /// Headers by lowercased name, repeated headers joined with ", ".
    fn joined_headers(&self) -> BTreeMap<String, String> {
        let mut joined: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &self.headers {
            joined
                .entry(name.clone())
                .and_modify(|existing| {
                    existing.push_str(", ");
                    existing.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        joined
    }
}

/// All comma-separated tokens of every value of header `name`, trimmed.
fn header_tokens<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops empty lines in front of a request (RFC 9112 section 2.2 lets servers ignore them).
fn skip_leading_crlf(buf: &mut Vec<u8>) {
    let mut skip = 0;
    while buf[skip..].starts_with(b"\r\n") {
        skip += 2;
    }
    if skip > 0 {
        buf.drain(..skip);
    }
}

/// Length of the request head including its blank line, once it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Position of the first CRLF in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parses a complete request head (ending in the blank line).
fn parse_head(head: &[u8]) -> Result<RequestHead, ParseError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(ParseError("empty request"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError("request line is not `METHOD target HTTP/1.x`"));
    };
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(ParseError("invalid method"));
    }
    if target.is_empty() {
        return Err(ParseError("empty request target"));
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(ParseError("unsupported HTTP version")),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(ParseError("obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError("header line without colon"))?;
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError("invalid header name"));
        }
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers,
    })
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// Works out the body framing (RFC 9112 section 6.3): chunked wins over Content-Length.
fn body_framing(headers: &[(String, String)]) -> Result<Framing, ParseError> {
    let mut codings = header_tokens(headers, "transfer-encoding").peekable();
    if codings.peek().is_some() {
        return match codings.last() {
            Some(last) if last.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ => Err(ParseError("transfer-encoding does not end in chunked")),
        };
    }
    let mut length = None;
    for value in header_tokens(headers, "content-length") {
        if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ParseError("invalid content-length"));
        }
        let parsed: u64 = value
            .parse()
            .map_err(|_| ParseError("content-length too large"))?;
        if length.is_some_and(|known| known != parsed) {
            return Err(ParseError("conflicting content-length values"));
        }
        length = Some(parsed);
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(len) => Framing::Length(len),
    })
}

/// Incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 section 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank line.
    Trailer,
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes as much of `input` as possible, appending body data to `out`.
    ///
    /// Returns how many bytes of `input` were consumed; unconsumed bytes (an incomplete line, or
    /// whatever follows the body) must be presented again with more data appended.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ParseError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(line_len) = find_crlf(rest) else {
                        return incomplete_line(rest, pos);
                    };
                    let size = parse_chunk_size(&rest[..line_len])?;
                    pos += line_len + 2;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&c| c != b'\r') {
                            return Err(ParseError("chunk data not followed by CRLF"));
                        }
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ParseError("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line_len) = find_crlf(rest) else {
                        return incomplete_line(rest, pos);
                    };
                    pos += line_len + 2;
                    if line_len == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// Waits for the rest of a line unless it is already too long to be sane.
fn incomplete_line(rest: &[u8], pos: usize) -> Result<usize, ParseError> {
    if rest.len() > MAX_CHUNK_LINE {
        Err(ParseError("chunk line too long"))
    } else {
        Ok(pos)
    }
}

/// Parses `1a;ext=1` into 26.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits_end = line.iter().position(|&c| c == b';').unwrap_or(line.len());
    let digits = line[..digits_end].trim_ascii();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ParseError("invalid chunk size"));
    }
    let mut size = 0u64;
    for &c in digits {
        // Invariant: `c` is an ASCII hex digit (checked above) and at most 16 digits fit in u64.
        let digit = (c as char).to_digit(16).unwrap_or_default();
        size = (size << 4) | u64::from(digit);
    }
    Ok(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap freely
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ParseError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let consumed = decoder.decode(input, &mut out)?;
        Ok((out, consumed, decoder.is_done()))
    }

    #[test]
    fn chunked_whole_body() {
        let input = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (out, consumed, done) = decode_all(input).unwrap();
        assert_eq!(out, b"hello, world");
        assert!(done);
        assert_eq!(
            &input[consumed..],
            b"GET / HTTP/1.1\r\n",
            "must stop right after the body"
        );
    }

    #[test]
    fn chunked_byte_by_byte() {
        let input = b"A;name=value\r\n0123456789\r\n1\r\nx\r\n0\r\nx-trailer: 1\r\n\r\n";
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for &byte in input.iter() {
            assert!(!decoder.is_done());
            pending.push(byte);
            let consumed = decoder.decode(&pending, &mut out).unwrap();
            pending.drain(..consumed);
        }
        assert!(decoder.is_done());
        assert!(pending.is_empty());
        assert_eq!(out, b"0123456789x");
    }

    #[test]
    fn chunked_size_is_hex_and_case_insensitive() {
        let body = vec![b'z'; 0x1f];
        let mut input = b"1F\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (out, _, done) = decode_all(&input).unwrap();
        assert_eq!(out, body);
        assert!(done);
    }

    #[test]
    fn chunked_incomplete_waits() {
        let (out, consumed, done) = decode_all(b"5\r\nhel").unwrap();
        assert_eq!(out, b"hel");
        assert_eq!(consumed, 6);
        assert!(!done);
        let (out, consumed, done) = decode_all(b"5").unwrap();
        assert!(out.is_empty());
        assert_eq!(consumed, 0);
        assert!(!done);
    }

    #[test]
    fn chunked_rejects_garbage() {
        assert_eq!(
            decode_all(b"zz\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"+5\r\nhello\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"11111111111111111\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"3\r\nabcX\r\n").unwrap_err(),
            ParseError("chunk data not followed by CRLF")
        );
        assert_eq!(
            decode_all(&[b'1'; MAX_CHUNK_LINE + 1]).unwrap_err(),
            ParseError("chunk line too long")
        );
    }

    #[test]
    fn head_parsing() {
        let head = parse_head(
            b"POST /a/b?c=d&e HTTP/1.1\r\nHost: example.com\r\nX-Thing:  one \r\nx-thing:two\r\n\
              Content-Length: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/a/b?c=d&e");
        assert_eq!(head.path(), "/a/b");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.header("host"), Some("example.com"));
        let joined = head.joined_headers();
        assert_eq!(joined["x-thing"], "one, two");
        assert_eq!(joined["content-length"], "3");
        assert_eq!(joined.len(), 3);
        assert_eq!(body_framing(&head.headers), Ok(Framing::Length(3)));
    }

    #[test]
    fn head_parsing_rejects_malformed() {
        assert!(parse_head(b"GET /\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/2.0\r\n\r\n").is_err());
        assert!(parse_head(b"GET  / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\na: b\r\n folded\r\n\r\n").is_err());
    }

    #[test]
    fn keep_alive_rules() {
        let head = |raw: &[u8]| parse_head(raw).unwrap();
        assert!(head(b"GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n").keep_alive());
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn framing_rules() {
        let headers = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(body_framing(&headers(&[])), Ok(Framing::Empty));
        assert_eq!(
            body_framing(&headers(&[("content-length", "0")])),
            Ok(Framing::Empty)
        );
        assert_eq!(
            body_framing(&headers(&[
                ("transfer-encoding", "gzip, Chunked"),
                ("content-length", "5")
            ])),
            Ok(Framing::Chunked)
        );
        assert!(body_framing(&headers(&[("transfer-encoding", "gzip")])).is_err());
        assert_eq!(
            body_framing(&headers(&[("content-length", "7, 7")])),
            Ok(Framing::Length(7))
        );
        assert!(body_framing(&headers(&[
            ("content-length", "7"),
            ("content-length", "8")
        ]))
        .is_err());
        assert!(body_framing(&headers(&[("content-length", "-1")])).is_err());
        assert!(body_framing(&headers(&[("content-length", "99999999999999999999999")])).is_err());
    }

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
}
