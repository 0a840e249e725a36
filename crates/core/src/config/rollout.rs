//! A service's progressive-delivery settings: rollout defaults, sticky pools, tester overrides.

use std::time::Duration as StdDuration;

use http::header::HeaderName;
use http::Method;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::{Duration, Share, Steps, Text};
use super::{serialize, Validator};
use crate::rollout::WindowSpec;
use crate::secret::Secret;

/// `[services.NAME.rollout]`: the defaults a rollout of this service starts with.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub steps: Option<Spanned<Vec<u32>>>,
    pub interval: Option<Spanned<Duration>>,
    pub max_error_rate: Option<Spanned<f64>>,
    pub max_p99: Option<Spanned<Duration>>,
    pub min_requests: Option<Spanned<u64>>,
    pub window: Option<Spanned<Duration>>,
    pub shield: Option<bool>,
    pub shield_methods: Option<Vec<Spanned<Text>>>,
}

/// `[services.NAME.sticky]`: keep a client on one pool while weights move.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub key: Spanned<Text>,
    pub cookie: Option<Spanned<Text>>,
}

/// `[services.NAME.pool_override]`: let testers pick a pool with a header or cookie.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolOverride {
    pub header: Option<Spanned<Text>>,
    pub cookie: Option<Spanned<Text>>,
    pub secret: Option<Text>,
}

/// How a rollout of a service is run unless its request says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutPolicy {
    /// Canary weights in percent, ascending, ending at 100.
    pub steps: Steps,
    /// How long each step lasts at least.
    #[serde(serialize_with = "serialize::duration")]
    pub interval: StdDuration,
    /// Above this share of 5xx/upstream failures (0..=1) the canary is rolled back.
    pub max_error_rate: Share,
    /// Above this p99 latency the canary is rolled back.
    #[serde(serialize_with = "serialize::opt_duration")]
    pub max_p99: Option<StdDuration>,
    /// Requests the canary must serve in a step to advance, and the least a rate is judged on.
    pub min_requests: u64,
    /// The live window of each pool of the service.
    #[serde(serialize_with = "serialize::window")]
    pub window: WindowSpec,
    /// Retry an idempotent request that failed on the canary once on the stable pool.
    pub shield: bool,
    #[serde(serialize_with = "serialize::methods")]
    pub shield_methods: Vec<Method>,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            steps: Steps::default(),
            interval: StdDuration::from_secs(30),
            max_error_rate: Share::new(0.05).expect("0.05 is between 0 and 1"),
            max_p99: None,
            min_requests: 20,
            window: WindowSpec::default(),
            shield: true,
            shield_methods: vec![Method::GET, Method::HEAD, Method::OPTIONS],
        }
    }
}

/// What a sticky assignment hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// A random id in this cookie, set on the first response.
    Cookie(String),
    ClientIp,
    Header(HeaderName),
}

/// As the config writes it: `{"key": "cookie", "cookie": NAME}`, `{"key": "client_ip"}` or
/// `{"key": "header:NAME"}`.
impl Serialize for StickyKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self {
            StickyKey::Cookie(name) => {
                map.serialize_entry("key", "cookie")?;
                map.serialize_entry("cookie", name)?;
            }
            StickyKey::ClientIp => map.serialize_entry("key", "client_ip")?,
            StickyKey::Header(h) => map.serialize_entry("key", &format!("header:{h}"))?,
        }
        map.end()
    }
}

/// A header and/or cookie naming the pool a tester wants; with a secret, `POOL:SECRET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolOverride {
    #[serde(serialize_with = "serialize::opt_display")]
    pub header: Option<HeaderName>,
    pub cookie: Option<String>,
    pub secret: Option<Secret>,
}

/// Cookie of a sticky assignment unless `cookie` names another.
pub const DEFAULT_STICKY_COOKIE: &str = "switchyard_id";

/// A cookie name: an RFC 6265 token.
pub(super) fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

