//! The access-log line of a finished request: what the context, the session and the request head say, in the snapshot's format.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use base64::Engine;
use pingora::http::RequestHeader;
use pingora_proxy::Session;

use super::{Ctx, Proxy};
use crate::access_log::Entry;
use crate::otlp::{Attr, SpanRecord};

impl Proxy {
    /// Writes the request's line, unless the log is off or the route has `access_log = false`.
    pub(super) fn write_access_log(
        &self,
        session: &Session,
        ctx: &Ctx,
        e: Option<&pingora_error::Error>,
        status: u16,
        duration: Duration,
    ) {
        let log = &self.runtime.access_log;
        let route = ctx.route();
        if !log.enabled() || route.is_some_and(|r| !r.options.access_log) {
            return;
        }
        let service = ctx.service().map(|(_, s)| s);
        let pool = service.zip(ctx.pool).map(|(s, p)| &*s.pools[p].name);
        let req = session.req_header();
        let header =
            |name: http::header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
        let tls_version = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .filter(|d| !d.version.is_empty())
            .map(|d| tls_version_name(&d.version));
        let trace_id = ctx.trace.trace_id_hex();
        let entry = Entry {
            trace_id: std::str::from_utf8(&trace_id).unwrap_or_default(),
            time: std::time::SystemTime::now(),
            client_ip: ctx.client_ip,
            method: req.method.as_str(),
            host: ctx.host(req),
            path: std::str::from_utf8(req.raw_path()).unwrap_or("/"),
            uri: ctx.path(req),
            status,
            bytes: session.body_bytes_sent(),
            duration_ms: duration.as_secs_f64() * 1000.0,
            route: route.map(|r| &*r.id),
            service: service.map(|s| &*s.name),
            pool,
            upstream: ctx.upstream,
            upstream_ms: ctx.upstream_ms,
            request_id: &ctx.request_id,
            listener: self.listener_name(ctx),
            protocol: if session.is_http2() { "h2" } else { "http/1.1" },
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            forwarded_for: header(super::names::X_FORWARDED_FOR),
            request_bytes: head_length(req) + ctx.body_bytes,
            tls_version: tls_version.filter(|_| ctx.tls),
            // A shield starts the count over on the stable pool; its canary try counts too.
            tries: ctx.tries + usize::from(ctx.shield_retried),
            upstream_connect_ms: ctx.upstream_connect_ms,
            upstream_header_ms: ctx.upstream_ms,
            upstream_response_ms: ctx.upstream_ms.and(ctx.upstream_start).map(|start| {
                Instant::now()
                    .saturating_duration_since(start)
                    .as_secs_f64()
                    * 1000.0
            }),
            retried: ctx.shield_retried,
            error: e.map(|e| e.to_string()),
            remote_user: basic_user(header(http::header::AUTHORIZATION)),
            version: match req.version {
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_09 => "HTTP/0.9",
                _ => "HTTP/1.1",
            },
        };
        log.write(&entry, &ctx.snapshot.config.server.access_log_format);
    }
}

impl Proxy {
    /// The request's OTLP server span: OpenTelemetry's HTTP attribute names, plus the route,
    /// service, pool and upstream Switchyard chose.
    pub(super) fn span_record(
        &self,
        session: &Session,
        ctx: &Ctx,
        e: Option<&pingora_error::Error>,
        status: u16,
        duration: Duration,
    ) -> SpanRecord {
        let req = session.req_header();
        let end = std::time::SystemTime::now();
        let route = ctx.route();
        let text = |s: &str| Attr::Text(s.to_string());
        let mut attributes = vec![
            ("http.request.method", text(req.method.as_str())),
            ("url.path", text(ctx.path(req))),
            ("url.scheme", text(if ctx.tls { "https" } else { "http" })),
            ("server.address", text(ctx.host(req))),
            ("http.response.status_code", Attr::Int(i64::from(status))),
            (
                "network.protocol.version",
                text(if session.is_http2() { "2" } else { "1.1" }),
            ),
            ("switchyard.request_id", text(&ctx.request_id)),
        ];
        if let Some(ip) = ctx.client_ip {
            attributes.push(("client.address", Attr::Text(ip.to_string())));
        }
        if let Some(r) = route {
            attributes.push(("switchyard.route", text(&r.id)));
        }
        if let Some((_, s)) = ctx.service() {
            attributes.push(("switchyard.service", text(&s.name)));
            if let Some(p) = ctx.pool {
                attributes.push(("switchyard.pool", text(&s.pools[p].name)));
            }
        }
        if let Some(a) = ctx.upstream {
            attributes.push(("switchyard.upstream", Attr::Text(a.to_string())));
        }
        let error = match e {
            Some(e) => Some(e.to_string()),
            None if status >= 500 => Some(format!("status {status}")),
            None => None,
        };
        SpanRecord {
            trace: ctx.trace,
            // OpenTelemetry's HTTP server span name: the method and the route's id.
            name: match route {
                Some(r) => format!("{} {}", req.method.as_str(), r.id),
                None => req.method.as_str().to_string(),
            },
            start: end.checked_sub(duration).unwrap_or(end),
            end,
            error,
            attributes,
        }
    }
}

/// `TLSv1.3` for rustls's `TLSv1_3`, borrowed for the versions there are.
fn tls_version_name(version: &str) -> Cow<'static, str> {
    match version {
        "TLSv1_3" => Cow::Borrowed("TLSv1.3"),
        "TLSv1_2" => Cow::Borrowed("TLSv1.2"),
        other => Cow::Owned(other.replace('_', ".")),
    }
}

/// The request head's size as HTTP/1.1 text: request line and header lines with their CRLFs.
fn head_length(req: &RequestHeader) -> u64 {
    let line = req.method.as_str().len() + req.raw_path().len() + " HTTP/1.1\r\n".len() + 1;
    let headers: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    (line + headers + 2) as u64
}

/// The user of `Authorization: Basic ...` (nginx's `$remote_user`), whether or not it is checked.
fn basic_user(authorization: Option<&str>) -> Option<String> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_basic_user() {
        assert_eq!(
            basic_user(Some("Basic YWxpY2U6c2VjcmV0")),
            Some("alice".into())
        );
        assert_eq!(basic_user(Some("Bearer abc")), None);
        assert_eq!(basic_user(Some("Basic !!!")), None);
        assert_eq!(basic_user(None), None);
    }
}
