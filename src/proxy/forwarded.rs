//! The forwarding headers an upstream request carries (X-Forwarded-*, X-Real-IP, X-Request-Id), built straight into header values: they are on every proxied request.

use std::net::IpAddr;

use crate::access_log::{ip_text, push_ip};

use super::names::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID};
use super::request_id::RequestId;
use http::header::HeaderValue;
use pingora::http::RequestHeader;
use pingora::Result;

/// How many headers `apply` adds at most.
pub(super) const ADDED: usize = 5;

/// The X-Forwarded-For list the upstream request carries from the client, as `request_filter`
/// found it (`names::RequestFields`), so that `apply` need not look it up again.
#[derive(Debug)]
pub(super) enum ClientList {
    /// The request's first X-Forwarded-For field, or none: what the upstream request holds.
    /// Nothing drops or changes the field on the way there: pingora strips the fields a
    /// Connection field names but refuses a request that names X-Forwarded-For (400, as for
    /// Host and X-Forwarded-Host/-Proto; `tests/proxying.rs`), and no hook between
    /// `request_filter` and `upstream_request_filter` writes it.
    Known(Option<HeaderValue>),
    /// Looked up in the upstream request itself (a request `request_filter` did not read: what
    /// `Ctx::new` starts with).
    LookUp,
}

impl ClientList {
    /// What `fields` of the request tell of its list.
    pub(super) fn of(fields: &super::names::RequestFields<'_>) -> ClientList {
        ClientList::Known(fields.forwarded_for.cloned())
    }
}

/// Sets X-Forwarded-For (the client's list, `list`, plus `peer`), X-Real-IP, X-Forwarded-Proto,
/// X-Forwarded-Host (the request's host as the client sent it) and X-Request-Id on `upstream`.
pub(super) fn apply(
    upstream: &mut RequestHeader,
    list: &ClientList,
    host: Option<HeaderValue>,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    tls: bool,
    request_id: &RequestId,
) -> Result<()> {
    // A client that comes straight to us has X-Forwarded-For and X-Real-IP both its address
    // alone: one value, shared.
    let mut real_ip = None;
    if let Some(peer) = peer {
        let looked_up;
        let prev = match list {
            ClientList::Known(prev) => prev.as_ref(),
            ClientList::LookUp => {
                looked_up = upstream.headers.get(X_FORWARDED_FOR).cloned();
                looked_up.as_ref()
            }
        };
        let value = match prev {
            Some(prev) if prev.to_str().is_ok_and(|p| !p.trim().is_empty()) => {
                let mut list = Vec::with_capacity(prev.len() + 2 + 39);
                list.extend_from_slice(prev.as_bytes());
                list.extend_from_slice(b", ");
                push_ip(&mut list, peer);
                owned_value(list).map_err(invalid)?
            }
            _ => {
                let alone = ip_value(peer).map_err(invalid)?;
                if client == Some(peer) {
                    real_ip = Some(alone.clone());
                }
                alone
            }
        };
        upstream.insert_header(X_FORWARDED_FOR, value)?;
    }
    if let Some(ip) = client {
        let value = match real_ip {
            Some(value) => value,
            None => ip_value(ip).map_err(invalid)?,
        };
        upstream.insert_header(X_REAL_IP, value)?;
    }
    upstream.insert_header(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    )?;
    if let Some(host) = host {
        upstream.insert_header(X_FORWARDED_HOST, host)?;
    }
    upstream.insert_header(X_REQUEST_ID, request_id.header())?;
    Ok(())
}

fn invalid(e: http::header::InvalidHeaderValue) -> Box<pingora::Error> {
    pingora::Error::because(pingora::ErrorType::InternalError, "forwarding header", e)
}

/// The request's host as `super::request_host` reads it, as a header value (X-Forwarded-Host):
/// the Host field's own value (`host_field`, the request's first Host field) when that is it
/// (shared, not copied); `None` when there is none.
pub(super) fn host_value(
    req: &RequestHeader,
    host_field: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    if req.uri.authority().is_none() {
        if let Some(v) = host_field.filter(|v| v.to_str().is_ok()) {
            return (!v.is_empty()).then(|| v.clone());
        }
    }
    match super::request_host(req) {
        "" => None,
        host => HeaderValue::from_str(host).ok(),
    }
}

/// The address as a header value: one allocation, shared by X-Forwarded-For and X-Real-IP when
/// they carry it alone.
fn ip_value(ip: IpAddr) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    let (text, len) = ip_text(ip);
    super::names::shared_value(text, len)
}

