//! What the admin API (`GET /v1/certs`) shows of each ACME certificate: the shapes are in `api`, the times here.

use std::time::{Duration, UNIX_EPOCH};

pub use crate::api::{CertState, CertStatus};
use serde_json::Value;

/// RFC 3339 in UTC, seconds.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The human view of `GET /v1/certs`.
pub fn table(body: &Value) -> String {
    let mut out = format!(
        "{:<28} {:<9} {:<12} {:<21} {:<21} {}\n",
        "NAMES", "STATUS", "CHALLENGE", "EXPIRES", "NEXT ORDER", "ISSUER"
    );
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for c in body["certificates"].as_array().into_iter().flatten() {
        let names: Vec<String> = c["names"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        out.push_str(&format!(
            "{:<28} {:<9} {:<12} {:<21} {:<21} {}\n",
            names.join(","),
            text(&c["status"]),
            text(&c["challenge"]),
            text(&c["not_after"]),
            text(&c["next_attempt"]),
            text(&c["issuer"]),
        ));
        if let Some(e) = c["last_error"].as_str() {
            out.push_str(&format!(
                "  last error ({} failure(s) in a row): {e}\n",
                c["failures"]
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn table_lists_each_certificate() {
        let body = serde_json::json!({"certificates": [{
            "names": ["a.example", "b.example"], "status": "failing", "challenge": "http-01",
            "not_after": "2030-01-01T00:00:00Z", "next_attempt": null, "issuer": "CN=x",
            "failures": 2, "last_error": "boom"
        }]});
        let t = table(&body);
        assert!(t.contains("a.example,b.example"), "{t}");
        assert!(t.contains("failing"), "{t}");
        assert!(t.contains("2 failure(s) in a row): boom"), "{t}");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