impl Validator {
    pub(super) fn rollout_policy(&mut self, raw: Option<&RawRollout>) -> RolloutPolicy {
        let mut policy = RolloutPolicy::default();
        let Some(raw) = raw else { return policy };
        if let Some(steps) = &raw.steps {
            match Steps::new(steps.get_ref().clone()) {
                Ok(s) => policy.steps = s,
                Err(e) => self.error(steps.span(), e.to_string()),
            }
        }
        if let Some(i) = &raw.interval {
            if i.get_ref().0.is_zero() {
                self.error(i.span(), "rollout interval must be above 0");
            } else {
                policy.interval = i.get_ref().0;
            }
        }
        if let Some(r) = &raw.max_error_rate {
            match Share::new(*r.get_ref()) {
                Ok(share) => policy.max_error_rate = share,
                Err(e) => self.error(r.span(), format!("max_error_rate {e}")),
            }
        }
        policy.max_p99 = raw.max_p99.as_ref().map(|d| d.get_ref().0);
        if let Some(n) = &raw.min_requests {
            policy.min_requests = *n.get_ref();
        }
        if let Some(w) = &raw.window {
            // Ten buckets, as the default 10 s in 1 s.
            let length = w.get_ref().0;
            match WindowSpec::new(length, length / 10) {
                Ok(spec) => policy.window = spec,
                Err(_) => self.error(
                    w.span(),
                    format!(
                        "window {length:?} must be 100ms to 10m, in whole tens of milliseconds"
                    ),
                ),
            }
        }
        if let Some(shield) = raw.shield {
            policy.shield = shield;
        }
        if let Some(methods) = &raw.shield_methods {
            policy.shield_methods.clear();
            for m in methods {
                match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(method) => policy.shield_methods.push(method),
                    Err(_) => self.error(
                        m.span(),
                        format!("\"{}\" is not an HTTP method", m.get_ref()),
                    ),
                }
            }
        }
        policy
    }

    pub(super) fn sticky(&mut self, raw: &RawSticky) -> Option<StickyKey> {
        let key = raw.key.get_ref().0.as_str();
        let cookie = match &raw.cookie {
            Some(c) if !is_cookie_name(c.get_ref()) => {
                self.error(
                    c.span(),
                    format!("\"{}\" is not a cookie name", c.get_ref()),
                );
                return None;
            }
            Some(c) => c.get_ref().to_string(),
            None => DEFAULT_STICKY_COOKIE.to_string(),
        };
        match key {
            "cookie" => Some(StickyKey::Cookie(cookie)),
            "client_ip" => Some(StickyKey::ClientIp),
            _ => match key.strip_prefix("header:").map(HeaderName::try_from) {
                Some(Ok(h)) => Some(StickyKey::Header(h)),
                _ => {
                    self.error(
                        raw.key.span(),
                        format!(
                            "sticky key \"{key}\" is not \"cookie\", \"client_ip\" or \"header:NAME\""
                        ),
                    );
                    None
                }
            },
        }
    }

    pub(super) fn pool_override(&mut self, raw: &Spanned<RawPoolOverride>) -> Option<PoolOverride> {
        let r = raw.get_ref();
        let header = match &r.header {
            Some(h) => match HeaderName::try_from(h.get_ref().0.as_str()) {
                Ok(name) => Some(name),
                Err(_) => {
                    self.error(
                        h.span(),
                        format!("\"{}\" is not a header name", h.get_ref()),
                    );
                    None
                }
            },
            None => None,
        };
        let cookie = match &r.cookie {
            Some(c) if !is_cookie_name(c.get_ref()) => {
                self.error(
                    c.span(),
                    format!("\"{}\" is not a cookie name", c.get_ref()),
                );
                None
            }
            Some(c) => Some(c.get_ref().to_string()),
            None => None,
        };
        if header.is_none() && cookie.is_none() {
            self.error(
                raw.span(),
                "pool_override needs a header or a cookie to read the pool from",
            );
            return None;
        }
        Some(PoolOverride {
            header,
            cookie,
            secret: r.secret.as_ref().map(|s| Secret::new(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_are_tokens() {
        assert!(is_cookie_name("switchyard_id"));
        assert!(!is_cookie_name("a b"));
        assert!(!is_cookie_name("a;b"));
        assert!(!is_cookie_name(""));
    }
}
