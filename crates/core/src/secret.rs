//! Secrets of the config (admin token, ACME EAB key, pool override secret, private keys): a type that never shows its value.
//!
//! `Secret` has no `Display`; its `Debug` and its `Serialize` write `"<redacted>"`, so neither a log
//! line nor `GET /v1/config` can leak one. The value is read only through `expose`, and compared
//! in constant time.

use std::fmt;

use serde::{Serialize, Serializer};
use subtle::ConstantTimeEq;

/// What a secret shows instead of its value.
pub const REDACTED: &str = "<redacted>";

/// A value that is used but never shown.
#[derive(Clone, Default)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: for the code that uses it, never to show it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<[u8]>> Secret<T> {
    /// Whether `given` is the secret, in time that does not depend on where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(given, self.0.as_ref())
    }
}

impl<T: AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.0.as_ref())
    }
}

impl<T: AsRef<[u8]>> Eq for Secret<T> {}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Compares a presented secret with the expected one in time that depends only on their lengths,
/// never on where they first differ (`subtle`'s slice comparison).
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    bool::from(given.ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret-tokeN", b"s3cret-token"));
        assert!(!constant_time_eq(b"X3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b"s3cret-token"));
        assert!(!constant_time_eq(b"x", b""));
        // A shorter input whose missing bytes would compare equal to the zero padding.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn never_shows_its_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&s)), "Some(<redacted>)");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"<redacted>\"");
        let key = Secret::new(vec![1u8, 2, 3]);
        assert_eq!(serde_json::to_string(&key).expect("json"), "\"<redacted>\"");
        assert!(s.matches(b"hunter2") && !s.matches(b"hunter3"));
        assert_eq!(s, Secret::new("hunter2".to_string()));
        assert_ne!(s, Secret::new("hunter".to_string()));
        assert_eq!(s.expose(), "hunter2");
    }
}