/// A header value that takes `bytes` as they are (`from_bytes` would copy them).
fn owned_value(
    bytes: Vec<u8>,
) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    /// The id a client sent as `X-Request-Id`.
    fn id(text: &str) -> RequestId {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        req.insert_header(X_REQUEST_ID, text).expect("a header");
        RequestId::of(&req)
    }

    #[test]
    fn a_client_that_comes_straight_has_its_address_alone_in_both() {
        let original = RequestHeader::build("GET", b"/", None).expect("a request");
        let mut upstream = original.clone();
        let ip = "2001:db8::7".parse().ok();
        apply(
            &mut upstream,
            &ClientList::LookUp,
            host_value(&original, original.headers.get(header::HOST)),
            ip,
            ip,
            false,
            &RequestId::default(),
        )
        .expect("a header");
        assert_eq!(upstream.headers["x-forwarded-for"], "2001:db8::7");
        assert_eq!(upstream.headers["x-real-ip"], "2001:db8::7");

        // A client that another proxy names (PROXY protocol), no list yet: each its own.
        let mut upstream = original.clone();
        let peer = "10.0.0.2".parse().ok();
        let client = "203.0.113.9".parse().ok();
        apply(
            &mut upstream,
            &ClientList::LookUp,
            host_value(&original, original.headers.get(header::HOST)),
            peer,
            client,
            false,
            &RequestId::default(),
        )
        .expect("a header");
        assert_eq!(upstream.headers["x-forwarded-for"], "10.0.0.2");
        assert_eq!(upstream.headers["x-real-ip"], "203.0.113.9");
    }

    /// The list `request_filter` read is the one `apply` extends, as looking it up in the
    /// upstream request would find it: the first X-Forwarded-For field.
    #[test]
    fn the_list_read_once_is_the_one_a_lookup_finds() {
        let peer = "10.0.0.2".parse().ok();
        let list_of = |upstream: &RequestHeader, list: &ClientList| {
            let mut upstream = upstream.clone();
            apply(&mut upstream, list, None, peer, peer, false, &id("i")).expect("a header");
            let values: Vec<_> = upstream
                .headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .cloned()
                .collect();
            values
        };
        for fields in [
            &[][..],
            &["203.0.113.7"],
            &["203.0.113.7", "198.51.100.1"],
            &[" "],
        ] {
            let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
            for value in fields {
                req.append_header(X_FORWARDED_FOR, *value)
                    .expect("a header");
            }
            let read = ClientList::of(&super::super::names::RequestFields::of(&req));
            assert!(
                matches!(&read, ClientList::Known(v) if v.as_ref() == req.headers.get(X_FORWARDED_FOR)),
                "{fields:?}: {read:?}"
            );
            assert_eq!(
                list_of(&req, &read),
                list_of(&req, &ClientList::LookUp),
                "{fields:?}"
            );
        }
        // A known list is taken as it is, not looked up again.
        let bare = RequestHeader::build("GET", b"/", None).expect("a request");
        let known = ClientList::Known(Some(HeaderValue::from_static("192.0.2.1")));
        assert_eq!(list_of(&bare, &known), ["192.0.2.1, 10.0.0.2"]);
        assert_eq!(list_of(&bare, &ClientList::LookUp), ["10.0.0.2"]);
    }

    #[test]
    fn forwarding_headers_extend_the_list_and_share_the_host() {
        let mut original = RequestHeader::build("GET", b"/", None).expect("a request");
        original
            .insert_header("host", "example.test:8080")
            .expect("a header");
        original
            .insert_header("x-forwarded-for", "203.0.113.7")
            .expect("a header");
        let mut upstream = original.clone();
        let peer = "10.0.0.2".parse().ok();
        let client = "203.0.113.7".parse().ok();
        apply(
            &mut upstream,
            &ClientList::LookUp,
            host_value(&original, original.headers.get(header::HOST)),
            peer,
            client,
            true,
            &id("abc"),
        )
        .expect("a header");
        let get = |n: &str| {
            upstream
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(get("x-forwarded-for"), "203.0.113.7, 10.0.0.2");
        assert_eq!(get("x-real-ip"), "203.0.113.7");
        assert_eq!(get("x-forwarded-proto"), "https");
        assert_eq!(get("x-forwarded-host"), "example.test:8080");
        assert_eq!(get("x-request-id"), "abc");
        // New on every request: never indexed by an h2 upstream's HPACK encoder.
        assert!(upstream.headers["x-request-id"].is_sensitive());
        assert!(!upstream.headers["x-forwarded-proto"].is_sensitive());
    }

    #[test]
    fn the_host_value_is_the_host_field_itself_or_the_authority() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        assert!(host_value(&req, req.headers.get(header::HOST)).is_none());
        req.insert_header("host", "example.test:8080")
            .expect("a header");
        let value = host_value(&req, req.headers.get(header::HOST)).expect("a host");
        let field = req.headers.get(header::HOST).expect("the field");
        assert_eq!(value, "example.test:8080");
        assert_eq!(value.as_bytes().as_ptr(), field.as_bytes().as_ptr());

        // An h2 request's :authority, without its port and user info, as request_host reads it.
        req.set_uri(http::Uri::from_static("https://user@h2.example:8443/x"));
        assert_eq!(
            host_value(&req, req.headers.get(header::HOST)).expect("a host"),
            "h2.example"
        );

        // A Host field that is not text does not count; an absolute-form target's does.
        let mut req =
            RequestHeader::build("GET", b"http://abs.example/p", None).expect("a request");
        req.insert_header(
            "host",
            HeaderValue::from_bytes(b"caf\xe9").expect("a value"),
        )
        .expect("a header");
        assert_eq!(
            host_value(&req, req.headers.get(header::HOST)).expect("a host"),
            "abs.example"
        );
    }
}
