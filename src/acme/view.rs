//! What the admin API (`GET /v1/certs`) shows of each ACME certificate: the shapes are in `api`, the times here.

use std::time::{Duration, UNIX_EPOCH};

pub use crate::api::{CertState, CertStatus};

/// RFC 3339 in UTC, seconds.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
