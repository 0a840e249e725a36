//! The one place where errors become HTTP responses: status mapping, the small JSON error body, and the configured error pages (`pages`).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora_error::{Error, ErrorSource, ErrorType};

use super::ctx::Ctx;

/// Why the proxy answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoRoute,
    BodyTooLarge,
    NoServer,
    BadRequest,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoRoute => 404,
            Refusal::BodyTooLarge => 413,
            Refusal::NoServer => 503,
            Refusal::BadRequest => 400,
        }
    }

    /// As a pingora error, for phases that can only fail (the status survives to `fail_to_proxy`).
    pub fn into_error(self, context: &'static str) -> Box<Error> {
        Error::explain(ErrorType::HTTPStatus(self.status()), context)
    }
}

/// The status a failed request is answered with.
///
/// Upstream timeouts are 504 and other upstream failures 502, as nginx does; statuses chosen by the
/// proxy itself travel as `HTTPStatus`. A downstream that went away gets nothing (0).
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                ReadTimedout | WriteTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "authentication required",
        403 => "access denied",
        404 => "no route for this host and path",
        405 => "method not allowed",
        408 => "request timed out",
        413 => "request body too large",
        416 => "range not satisfiable",
        429 => "rate limit exceeded",
        502 => "upstream failed",
        503 => "no upstream server available",
        504 => "upstream timed out",
        _ => "error",
    }
}

/// `{"error":"...","status":N,"request_id":"..."}`
pub fn body(status: u16, request_id: &str) -> Bytes {
    body_with(status, None, request_id)
}

/// [`body`] with `error` saying more than the status's usual reason.
pub fn body_with(status: u16, error: Option<&str>, request_id: &str) -> Bytes {
    let value = serde_json::json!({
        "error": error.unwrap_or(reason(status)),
        "status": status,
        "request_id": request_id,
    });
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Writes an error response with the JSON body; the connection is closed afterwards. A gRPC
/// call gets the status as a gRPC status instead (`grpc.rs`).
pub async fn write_error(
    session: &mut ServerSession,
    ctx: &Ctx,
    status: u16,
) -> pingora_error::Result<()> {
    write_error_with(session, ctx, status, None).await
}

/// [`write_error`] with the body's `error` given ([`body_with`]).
pub async fn write_error_with(
    session: &mut ServerSession,
    ctx: &Ctx,
    status: u16,
    error: Option<&str>,
) -> pingora_error::Result<()> {
    write_error_headers(session, ctx, status, error, &[]).await
}

/// [`write_error_with`] with more headers on the answer (`Allow` on a 405, `Content-Range` on a
/// 416).
pub async fn write_error_headers(
    session: &mut ServerSession,
    ctx: &Ctx,
    status: u16,
    error: Option<&str>,
    headers: &[(http::header::HeaderName, String)],
) -> pingora_error::Result<()> {
    if super::grpc::is_grpc(session) {
        let message = error.unwrap_or(reason(status));
        return super::grpc::write_status(session, status, message, &ctx.request_id, &[]).await;
    }
    let (body, content_type) =
        super::pages::error_body(session.req_header(), ctx, status, None, error);
    let mut resp = error_header(status, &body, content_type, &ctx.request_id)?;
    for (name, value) in headers {
        resp.insert_header(name.clone(), value.as_str())?;
    }
    decorate(&mut resp, ctx, session.req_header())?;
    session.write_error_response(resp, body).await
}

/// An error answered before any request state exists (a request head that could not be read):
/// no route, so nothing to decorate it with.
pub async fn write_bare_error(
    session: &mut ServerSession,
    status: u16,
    request_id: &str,
) -> pingora_error::Result<()> {
    let body = body(status, request_id);
    let resp = error_header(status, &body, "application/json", request_id)?;
    session.write_error_response(resp, body).await
}

fn error_header(
    status: u16,
    body: &Bytes,
    content_type: &'static str,
    request_id: &str,
) -> pingora_error::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("x-request-id", request_id)?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    Ok(resp)
}

/// What every answer of Switchyard's own (errors, refusals, redirects) carries from the request's
/// route, or from `[defaults]` when no route matched: the configured response headers (set, with
/// their variables, and removed), as nginx's `add_header ... always` puts them on every status,
/// and the CORS headers for an allowed origin, so a browser can read the answer (`headers.rs`).
pub fn decorate(
    resp: &mut ResponseHeader,
    ctx: &Ctx,
    req: &pingora::http::RequestHeader,
) -> pingora_error::Result<()> {
    super::headers::decorate_own(resp, ctx, req)
}

