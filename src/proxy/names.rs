//! Header names the proxy reads or sets on every request, made once (a name given as text is parsed, and outside the standard set copied, at each use), and the HPACK marking of values new on every message.

use http::header::{HeaderName, HeaderValue};

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(super) const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub(super) const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub(super) const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

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
