//! A request's id, made once as the never-indexed header value that the upstream request and the answer both carry.

use std::fmt;
use std::ops::Deref;

use http::HeaderValue;
use pingora::http::RequestHeader;

use super::names;

/// Client-supplied ids longer than this are replaced.
const MAX_LEN: usize = 128;

/// The id of one request: the client's `X-Request-Id` when it is short and printable, else 128
/// random bits as 32 lowercase hex digits. It is kept as a header value so that both headers
/// that carry it share its bytes (a client's id is not even copied out of the request); it reads
/// as a `&str` everywhere else.
#[derive(Clone)]
pub(super) struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id, or a new one.
    pub(super) fn of(req: &RequestHeader) -> RequestId {
        RequestId::from_field(req.headers.get(names::X_REQUEST_ID))
    }

    /// The id of the request's (first) `X-Request-Id` field, or a new one.
    pub(super) fn from_field(field: Option<&HeaderValue>) -> RequestId {
        match field {
            Some(v) if acceptable(v.as_bytes()) => RequestId(names::never_indexed(v.clone())),
            _ => RequestId::new(),
        }
    }

    /// A new random id.
    pub(super) fn new() -> RequestId {
        let mut digits = [0u8; 32];
        switchyard_core::hex::lower_into(&mut digits, &fastrand::u128(..).to_be_bytes());
        // Hex digits are visible ASCII: a valid value, never the default. One allocation, which
        // the headers that carry the id share.
        let value = names::shared_value(digits, digits.len())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        RequestId(names::never_indexed(value))
    }

    /// The id as a header value (sharing its bytes).
    pub(super) fn header(&self) -> HeaderValue {
        self.0.clone()
    }

    pub(super) fn as_str(&self) -> &str {
        // Only visible ASCII gets in (`acceptable`, hex digits): never the empty default.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

impl Default for RequestId {
    /// No id yet (a request whose head was refused before `request_filter` read it).
    fn default() -> RequestId {
        RequestId(HeaderValue::from_static(""))
    }
}

/// An id a client may choose: 1 to 128 visible ASCII characters.
fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(u8::is_ascii_graphic)
}

impl Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: Option<&[u8]>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        if let Some(id) = id {
            req.insert_header(
                names::X_REQUEST_ID,
                HeaderValue::from_bytes(id).expect("a value"),
            )
            .expect("a header");
        }
        req
    }

    #[test]
    fn new_ids_are_32_lowercase_hex_digits_never_indexed() {
        let a = RequestId::new();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(a.header().is_sensitive());
        assert_eq!(a.header().as_bytes(), a.as_bytes());
        assert_ne!(a.as_str(), RequestId::new().as_str());
    }

    #[test]
    fn a_clients_short_printable_id_is_kept_and_shared() {
        let req = request(Some(b"client-id-7"));
        let id = RequestId::of(&req);
        assert_eq!(id.as_str(), "client-id-7");
        assert_eq!(id.to_string(), "client-id-7");
        assert!(id.header().is_sensitive());
        // The same bytes as the request's field, not a copy.
        let field = req.headers.get(names::X_REQUEST_ID).expect("the field");
        assert_eq!(id.header().as_bytes().as_ptr(), field.as_bytes().as_ptr());
    }

    #[test]
    fn an_unusable_client_id_is_replaced() {
        let long = vec![b'a'; MAX_LEN + 1];
        for bad in [&b""[..], b"has space", b"tab\there", &long] {
            let id = RequestId::of(&request(Some(bad)));
            assert_eq!(id.len(), 32, "{:?}", String::from_utf8_lossy(bad));
            assert_ne!(id.as_bytes(), bad);
        }
        let longest = vec![b'b'; MAX_LEN];
        assert_eq!(
            RequestId::of(&request(Some(&longest))).as_bytes(),
            &longest[..]
        );
        assert_eq!(RequestId::of(&request(None)).len(), 32);
    }

    #[test]
    fn the_default_is_empty() {
        assert!(RequestId::default().is_empty());
        assert_eq!(RequestId::default().header().as_bytes(), b"");
    }
}
