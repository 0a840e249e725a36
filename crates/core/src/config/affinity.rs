//! `[services.NAME.affinity]`: keep a client on one server of its pool with a cookie (ALB `lb_cookie`, nginx `sticky`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::rollout::{is_cookie_name, PoolOverride, StickyKey};
use super::values::{self, Text};
use super::{serialize, Validator};
use crate::secret::Secret;

/// The cookie's name unless `cookie` names another.
pub const DEFAULT_AFFINITY_COOKIE: &str = "switchyard_server";
/// How long the cookie lives unless `ttl` says otherwise (ALB's default).
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// `[services.NAME.affinity]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinity {
    pub cookie: Option<Spanned<Text>>,
    pub ttl: Option<Spanned<values::Duration>>,
    /// The key of the cookie values; the same on every instance that serves the same clients.
    pub secret: Option<Spanned<Text>>,
}

/// Server affinity of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffinityConfig {
    pub cookie: String,
    /// The cookie's `Max-Age`, counted from when the client was given its server.
    #[serde(serialize_with = "serialize::duration")]
    pub ttl: Duration,
    /// The key the cookie values are made with; `None`: the process's own key, kept in the
    /// state directory.
    pub secret: Option<Secret>,
}

impl Validator {
    /// Validates `raw` beside the service's sticky key and pool override, whose cookies it must
    /// not reuse.
    pub(super) fn affinity(
        &mut self,
        raw: &Spanned<RawAffinity>,
        sticky: Option<&StickyKey>,
        pool_override: Option<&PoolOverride>,
    ) -> Option<AffinityConfig> {
        let r = raw.get_ref();
        let (cookie, span) = match &r.cookie {
            Some(c) => (c.get_ref().to_string(), c.span()),
            None => (DEFAULT_AFFINITY_COOKIE.to_string(), raw.span()),
        };
        if !is_cookie_name(&cookie) {
            self.error(span, format!("\"{cookie}\" is not a cookie name"));
            return None;
        }
        let taken = matches!(sticky, Some(StickyKey::Cookie(c)) if *c == cookie)
            || pool_override.is_some_and(|o| o.cookie.as_deref() == Some(cookie.as_str()));
        if taken {
            self.error(
                span,
                format!("cookie \"{cookie}\" is already the service's sticky or pool_override cookie; give affinity another"),
            );
            return None;
        }
        let ttl = match &r.ttl {
            Some(t) if t.get_ref().0 < Duration::from_secs(1) => {
                self.error(t.span(), "affinity ttl must be at least 1s");
                return None;
            }
            Some(t) => t.get_ref().0,
            None => DEFAULT_TTL,
        };
        let secret = match &r.secret {
            Some(s) if s.get_ref().len() < 16 => {
                self.error(s.span(), "affinity secret must be at least 16 characters");
                return None;
            }
            Some(s) => Some(Secret::new(s.get_ref().to_string())),
            None => None,
        };
        Some(AffinityConfig {
            cookie,
            ttl,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(service: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        let text = format!(
            "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1:1\"\n\n\
             [[routes]]\nhost = \"*\"\nservice = \"api\"\n\n\
             [services.api]\n{service}\n\n\
             [services.api.pools.blue]\nservers = [\"127.0.0.1:2\"]\n"
        );
        crate::config::parse(&text, Path::new("t.toml"))
    }

    #[test]
    fn defaults_and_settings() {
        let c = parse("affinity = {}").expect("valid");
        let a = c.services[0].affinity.clone().expect("affinity");
        assert_eq!(
            (a.cookie.as_str(), a.ttl.as_secs()),
            ("switchyard_server", 86_400)
        );
        assert!(a.secret.is_none());
        let c =
            parse("affinity = { cookie = \"srv\", ttl = \"2h\", secret = \"0123456789abcdef\" }")
                .expect("valid");
        let a = c.services[0].affinity.clone().expect("affinity");
        assert_eq!((a.cookie.as_str(), a.ttl.as_secs()), ("srv", 7200));
        let shown = serde_json::to_value(&a).expect("serializes");
        assert_eq!(shown["secret"], "<redacted>");
    }

    #[test]
    fn bad_settings_are_errors_at_their_place() {
        for (service, want) in [
            (
                "affinity = { cookie = \"a b\" }",
                "10:23: \"a b\" is not a cookie name",
            ),
            (
                "affinity = { ttl = \"0s\" }",
                "10:20: affinity ttl must be at least 1s",
            ),
            (
                "affinity = { secret = \"short\" }",
                "10:23: affinity secret must be at least 16",
            ),
            (
                "sticky = { key = \"cookie\", cookie = \"c\" }\naffinity = { cookie = \"c\" }",
                "11:23: cookie \"c\" is already",
            ),
            ("affinity = { cookies = \"c\" }", "unknown field `cookies`"),
        ] {
            let e = parse(service).expect_err(service).to_string();
            assert!(e.contains(want), "{service}: {e}");
        }
    }
}