/// An answer of Switchyard's own with `headers` besides the usual ones (WWW-Authenticate, ...)
/// and `body` as given (content type, bytes), or the JSON error body (with `error`) when `None`:
/// the access refusals (`access.rs`). The connection stays open. A gRPC call gets the status as a
/// gRPC status.
pub async fn write_answer(
    session: &mut ServerSession,
    ctx: &Ctx,
    status: u16,
    headers: &[(http::HeaderName, http::HeaderValue)],
    body: Option<(http::HeaderValue, Bytes)>,
    error: Option<&str>,
) -> pingora_error::Result<()> {
    let request_id = ctx.request_id.as_str();
    if super::grpc::is_grpc(session) {
        let message = error.unwrap_or(reason(status));
        return super::grpc::write_status(session, status, message, request_id, &[]).await;
    }
    let (content_type, body) = match body {
        Some(b) => b,
        None => (
            http::HeaderValue::from_static("application/json"),
            body_with(status, error, request_id),
        ),
    };
    let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    resp.insert_header("x-request-id", request_id)?;
    for (name, value) in headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    decorate(&mut resp, ctx, session.req_header())?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await
}

/// Whole seconds for Retry-After and RateLimit-Reset, rounded up.
pub fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

/// A zone's refusal (429 unless configured otherwise) with Retry-After and the RateLimit-*
/// headers (neither for a concurrency zone: no wait is meaningful); the connection stays open.
pub async fn write_rate_limited(
    session: &mut ServerSession,
    ctx: &Ctx,
    refused: super::limit::Refused,
) -> pingora_error::Result<()> {
    let request_id = ctx.request_id.as_str();
    let status = refused.status;
    let wait = refused.retry_after.map(|w| whole_seconds(w).max(1));
    let mut hints = Vec::new();
    if let Some(wait) = wait {
        hints.extend([
            ("retry-after", wait.to_string()),
            ("ratelimit-limit", refused.limit.to_string()),
            ("ratelimit-remaining", "0".to_string()),
            ("ratelimit-reset", wait.to_string()),
        ]);
    }
    let error = if wait.is_some() {
        "rate limit exceeded"
    } else {
        "too many requests in progress"
    };
    if super::grpc::is_grpc(session) {
        return super::grpc::write_status(session, status, error, request_id, &hints).await;
    }
    let (body, content_type) =
        super::pages::error_body(session.req_header(), ctx, status, None, Some(error));
    let mut resp = ResponseHeader::build(status, Some(8))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    for (name, value) in hints {
        resp.insert_header(name, value)?;
    }
    resp.insert_header("x-request-id", request_id)?;
    decorate(&mut resp, ctx, session.req_header())?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await
}

/// 503 for a service in maintenance, with Retry-After and the operator's page (else the error
/// pages for 503, else the JSON body); the connection stays open. A gRPC call gets UNAVAILABLE.
pub async fn write_maintenance(
    session: &mut ServerSession,
    ctx: &Ctx,
    gate: &crate::maintenance::Gate,
) -> pingora_error::Result<()> {
    const REASON: &str = "the service is in maintenance";
    let retry_after = gate.retry_after.to_string();
    if super::grpc::is_grpc(session) {
        let hints = [("retry-after", retry_after)];
        return super::grpc::write_status(session, 503, REASON, &ctx.request_id, &hints).await;
    }
    let req = session.req_header();
    let (body, content_type) =
        super::pages::error_body(req, ctx, 503, Some(&gate.pages), Some(REASON));
    let mut resp = error_header(503, &body, content_type, &ctx.request_id)?;
    resp.insert_header(http::header::RETRY_AFTER, retry_after)?;
    decorate(&mut resp, ctx, session.req_header())?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await
}

/// 200 with an ACME HTTP-01 key authorization as the body.
pub async fn write_acme_challenge(
    session: &mut ServerSession,
    key_authorization: &str,
    request_id: &str,
) -> pingora_error::Result<()> {
    let body = Bytes::from(key_authorization.to_string());
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/octet-stream")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header("x-request-id", request_id)?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await
}

/// A permanent redirect that keeps the method and body (308).
pub async fn write_redirect(
    session: &mut ServerSession,
    ctx: &Ctx,
    location: &str,
) -> pingora_error::Result<()> {
    write_redirect_with(session, ctx, 308, location).await
}

/// A redirect with the given status (301, 302, 303, 307 or 308).
pub async fn write_redirect_with(
    session: &mut ServerSession,
    ctx: &Ctx,
    status: u16,
    location: &str,
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::LOCATION, location)?;
    resp.insert_header(http::header::CONTENT_LENGTH, 0)?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    decorate(&mut resp, ctx, session.req_header())?;
    session.write_response_header(Box::new(resp)).await?;
    session.finish_body().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors_like_nginx() {
        let up = |t: ErrorType| status_for(&Error::new_up(t));
        assert_eq!(up(ErrorType::ReadTimedout), 504);
        assert_eq!(up(ErrorType::ConnectTimedout), 504);
        assert_eq!(up(ErrorType::ConnectRefused), 502);
        assert_eq!(up(ErrorType::ConnectionClosed), 502);
        assert_eq!(status_for(&Refusal::BodyTooLarge.into_error("x")), 413);
        assert_eq!(status_for(&Error::new_down(ErrorType::ConnectionClosed)), 0);
    }

    #[test]
    fn error_body_is_small_json() {
        let b = body(404, "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["error"], "no route for this host and path");
    }
}
