//! A recording upstream that parses requests itself, so a test sees byte for byte what the proxy
//! forwarded, and a smuggled request shows up as an extra recorded request and an extra answer.
//
// Every connection gets its own thread. All bytes received are kept per connection; requests are
// parsed from them (head up to CRLFCRLF, then a body framed by chunked encoding or Content-Length)
// and each is answered `200 OK` with a text body naming the connection, the request's index on
// it, its method and its target.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the backend parsed it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which connection (in accept order, from 0) it came on.
    pub conn: usize,
    /// Its index on that connection, from 0.
    pub index: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    /// Header lines as received, in order: name as sent, value without surrounding whitespace.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty until `complete`).
    pub body: Vec<u8>,
    /// Whether the whole body arrived.
    pub complete: bool,
    /// The head exactly as received, request line to blank line included.
    pub raw_head: Vec<u8>,
}

impl Request {
    /// Every value of header `name` (any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }
}

/// How a [`RawBackend`] behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait this long before answering...
    pub delay: Duration,
    /// ...only for targets starting with this (every target when `None`).
    pub delay_prefix: Option<String>,
}

/// A position in a backend's record (see [`RawBackend::mark`]).
#[derive(Debug, Clone)]
pub struct Mark {
    requests: usize,
    raw_lens: Vec<usize>,
}

#[derive(Default)]
struct Shared {
    /// Every byte received, one entry per connection.
    raw: Mutex<Vec<Vec<u8>>>,
    requests: Mutex<Vec<Request>>,
    /// Requests the backend could not parse: "conn N: reason".
    errors: Mutex<Vec<String>>,
    /// A handle on every accepted socket, to close them all on drop.
    streams: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    options: Options,
}

