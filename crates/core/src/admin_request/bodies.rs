//! Request bodies and headers of the admin API, parsed into typed requests with errors that say what is wrong.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{RequestError, RolloutRequest, SwitchRequest};
use crate::config::{Share, Steps, Weight, MAX_WEIGHT};

/// `If-Match: 7`, `"7"` or `W/"7"` → `Some(7)`; absent or `*` → `None`; anything else is a 400.
pub fn parse_if_match(raw: Option<&[u8]>) -> Result<Option<u64>, RequestError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let number = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').unwrap_or(""),
        None => tag,
    };
    number.parse::<u64>().map(Some).map_err(|_| {
        RequestError::BadRequest(format!(
            "If-Match must be a generation number such as 7 or \"7\", not {:?}",
            String::from_utf8_lossy(raw)
        ))
    })
}

/// A JSON request body as `T`. Syntax errors, and errors of the body's shape (a missing or unknown
/// field, not an object), say `shape`; an error in one field's value is `field_error(path, why)`.
fn parse_body<T: DeserializeOwned>(
    body: &[u8],
    shape: &str,
    field_error: impl FnOnce(&str, String) -> String,
) -> Result<T, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::BadRequest(
            "the request body is empty; a JSON object is expected".into(),
        ));
    }
    // Through a `Value` first: errors of the typed pass then carry no line and column.
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        RequestError::BadRequest(format!("the request body is not valid JSON: {e}"))
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let why = e.into_inner().to_string();
        RequestError::BadRequest(if path == "." {
            format!("the body must be {shape}: {why}")
        } else {
            field_error(&path, why)
        })
    })
}

/// `{"blue": 90, "green": 10}` as pool weights. Every problem names its pool.
pub fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, Weight>, RequestError> {
    parse_body(
        body,
        "a JSON object of pool weights, e.g. {\"blue\": 90, \"green\": 10}",
        |pool, why| {
            format!("weight of pool \"{pool}\" {why}; weights are integers from 0 to {MAX_WEIGHT}")
        },
    )
}

/// An error in one field's value: `"watch": invalid duration ...`.
fn field_error(path: &str, why: String) -> String {
    format!("\"{path}\": {why}")
}

/// A duration in a request body: `"30s"`, `"500ms"`, or a number of seconds.
#[derive(Debug, Clone, Copy)]
struct BodyDuration(std::time::Duration);

