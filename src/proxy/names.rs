//! Header names the proxy reads or sets on every request, made once (a name given as text is parsed, and outside the standard set copied, at each use), the request fields it reads found in one walk, and the HPACK marking of values new on every message.

use crate::head::HeadFields;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, InvalidHeaderValue};
use pingora::http::RequestHeader;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(super) const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub(super) const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub(super) const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The request fields `request_filter` reads, each the first value of its name as
/// `HeaderMap::get` finds it, found in one walk over the fields: a `get` hashes the name (a name
/// outside the standard set byte by byte), and six of them cost more than walking a typical
/// request's fields once. `head` holds those the head checks read (Host, Content-Length).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RequestFields<'a> {
    pub head: HeadFields<'a>,
    pub forwarded_for: Option<&'a HeaderValue>,
    pub request_id: Option<&'a HeaderValue>,
    pub traceparent: Option<&'a HeaderValue>,
}

impl<'a> RequestFields<'a> {
    pub(super) fn of(req: &'a RequestHeader) -> RequestFields<'a> {
        let mut f = RequestFields::default();
        for (name, value) in req.headers.iter() {
            if f.head.note(name, value) {
                continue;
            }
            let slot = if name == X_FORWARDED_FOR {
                &mut f.forwarded_for
            } else if name == X_REQUEST_ID {
                &mut f.request_id
            } else if name == TRACEPARENT {
                &mut f.traceparent
            } else {
                continue;
            };
            // The first value of the name, as `get` gives it.
            slot.get_or_insert(value);
        }
        f
    }
}

/// `value` marked never-indexed, for a value new on every message (a request id, a trace
/// parent, a remaining count). An HTTP/2 encoder keeps an indexed value in its dynamic table
/// for later messages: a value that never comes back only evicts the ones that do (the server,
/// the content type) and, in the h2 crate, lengthens the chain of same-named entries every later
/// field of that name is compared against (54 value comparisons per response with a unique
/// X-Request-Id). The price: a name outside the static table then goes out as a literal every
/// time (about 9 bytes more per h2 response for X-Request-Id), as nginx and HAProxy send their
/// own fields. The mark also asks intermediaries not to index the value. HTTP/1 ignores it.
pub(super) fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// A header value of the first `len` bytes of `text` (a short text built on the stack: an
/// address, an id), in one allocation that its clones share. `HeaderValue::from_bytes` copies
/// the text into a buffer of its own, and the first clone then makes a second allocation to
/// share it; a value the request and the answer both carry is cloned.
pub(super) fn shared_value<const N: usize>(
    text: [u8; N],
    len: usize,
) -> Result<HeaderValue, InvalidHeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from_owner(Prefix { text, len }))
}

/// The first `len` bytes of `text`, owned by the `Bytes` of [`shared_value`].
struct Prefix<const N: usize> {
    text: [u8; N],
    len: usize,
}

impl<const N: usize> AsRef<[u8]> for Prefix<N> {
    fn as_ref(&self) -> &[u8] {
        &self.text[..self.len.min(N)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn a_shared_value_is_the_text_it_was_given_and_its_clones_share_it() {
        let mut text = [b'x'; 16];
        text[..9].copy_from_slice(b"127.0.0.1");
        let value = shared_value(text, 9).expect("a valid value");
        assert_eq!(value.as_bytes(), b"127.0.0.1");
        let clone = value.clone();
        assert_eq!(clone.as_bytes().as_ptr(), value.as_bytes().as_ptr());
        assert_eq!(
            shared_value(text, 99).expect("a valid value").as_bytes(),
            &text,
            "a length past the buffer reads the whole buffer"
        );
        let mut bad = text;
        bad[3] = b'\n';
        assert!(
            shared_value(bad, 9).is_err(),
            "a line break is no header value"
        );
    }

    #[test]
    fn the_fields_found_in_one_walk_are_those_get_finds() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        let none = RequestFields::of(&req);
        assert!(none.head.host.is_none() && none.forwarded_for.is_none());
        assert!(none.request_id.is_none() && none.traceparent.is_none());
        for (name, value) in [
            ("accept", "*/*"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("host", "example.test"),
            ("x-request-id", "first"),
            ("x-forwarded-for", "198.51.100.1"),
            ("X-Request-Id", "second"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("user-agent", "test"),
        ] {
            req.append_header(name, value).expect("a header");
        }
        let f = RequestFields::of(&req);
        let get = |name: &HeaderName| req.headers.get(name);
        assert_eq!(f.head, HeadFields::of(&req));
        assert_eq!(f.head.host, get(&header::HOST));
        assert_eq!(f.forwarded_for, get(&X_FORWARDED_FOR));
        assert_eq!(f.request_id, get(&X_REQUEST_ID));
        assert_eq!(f.traceparent, get(&TRACEPARENT));
        // The first of repeated fields, by reference: the very values the map holds.
        assert_eq!(f.forwarded_for.expect("a list"), "203.0.113.7");
        assert_eq!(f.request_id.expect("an id"), "first");
        assert!(std::ptr::eq(
            f.head.host.expect("a host"),
            get(&header::HOST).expect("a host")
        ));
    }
}
