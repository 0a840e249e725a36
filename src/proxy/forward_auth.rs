//! Forward auth (nginx `auth_request`, Traefik `forwardAuth`): a GET to the route's auth service before the request goes upstream, over one shared client that keeps its connections.
//!
//! The subrequest carries the original method, URI, host and scheme as `X-Forwarded-Method`,
//! `-Uri`, `-Host` and `-Proto`, the client as `X-Forwarded-For`, the request id, the client's
//! `Authorization` and `Cookie`, and the route's `request_headers`; no body. A 2xx lets the request
//! through with the route's `response_headers` copied; a 401 or 403 goes back to the client with
//! its body and its `WWW-Authenticate`, `Set-Cookie`, `Location` and `Content-Type`; any other
//! answer, a failure to connect and a timeout give 500, as nginx's `auth_request` and Traefik do.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use super::ctx::Ctx;
use crate::config::access::ForwardAuth;

/// Most of a 401/403 body passed on to the client; the rest is cut.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// The auth service's headers a 401/403 keeps for the client.
const REFUSAL_HEADERS: [HeaderName; 3] = [
    header::WWW_AUTHENTICATE,
    header::SET_COOKIE,
    header::LOCATION,
];

/// What the auth service decided.
pub(super) enum Verdict {
    /// 2xx: these of its headers go onto the upstream request.
    Pass(Vec<(HeaderName, HeaderValue)>),
    /// 401 or 403, passed on: status, headers, (content type, body).
    Refuse {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: (HeaderValue, Bytes),
    },
    /// Another answer, or no answer: why.
    Fail(String),
}

/// The one HTTP client of every forward auth: connections to the auth services are kept and
/// reused across requests, redirects are never followed, no proxy from the environment.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .pool_idle_timeout(std::time::Duration::from_secs(60))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Asks the auth service about the request `req`.
pub(super) async fn ask(auth: &ForwardAuth, req: &RequestHeader, ctx: &Ctx) -> Verdict {
    let client = match client() {
        Ok(c) => c,
        Err(e) => return Verdict::Fail(e),
    };
    let mut sub = client
        .get(auth.url.to_string())
        .timeout(auth.timeout)
        .header("x-forwarded-method", req.method.as_str())
        .header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })
        .header(
            "x-forwarded-uri",
            String::from_utf8_lossy(req.raw_path()).as_ref(),
        )
        .header("x-request-id", ctx.request_id.as_str());
    let host = ctx.host(req);
    if !host.is_empty() {
        sub = sub.header("x-forwarded-host", host);
    }
    if let Some(ip) = ctx.client_ip {
        sub = sub.header("x-forwarded-for", ip.to_string());
    }
    let names = [header::AUTHORIZATION, header::COOKIE];
    for name in names.iter().chain(&auth.request_headers) {
        for value in req.headers.get_all(name) {
            sub = sub.header(name.clone(), value.clone());
        }
    }
    let resp = match sub.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Verdict::Fail(format!("no answer within {:?}", auth.timeout))
        }
        Err(e) => return Verdict::Fail(format!("unreachable: {}", root_cause(&e))),
    };
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Verdict::Pass(picked(resp.headers(), &auth.response_headers));
    }
    if status != 401 && status != 403 {
        return Verdict::Fail(format!("it answered {status}"));
    }
    let headers = picked(resp.headers(), &REFUSAL_HEADERS);
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/plain"));
    match read_bounded(resp).await {
        Ok(body) => Verdict::Refuse {
            status,
            headers,
            body: (content_type, body),
        },
        Err(e) => Verdict::Fail(format!("its {status} answer broke off: {}", root_cause(&e))),
    }
}

/// Every value of each header of `names` in `headers`.
fn picked(headers: &http::HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, HeaderValue)> {
    names
        .iter()
        .flat_map(|name| {
            headers
                .get_all(name)
                .iter()
                .map(move |v| (name.clone(), v.clone()))
        })
        .collect()
}

/// The body, at most [`MAX_REFUSAL_BODY`] bytes of it (the request's timeout still applies).
async fn read_bounded(mut resp: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_REFUSAL_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_REFUSAL_BODY {
            break;
        }
    }
    Ok(body.freeze())
}

/// The innermost error's text (reqwest's own says only "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}
