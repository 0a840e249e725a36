//! gRPC clients get the proxy's own answers the way gRPC reads them: Trailers-Only responses with a `grpc-status` that says what happened.
//!
//! A gRPC client reads the HTTP status of a failed call only as "the server is not speaking gRPC"
//! (`UNKNOWN`/`UNAVAILABLE` with no detail). So when the request is gRPC (HTTP/2 with a
//! `content-type` of `application/grpc*`), an answer the proxy gives itself is a Trailers-Only
//! response: HTTP 200, `content-type: application/grpc`, `grpc-status` and `grpc-message` in the
//! one HEADERS frame that ends the stream. When the upstream's response has already begun, the
//! status goes out as trailers instead.

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use pingora::http::RequestHeader;
use pingora::http::ResponseHeader;
use pingora::protocols::http::{HttpTask, ServerSession};

/// gRPC status codes the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// The code for an HTTP status the proxy would answer a plain client with (gRPC's mapping
    /// of HTTP statuses, except that a rate limit is `RESOURCE_EXHAUSTED` and an upstream
    /// timeout `DEADLINE_EXCEEDED`, which say more).
    pub fn for_status(status: u16) -> Code {
        match status {
            400 | 500 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            413 | 429 => Code::ResourceExhausted,
            502 | 503 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// Whether the request is a gRPC call: HTTP/2 with `content-type: application/grpc` (or
/// `application/grpc+proto`, `application/grpc-web...`: any `application/grpc` prefix).
pub fn is_grpc(session: &ServerSession) -> bool {
    // gRPC runs on HTTP/2 only, and an HTTP/2 session always has its request head (an HTTP/1
    // session may not: a head that could not be read).
    session.is_http2() && is_grpc_request(session.req_header())
}

fn is_grpc_request(req: &RequestHeader) -> bool {
    req.headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        })
}

/// `grpc-message`: printable ASCII as it is, anything else (and `%`) percent-encoded.
fn message_value(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

/// Answers a gRPC call with the code for `status`: a Trailers-Only response, or trailers when
/// a response has already begun. `extra` headers (rate-limit hints) go into the HEADERS frame.
pub async fn write_status(
    session: &mut ServerSession,
    status: u16,
    message: &str,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<()> {
    let code = u16::from(Code::for_status(status) as u8);
    let message = format!("{message} (request {request_id})");
    if session.response_written().is_some() {
        let mut trailers = HeaderMap::with_capacity(2);
        trailers.insert("grpc-status", HeaderValue::from(code));
        trailers.insert("grpc-message", message_value(&message));
        return session.write_response_trailers(trailers).await;
    }
    let mut resp = ResponseHeader::build(200, Some(4 + extra.len()))?;
    resp.insert_header(CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", code)?;
    resp.insert_header("grpc-message", message_value(&message))?;
    resp.insert_header(super::names::X_REQUEST_ID, request_id)?;
    for (name, value) in extra {
        resp.insert_header(*name, value)?;
    }
    // One HEADERS frame with END_STREAM.
    session
        .response_duplex_vec(vec![HttpTask::Header(Box::new(resp), true)])
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_proxy_answers() {
        assert_eq!(Code::for_status(404), Code::Unimplemented);
        assert_eq!(Code::for_status(503), Code::Unavailable);
        assert_eq!(Code::for_status(429), Code::ResourceExhausted);
        assert_eq!(Code::for_status(401), Code::Unauthenticated);
        assert_eq!(Code::for_status(403), Code::PermissionDenied);
        assert_eq!(Code::for_status(504), Code::DeadlineExceeded);
        assert_eq!(Code::for_status(502), Code::Unavailable);
        assert_eq!(Code::Unimplemented as u8, 12);
    }

    #[test]
    fn grpc_content_types() {
        let req = |ct: &str| {
            let mut r = RequestHeader::build("POST", b"/pkg.Svc/Call", None).expect("request");
            r.insert_header("content-type", ct).expect("header");
            is_grpc_request(&r)
        };
        assert!(req("application/grpc"));
        assert!(req("application/grpc+proto"));
        assert!(req("Application/GRPC"));
        assert!(!req("application/json"));
        assert!(!req("application/gr"));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(
            message_value("no route (request 1)"),
            "no route (request 1)"
        );
        assert_eq!(message_value("100% é"), "100%25 %C3%A9");
    }
}
