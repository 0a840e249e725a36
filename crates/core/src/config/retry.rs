//! A route's `retry = { on, tries, timeout }`: when a failed attempt goes to another server (nginx's `proxy_next_upstream`).

use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::{self, Text};
use super::Validator;

/// Most attempts one request may make (`tries`). The proxy's own loop allows twice this, so that
/// a rollout's shield (which starts over on the stable pool) still has every try.
pub const MAX_TRIES: u32 = 8;

/// `retry = { ... }` as written, in `[defaults]` or a route; each key left out keeps the value
/// the route inherits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub on: Option<Vec<Spanned<Text>>>,
    pub tries: Option<Spanned<u32>>,
    pub timeout: Option<Spanned<values::Duration>>,
}

/// When a request that failed on one server is sent to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `"error"`: the connection could not be made (refused, reset, connect timeout: nothing was
    /// sent), or it broke before the response header arrived.
    pub on_error: bool,
    /// `"timeout"`: the request was sent but no response header came within `read_timeout` (or
    /// the request could not be written within `send_timeout`).
    pub on_timeout: bool,
    /// Upstream answers (statuses) that send an idempotent request to another server; the last
    /// answer is passed through when no server is left.
    pub statuses: Vec<u16>,
    /// Attempts in all, the first included (nginx `proxy_next_upstream_tries`): 1 never retries.
    pub tries: u32,
    /// No new attempt starts this long after the first one did (`proxy_next_upstream_timeout`);
    /// zero: no limit.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// Today's behaviour: 3 tries, on errors only (a connect failure for any method; a connection
    /// broken before the response header for idempotent ones), no time limit.
    fn default() -> Self {
        RetryPolicy {
            on_error: true,
            on_timeout: false,
            statuses: Vec::new(),
            tries: 3,
            timeout: Duration::ZERO,
        }
    }
}

impl RetryPolicy {
    /// Whether an upstream answer with `status` is retried (for an idempotent request).
    pub fn on_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }

    /// The `on` list as the config writes it.
    pub fn on(&self) -> Vec<String> {
        let words = [(self.on_error, "error"), (self.on_timeout, "timeout")];
        words
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| w.to_string())
            .chain(self.statuses.iter().map(u16::to_string))
            .collect()
    }
}

/// `{"on": ["error", "503"], "tries": 3, "timeout": "0s"}`, as the config writes it.
impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RetryPolicy", 3)?;
        st.serialize_field("on", &self.on())?;
        st.serialize_field("tries", &self.tries)?;
        st.serialize_field("timeout", &DurationText(self.timeout))?;
        st.end()
    }
}

struct DurationText(Duration);

impl Serialize for DurationText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::serialize::duration(&self.0, s)
    }
}

impl Validator {
    /// `raw` layered over the policy the route inherits.
    pub(super) fn retry(&mut self, raw: &RawRetry, base: &RetryPolicy) -> RetryPolicy {
        let mut policy = base.clone();
        if let Some(on) = &raw.on {
            policy.on_error = false;
            policy.on_timeout = false;
            policy.statuses.clear();
            for word in on {
                match word.get_ref().0.as_str() {
                    "error" => policy.on_error = true,
                    "timeout" => policy.on_timeout = true,
                    w => match w.parse::<u16>() {
                        Ok(status) if (400..=599).contains(&status) => {
                            if !policy.statuses.contains(&status) {
                                policy.statuses.push(status);
                            }
                        }
                        _ => self.error(
                            word.span(),
                            format!(
                                "retry on \"{w}\": expected \"error\", \"timeout\" or a status from 400 to 599"
                            ),
                        ),
                    },
                }
            }
        }
        if let Some(tries) = &raw.tries {
            let n = *tries.get_ref();
            if (1..=MAX_TRIES).contains(&n) {
                policy.tries = n;
            } else {
                self.error(
                    tries.span(),
                    format!("retry tries must be from 1 to {MAX_TRIES} (attempts in all, the first included)"),
                );
            }
        }
        if let Some(timeout) = &raw.timeout {
            policy.timeout = timeout.get_ref().0;
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(route: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        let text = format!(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [defaults]\nretry = {{ on = [\"error\", \"timeout\"], tries = 2 }}\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n{route}\n\n\
             [services.api.pools.blue]\nservers = [\"127.0.0.1:2\"]\n"
        );
        crate::config::parse(&text, Path::new("t.toml"))
    }

    #[test]
    fn a_route_inherits_the_defaults_key_by_key() {
        let config = parse("retry = { on = [\"503\", \"502\", \"503\"], timeout = \"10s\" }")
            .expect("valid config");
        let d = &config.defaults.retry;
        assert_eq!((d.on_error, d.on_timeout, d.tries), (true, true, 2));
        let r = &config.routes[0].options.retry;
        assert_eq!(
            (r.on_error, r.on_timeout, r.statuses.as_slice(), r.tries),
            (false, false, &[503, 502][..], 2)
        );
        assert_eq!(r.timeout, Duration::from_secs(10));
        assert_eq!(r.on(), ["503", "502"]);
        let shown = serde_json::to_value(r).expect("serializes");
        assert_eq!(
            shown,
            serde_json::json!({"on": ["503", "502"], "tries": 2, "timeout": "10s"})
        );
        let plain = parse("").expect("valid config");
        assert_eq!(plain.routes[0].options.retry, config.defaults.retry);
    }

    #[test]
    fn the_default_is_todays_behaviour() {
        let p = RetryPolicy::default();
        assert_eq!(
            (p.on(), p.tries, p.timeout),
            (vec!["error".to_string()], 3, Duration::ZERO)
        );
    }

    #[test]
    fn bad_values_are_errors_at_their_place() {
        let e = parse("retry = { on = [\"error\", \"200\", \"oops\"], tries = 0 }")
            .expect_err("invalid");
        let reasons: Vec<String> =
            e.0.iter()
                .map(|e| format!("{}:{} {}", e.line, e.column, e.reason))
                .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons[0].starts_with("11:26 retry on \"200\""),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("\"oops\""), "{reasons:?}");
        assert!(reasons[2].contains("from 1 to 8"), "{reasons:?}");
        let e = parse("retry = { tries = 3, when = 1 }").expect_err("unknown key");
        assert!(e.0[0].reason.contains("unknown field `when`"), "{e}");
    }
}