/// Locks a mutex even when a connection thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The recording backend; stops (and closes every connection) when dropped.
pub struct RawBackend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl RawBackend {
    /// A backend that answers at once.
    pub fn spawn() -> RawBackend {
        RawBackend::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw backend");
        let addr = listener.local_addr().expect("raw backend address");
        let shared = Arc::new(Shared {
            options,
            ..Shared::default()
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("raw-backend".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn raw backend thread");
        RawBackend {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Every byte received so far, one entry per connection.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.raw).clone()
    }

    /// Every request parsed so far (the head is recorded as soon as it is complete).
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// What could not be parsed.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }

    /// The current end of the record, to look at what comes after it.
    pub fn mark(&self) -> Mark {
        Mark {
            requests: lock(&self.shared.requests).len(),
            raw_lens: lock(&self.shared.raw).iter().map(Vec::len).collect(),
        }
    }

    /// The requests recorded after `mark`.
    pub fn requests_since(&self, mark: &Mark) -> Vec<Request> {
        lock(&self.shared.requests)[mark.requests..].to_vec()
    }

    /// Waits until nothing new has arrived for 150 ms (at most 5 s): bytes the proxy sent before
    /// its answer to the client may still be on their way to this backend's connection threads
    /// (on busy cores, a new connection's thread can start late), and belong to the exchange
    /// that caused them, not to the next one.
    pub fn settle(&self) {
        let total = || -> (usize, usize) {
            let bytes = lock(&self.shared.raw).iter().map(Vec::len).sum();
            (bytes, lock(&self.shared.requests).len())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut last = total();
        let mut quiet = 0;
        while quiet < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = total();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
    }

    /// How many bytes arrived after `mark`, over all connections.
    pub fn bytes_since(&self, mark: &Mark) -> usize {
        lock(&self.shared.raw)
            .iter()
            .enumerate()
            .map(|(i, bytes)| bytes.len() - mark.raw_lens.get(i).copied().unwrap_or(0))
            .sum()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in lock(&self.shared.streams).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let conn = {
            let mut raw = lock(&shared.raw);
            raw.push(Vec::new());
            raw.len() - 1
        };
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.streams).push(clone);
        }
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("raw-backend-{conn}"))
            .spawn(move || serve(conn, stream, &shared));
        if spawned.is_err() {
            eprintln!("raw backend: cannot start a thread for connection {conn}");
        }
    }
}

/// Reads more bytes into `buf` (and the record); false at EOF or on an error.
fn read_more(conn: usize, stream: &mut TcpStream, buf: &mut Vec<u8>, shared: &Shared) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            lock(&shared.raw)[conn].extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How a request body is framed.
enum Framing {
    None,
    Length(usize),
    Chunked,
}

fn serve(conn: usize, mut stream: TcpStream, shared: &Shared) {
    let mut buf = Vec::new();
    let mut index = 0;
    loop {
        let head_len = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if !read_more(conn, &mut stream, &mut buf, shared) {
                return;
            }
        };
        let raw_head = buf[..head_len].to_vec();
        let mut request = match parse_head(&raw_head) {
            Ok(r) => r,
            Err(e) => return refuse(conn, &mut stream, shared, e),
        };
        request.conn = conn;
        request.index = index;
        buf.drain(..head_len);
        let slot = {
            let mut requests = lock(&shared.requests);
            requests.push(request.clone());
            requests.len() - 1
        };
        let framing = match framing(&request) {
            Ok(f) => f,
            Err(e) => return refuse(conn, &mut stream, shared, e),
        };
        let body = loop {
            let parsed = match framing {
                Framing::None => Ok(Some((Vec::new(), 0))),
                Framing::Length(n) => Ok((buf.len() >= n).then(|| (buf[..n].to_vec(), n))),
                Framing::Chunked => decode_chunked(&buf),
            };
            match parsed {
                Ok(Some((body, used))) => {
                    buf.drain(..used);
                    break body;
                }
                Ok(None) => {
                    if !read_more(conn, &mut stream, &mut buf, shared) {
                        return;
                    }
                }
                Err(e) => return refuse(conn, &mut stream, shared, e),
            }
        };
        {
            let mut requests = lock(&shared.requests);
            requests[slot].body = body;
            requests[slot].complete = true;
        }
        let options = &shared.options;
        let delayed = options
            .delay_prefix
            .as_deref()
            .is_none_or(|p| request.target.starts_with(p));
        if delayed && !options.delay.is_zero() {
            std::thread::sleep(options.delay);
        }
        let text = format!(
            "conn {conn} request {index}: {} {}\n",
            request.method, request.target
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        let close = request
            .header_values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"))
            || request.version == "HTTP/1.0";
        if close {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        index += 1;
    }
}

/// Records a parse failure, answers 400 and closes.
fn refuse(conn: usize, stream: &mut TcpStream, shared: &Shared, reason: String) {
    lock(&shared.errors).push(format!("conn {conn}: {reason}"));
    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let _ = stream.shutdown(Shutdown::Both);
}

fn parse_head(raw: &[u8]) -> Result<Request, String> {
    let text = String::from_utf8_lossy(&raw[..raw.len() - 4]);
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    let mut headers = Vec::new();
    for l in lines {
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| format!("header line without a colon: {l:?}"))?;
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Request {
        conn: 0,
        index: 0,
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body: Vec::new(),
        complete: false,
        raw_head: raw.to_vec(),
    })
}

fn framing(request: &Request) -> Result<Framing, String> {
    let te = request.header_values("transfer-encoding");
    if let Some(last) = te.last() {
        let final_coding = last.rsplit(',').next().unwrap_or_default().trim();
        return if final_coding.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(format!("transfer-encoding {te:?} without a final chunked"))
        };
    }
    match request.header("content-length") {
        None => Ok(Framing::None),
        Some(v) => v
            .parse()
            .map(Framing::Length)
            .map_err(|_| format!("bad content-length {v:?}")),
    }
}

/// Decodes a whole chunked body from the start of `buf`: `Ok(None)` while incomplete, else the
/// body and how many bytes it took.
fn decode_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[pos..pos + eol]).into_owned();
        pos += eol + 2;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|_| !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            // Trailer fields, up to an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += 2;
    }
}
