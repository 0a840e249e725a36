//! The hyper service behind every backend connection: the echo answer, the special paths, failure injection.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Shared;

/// Largest accepted request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in one request head (hyper's default is 100; the proxy adds its own).
const MAX_HEADERS: usize = 1024;
/// Upper bound for `/delay/{ms}`.
const MAX_DELAY_MS: u64 = 60_000;
/// The fixed GUID of RFC 6455 section 1.3.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Err(err) => {
                // Typically EMFILE: back off briefly instead of spinning.
                log::warn!("backend {}: accept failed: {err}", shared.name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Latency matters more than packet count for a test upstream; failure only costs speed.
    let _ = stream.set_nodelay(true);
    let name = shared.name.clone();
    let service = service_fn(move |req| handle(req, Arc::clone(&shared)));
    let connection = http1::Builder::new()
        // A test upstream waits as long as its client does (the old hand-written one did too).
        .header_read_timeout(None)
        .auto_date_header(false)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(err) = connection.await {
        log::debug!("backend {name}: connection ended: {err}");
    }
}

/// Why a request gets no answer: its connection is closed instead.
#[derive(Debug)]
enum Dropped {
    /// `/drop` asked for it.
    Asked,
    /// The request body could not be read (the client closed mid-body, or bad framing).
    Body(hyper::Error),
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::Asked => f.write_str("closed without an answer (/drop)"),
            Dropped::Body(err) => write!(f, "request body: {err}"),
        }
    }
}

impl std::error::Error for Dropped {}

type Answer = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Answer, Dropped> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let target = req.uri().to_string();
    let path = target.split('?').next().unwrap_or_default().to_string();
    if path == "/ws"
        && req.method() == Method::GET
        && has_token(req.headers(), "upgrade", "websocket")
    {
        return Ok(websocket(req, &shared));
    }
    let keep_alive = keep_alive(req.version(), req.headers());
    let method = req.method().clone();
    let headers = joined_headers(req.headers());
    let body_bytes = count_body(req.into_body()).await.map_err(Dropped::Body)?;

    let mut status = 200;
    if path == "/drop" {
        return Err(Dropped::Asked);
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
    if shared.inject_failure() {
        status = shared.fail_status;
    }
    let echo = Echo {
        backend: &shared.name,
        method: method.as_str(),
        path: &target,
        headers,
        body_bytes,
    };
    Ok(echo_response(
        &echo,
        status,
        method == Method::HEAD,
        keep_alive,
    ))
}

/// Reads the whole request body (which lets hyper send `100 Continue`), keeping only its length.
async fn count_body(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
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

fn echo_response(echo: &Echo<'_>, status: u16, head: bool, keep_alive: bool) -> Answer {
    // Invariant: Echo holds only strings, a string-keyed map and an integer, which always serialize.
    let mut body = serde_json::to_vec(echo).expect("echo body always serializes");
    body.push(b'\n');
    // 204 and 304 never carry a body; HEAD answers announce the length they would have.
    let no_body = status == 204 || status == 304;
    let length = body.len();
    let body = if no_body || head {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert("x-backend", backend_header(echo.backend));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if !no_body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if !keep_alive {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The backend's name as a header value (a name that is not one shows as `?`).
fn backend_header(name: &str) -> HeaderValue {
    HeaderValue::from_str(name).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// Answers the upgrade and then, once hyper hands the connection over, echoes every byte back
/// until the client closes its side.
fn websocket(mut req: Request<Incoming>, shared: &Shared) -> Answer {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return plain_error(StatusCode::BAD_REQUEST);
    };
    let accept = websocket_accept(&String::from_utf8_lossy(key.as_bytes()));
    let upgrade = hyper::upgrade::on(&mut req);
    let name = shared.name.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                log::debug!("backend {name}: websocket upgrade failed: {err}");
                return;
            }
        };
        if let Err(err) = echo_bytes(TokioIo::new(upgraded)).await {
            log::debug!("backend {name}: websocket ended: {err}");
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    headers.insert("x-backend", backend_header(&shared.name));
    response
}

/// Writes back whatever arrives (the bytes sent along with the upgrade request first) until EOF.
async fn echo_bytes<S>(mut stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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

/// A bodiless answer that closes the connection, for requests too broken to echo.
fn plain_error(status: StatusCode) -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// All comma-separated tokens of every value of header `name`, trimmed.
fn header_tokens<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether any value of header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    header_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// HTTP/1.1 keeps the connection unless asked to close; HTTP/1.0 closes unless asked to keep it.
fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    if has_token(headers, "connection", "close") {
        false
    } else {
        version >= Version::HTTP_11 || has_token(headers, "connection", "keep-alive")
    }
}

/// Headers by lowercased name, repeated headers joined with ", " in arrival order.
fn joined_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.as_str().to_string())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keep_alive_rules() {
        let h11 = Version::HTTP_11;
        let h10 = Version::HTTP_10;
        assert!(keep_alive(h11, &headers(&[])));
        assert!(!keep_alive(h11, &headers(&[("connection", "Close")])));
        assert!(!keep_alive(h11, &headers(&[("connection", "te, close")])));
        assert!(!keep_alive(h10, &headers(&[])));
        assert!(keep_alive(h10, &headers(&[("connection", "keep-alive")])));
    }

    #[test]
    fn repeated_headers_are_joined_in_order() {
        let joined = joined_headers(&headers(&[
            ("x-thing", "one"),
            ("host", "example.com"),
            ("x-thing", "two"),
        ]));
        assert_eq!(joined["x-thing"], "one, two");
        assert_eq!(joined["host"], "example.com");
        assert_eq!(joined.len(), 2);
        assert!(has_token(
            &headers(&[("upgrade", "h2c, WebSocket")]),
            "upgrade",
            "websocket"
        ));
    }
}