impl<'de> Deserialize<'de> for BodyDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl serde::de::Visitor<'_> for DurationVisitor {
            type Value = BodyDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration like \"30s\" or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BodyDuration, E> {
                crate::config::values::Duration::parse(s)
                    .map(|d| BodyDuration(d.0))
                    .map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, s: f64) -> Result<BodyDuration, E> {
                if (0.0..1e9).contains(&s) {
                    Ok(BodyDuration(std::time::Duration::from_secs_f64(s)))
                } else {
                    Err(E::custom(format!("{s} is not a number of seconds")))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, s: u64) -> Result<BodyDuration, E> {
                self.visit_f64(s as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, s: i64) -> Result<BodyDuration, E> {
                self.visit_f64(s as f64)
            }
        }
        d.deserialize_any(DurationVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    page: Option<String>,
    json: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    exempt: Option<Vec<String>>,
    retry_after: Option<BodyDuration>,
}

/// `{"page": "<html>...", "json": "{...}", "allow": ["10.0.0.0/8"], "exempt": ["/health"],
/// "retry_after": "5m"}`, every field optional; an empty body is `{}`. The values are checked by
/// `maintenance::Maintenance::new`.
pub fn parse_maintenance(body: &[u8]) -> Result<crate::maintenance::Request, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(crate::maintenance::Request::default());
    }
    let raw: RawMaintenance = parse_body(
        body,
        "a JSON object such as {\"page\": \"<h1>Back soon</h1>\", \"allow\": [\"10.0.0.0/8\"], \"retry_after\": \"5m\"}",
        field_error,
    )?;
    Ok(crate::maintenance::Request {
        page: raw.page,
        json: raw.json,
        allow: raw.allow,
        exempt: raw.exempt,
        retry_after: raw
            .retry_after
            .map(|d| d.0.as_nanos().div_ceil(1_000_000_000) as u64),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    to: String,
    watch: Option<BodyDuration>,
}

/// `{"to": "green", "watch": "30s"}` (watch optional).
pub fn parse_switch(body: &[u8]) -> Result<SwitchRequest, RequestError> {
    let req: RawSwitch = parse_body(
        body,
        "{\"to\": \"<pool>\", \"watch\": \"<duration>\" (optional)}",
        field_error,
    )?;
    Ok(SwitchRequest {
        to: req.to,
        watch: req.watch.map(|d| d.0),
        ..SwitchRequest::default()
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRolloutRequest {
    canary: String,
    stable: Option<String>,
    steps: Option<Steps>,
    interval: Option<BodyDuration>,
    max_error_rate: Option<Share>,
    max_p99: Option<BodyDuration>,
    min_requests: Option<u64>,
    shield: Option<bool>,
}

/// The body of `POST /v1/services/{s}/rollouts`.
pub fn parse_rollout(body: &[u8]) -> Result<RolloutRequest, RequestError> {
    let r: RawRolloutRequest = parse_body(
        body,
        "{\"canary\": \"<pool>\", ...} (see docs/rollouts.md)",
        field_error,
    )?;
    Ok(RolloutRequest {
        canary: r.canary,
        stable: r.stable,
        steps: r.steps,
        interval: r.interval.map(|d| d.0),
        max_error_rate: r.max_error_rate,
        max_p99: r.max_p99.map(|d| d.0),
        min_requests: r.min_requests,
        shield: r.shield,
    })
}

/// `?force=true` (or `force=1`) in a query string.
pub fn forced(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "force" | "force=true" | "force=1"))
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_if_match() {
        let p = |v: &[u8]| parse_if_match(Some(v));
        assert_eq!(parse_if_match(None).expect("absent"), None);
        assert_eq!(p(b"7").expect("bare"), Some(7));
        assert_eq!(p(b"\"7\"").expect("quoted"), Some(7));
        assert_eq!(p(b" \"12\" ").expect("spaces"), Some(12));
        assert_eq!(p(b"W/\"7\"").expect("weak"), Some(7));
        assert_eq!(p(b"*").expect("any"), None);
        for bad in [
            &b""[..],
            b"\"7",
            b"7\"",
            b"abc",
            b"-1",
            b"7, 8",
            b"\"\"",
            b"\xff",
        ] {
            let e = p(bad).expect_err("invalid");
            assert!(matches!(e, RequestError::BadRequest(_)), "{e:?}");
            assert!(e.to_string().contains("If-Match"), "{e}");
        }
    }

    #[test]
    fn validates_weight_json() {
        let w = parse_weights(br#"{"blue": 90, "green": 0}"#).expect("valid");
        let plain: BTreeMap<&str, u32> = w.iter().map(|(p, w)| (p.as_str(), w.get())).collect();
        assert_eq!(plain, BTreeMap::from([("blue", 90), ("green", 0)]));
        let max = format!("{{\"blue\": {MAX_WEIGHT}}}");
        assert_eq!(
            parse_weights(max.as_bytes()).expect("max")["blue"],
            Weight::MAX
        );

        let err = |body: &str| {
            let e = parse_weights(body.as_bytes()).expect_err(body);
            assert!(matches!(e, RequestError::BadRequest(_)), "{body}: {e:?}");
            e.to_string()
        };
        assert!(err(r#"{"blue": -5}"#).contains("pool \"blue\" is -5, below 0"));
        assert!(err(r#"{"blue": 1.5}"#).contains("pool \"blue\" is 1.5, not an integer"));
        assert!(err(r#"{"blue": "50"}"#).contains("pool \"blue\" is a string"));
        assert!(err(r#"{"blue": null}"#).contains("pool \"blue\" is null"));
        assert!(err(r#"{"blue": true}"#).contains("pool \"blue\""));
        assert!(err(r#"{"blue": [1]}"#).contains("pool \"blue\""));
        assert!(err(r#"{"blue": 1000001}"#).contains("pool \"blue\" is 1000001"));
        assert!(err(r#"{"blue": 99999999999}"#).contains("pool \"blue\""));
        assert!(err(r#"[90, 10]"#).contains("JSON object"));
        assert!(err(r#""blue""#).contains("JSON object"));
        assert!(err(r#"{"blue": 90"#).contains("not valid JSON"));
        assert!(err("").contains("empty"));
        // An empty object parses; `control::set_weights` refuses it with its own message.
        assert!(parse_weights(b"{}").expect("empty object").is_empty());
    }

    #[test]
    fn parses_switch_body() {
        assert_eq!(
            parse_switch(br#"{"to": "green"}"#).expect("valid").to,
            "green"
        );
        let watched = parse_switch(br#"{"to": "green", "watch": "30s"}"#).expect("valid");
        assert_eq!(watched.watch, Some(std::time::Duration::from_secs(30)));
        let seconds = parse_switch(br#"{"to": "green", "watch": 1.5}"#).expect("valid");
        assert_eq!(seconds.watch, Some(std::time::Duration::from_millis(1500)));
        for bad in [
            r#"{}"#,
            r#"{"to": 1}"#,
            r#"{"to": "g", "x": 1}"#,
            r#"{"to": "g", "watch": "soon"}"#,
            r#"{"to": "g", "watch": -1}"#,
            r#""green""#,
            "",
        ] {
            let e = parse_switch(bad.as_bytes()).expect_err(bad);
            assert!(matches!(e, RequestError::BadRequest(_)), "{bad}: {e:?}");
        }
    }
}
