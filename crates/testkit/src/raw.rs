//! Raw HTTP/1.x over a plain socket: write bytes as they are, read one response back (head, then a content-length, chunked or until-EOF body).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::ChunkedDecoder;

/// One HTTP/1.x response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Connects to `addr` with a 10 s read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    stream
}

/// Writes `request` as is and reads one response.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = connect(addr);
    stream.write_all(request).expect("write request");
    read_response(&mut stream)
}

/// Reads exactly one response (head, then a content-length, chunked or until-EOF body) from `stream`.
/// Responses without a body (1xx, 204, 304) stop after the head.
pub fn read_response(stream: &mut TcpStream) -> RawResponse {
    let head = read_head(stream);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if status < 200 || status == 204 || status == 304 {
        Vec::new()
    } else if find("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pending = Vec::new();
        let mut buf = [0u8; 8192];
        while !decoder.is_done() {
            let n = stream.read(&mut buf).expect("read chunked body");
            assert!(n > 0, "EOF inside chunked body");
            pending.extend_from_slice(&buf[..n]);
            let used = decoder
                .decode(&pending, &mut body)
                .expect("valid chunked body");
            pending.drain(..used);
        }
        body
    } else if let Some(len) = find("content-length") {
        let mut body = vec![0u8; len.parse().expect("numeric content-length")];
        stream.read_exact(&mut body).expect("read body");
        body
    } else {
        let mut body = Vec::new();
        stream.read_to_end(&mut body).expect("read body to EOF");
        body
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Reads a response head byte by byte (so nothing after it is consumed) up to the blank line.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(_) => panic!(
                "EOF before the end of the response head; got {:?}",
                String::from_utf8_lossy(&raw)
            ),
            Err(e) => panic!(
                "reading the response head: {e}; got {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    String::from_utf8(raw).expect("response head is not UTF-8")
}
