//! A route's access control: `access` (allow/deny by client network, first match wins, as nginx), `basic_auth` (an htpasswd file) and `forward_auth` (a subrequest to an auth service).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::{self, Text};
use super::{serialize, Validator};
use crate::htpasswd::Htpasswd;
use crate::limits::client_ip::IpNet;

/// `false` (off: a route turns off what `[defaults]` set) or the table.
#[derive(Debug, Clone)]
pub enum OffOr<T> {
    Off,
    On(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OffOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OffOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an inline table, or false to turn it off")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<OffOr<T>, E> {
                if b {
                    Err(E::custom(
                        "`true` is not a setting: write the table, or false",
                    ))
                } else {
                    Ok(OffOr::Off)
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<OffOr<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OffOr::On)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `basic_auth = { realm, file }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub realm: Option<Spanned<Text>>,
    pub file: Option<Spanned<Text>>,
}

/// `forward_auth = { url, request_headers, response_headers, timeout }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub url: Option<Spanned<Text>>,
    pub request_headers: Option<Vec<Spanned<Text>>>,
    pub response_headers: Option<Vec<Spanned<Text>>>,
    pub timeout: Option<Spanned<values::Duration>>,
}

/// One `allow`/`deny` rule: `from` is `None` for `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    pub from: Option<IpNet>,
}

impl AccessRule {
    /// `"allow 10.0.0.0/8"`, `"deny all"`, `"allow 2001:db8::1"`.
    pub fn parse(s: &str) -> Result<AccessRule, String> {
        let (verb, what) = s.trim().split_once(char::is_whitespace).ok_or_else(|| {
            format!("expected \"allow NETWORK\" or \"deny NETWORK\", got \"{s}\"")
        })?;
        let allow = match verb {
            "allow" => true,
            "deny" => false,
            other => {
                return Err(format!(
                    "unknown access verb \"{other}\" (expected allow or deny)"
                ))
            }
        };
        let what = what.trim();
        let from = if what == "all" {
            None
        } else {
            Some(IpNet::parse(what)?)
        };
        Ok(AccessRule { allow, from })
    }

    fn matches(&self, ip: Option<IpAddr>) -> bool {
        match (&self.from, ip) {
            (None, _) => true,
            (Some(net), Some(ip)) => net.contains(ip),
            (Some(_), None) => false,
        }
    }
}

impl std::fmt::Display for AccessRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.allow { "allow" } else { "deny" };
        match &self.from {
            Some(net) => write!(f, "{verb} {net}"),
            None => write!(f, "{verb} all"),
        }
    }
}

/// A route's `access` rules in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules(pub Vec<AccessRule>);

impl AccessRules {
    /// Whether a client at `ip` may pass: the first rule that matches decides; none matching
    /// allows (nginx's `allow`/`deny`). An unknown address matches only `all`.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        self.0
            .iter()
            .find(|r| r.matches(ip))
            .is_none_or(|r| r.allow)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `["allow 10.0.0.0/8", "deny all"]`, as the config writes it.
impl Serialize for AccessRules {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// Basic auth against the users of an htpasswd file, read at config load.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub realm: String,
    pub file: PathBuf,
    pub users: Arc<Htpasswd>,
}

/// `{"realm": "...", "file": "...", "users": 3}`: never a hash.
impl Serialize for BasicAuth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BasicAuth", 3)?;
        st.serialize_field("realm", &self.realm)?;
        st.serialize_field("file", &self.file.display().to_string())?;
        st.serialize_field("users", &self.users.len())?;
        st.end()
    }
}

/// The realm when `basic_auth` names none.
pub const DEFAULT_REALM: &str = "Restricted";
/// How long the auth service may take when `forward_auth` sets no `timeout`.
pub const DEFAULT_FORWARD_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A subrequest to an auth service before each request of the route.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardAuth {
    #[serde(serialize_with = "serialize_uri")]
    pub url: http::Uri,
    /// Client headers sent along besides Authorization and Cookie.
    #[serde(serialize_with = "serialize_names")]
    pub request_headers: Vec<HeaderName>,
    /// Headers of a 2xx answer copied onto the upstream request.
    #[serde(serialize_with = "serialize_names")]
    pub response_headers: Vec<HeaderName>,
    #[serde(serialize_with = "serialize::duration")]
    pub timeout: Duration,
}

fn serialize_uri<S: Serializer>(u: &http::Uri, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(u)
}

fn serialize_names<S: Serializer>(h: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(HeaderName::as_str))
}

/// Headers an auth service's answer may not set on the upstream request: they frame the message.
const FRAMING: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "host",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

impl Validator {
    /// `access = [...]`: every entry parsed, errors at the entry.
    pub(super) fn access_rules(&mut self, raw: &[Spanned<Text>]) -> AccessRules {
        let mut rules = Vec::new();
        for entry in raw {
            match AccessRule::parse(entry.get_ref()) {
                Ok(r) => rules.push(r),
                Err(e) => self.error(entry.span(), e),
            }
        }
        AccessRules(rules)
    }

    /// `basic_auth = { realm, file }`: the file read and parsed now (and at every reload).
    pub(super) fn basic_auth(&mut self, raw: &Spanned<OffOr<RawBasicAuth>>) -> Option<BasicAuth> {
        let OffOr::On(b) = raw.get_ref() else {
            return None;
        };
        let realm = match &b.realm {
            Some(r)
                if r.get_ref()
                    .bytes()
                    .any(|c| c == b'"' || c == b'\\' || c.is_ascii_control()) =>
            {
                self.error(
                    r.span(),
                    "realm may not hold quotes, backslashes or control characters",
                );
                return None;
            }
            Some(r) => r.get_ref().0.clone(),
            None => DEFAULT_REALM.to_string(),
        };
        let Some(file) = &b.file else {
            self.error(raw.span(), "basic_auth needs `file` (an htpasswd file)");
            return None;
        };
        let path = self.resolve_path(file.get_ref());
        let text = match crate::fsutil::read_regular_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    file.span(),
                    format!("cannot read htpasswd file {}: {e}", path.display()),
                );
                return None;
            }
        };
        match Htpasswd::parse(&text) {
            Ok(users) => Some(BasicAuth {
                realm,
                file: path,
                users: Arc::new(users),
            }),
            Err(e) => {
                self.error(
                    file.span(),
                    format!("htpasswd file {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// `forward_auth = { url, request_headers, response_headers, timeout }`.
    pub(super) fn forward_auth(
        &mut self,
        raw: &Spanned<OffOr<RawForwardAuth>>,
    ) -> Option<ForwardAuth> {
        let OffOr::On(f) = raw.get_ref() else {
            return None;
        };
        let Some(url) = &f.url else {
            self.error(raw.span(), "forward_auth needs `url` (the auth service)");
            return None;
        };
        let parsed = url.get_ref().parse::<http::Uri>().ok().filter(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        });
        let Some(parsed) = parsed else {
            self.error(
                url.span(),
                format!(
                    "invalid forward_auth url \"{}\" (expected http:// or https://)",
                    url.get_ref()
                ),
            );
            return None;
        };
        let mut ok = true;
        let mut names = |list: &Option<Vec<Spanned<Text>>>, upstream: bool, v: &mut Validator| {
            let mut out = Vec::new();
            for n in list.iter().flatten() {
                match HeaderName::from_bytes(n.get_ref().as_bytes()) {
                    Ok(h) if upstream && FRAMING.contains(&h.as_str()) => {
                        v.error(
                            n.span(),
                            format!("header \"{h}\" cannot be copied onto the upstream request"),
                        );
                        ok = false;
                    }
                    Ok(h) => out.push(h),
                    Err(_) => {
                        v.error(n.span(), format!("invalid header name \"{}\"", n.get_ref()));
                        ok = false;
                    }
                }
            }
            out
        };
        let request_headers = names(&f.request_headers, false, self);
        let response_headers = names(&f.response_headers, true, self);
        let timeout = match &f.timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                self.error(t.span(), "forward_auth timeout must be above 0");
                return None;
            }
            Some(t) => t.get_ref().0,
            None => DEFAULT_FORWARD_AUTH_TIMEOUT,
        };
        ok.then_some(ForwardAuth {
            url: parsed,
            request_headers,
            response_headers,
            timeout,
        })
    }
}

/// Lets tests build a rule list from text.
impl std::str::FromStr for AccessRules {
    type Err = String;
    fn from_str(s: &str) -> Result<AccessRules, String> {
        s.split(',')
            .map(AccessRule::parse)
            .collect::<Result<_, _>>()
            .map(AccessRules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn first_match_wins() {
        let r: AccessRules = "deny 10.0.0.1, allow 10.0.0.0/8, deny all"
            .parse()
            .expect("rules");
        assert!(!r.allows(ip("10.0.0.1")));
        assert!(r.allows(ip("10.9.9.9")));
        assert!(!r.allows(ip("192.0.2.1")));
        assert!(!r.allows(None));
        let r: AccessRules = "allow all, deny 10.0.0.1".parse().expect("rules");
        assert!(r.allows(ip("10.0.0.1")));
        // No rule matching lets the request through, as nginx does.
        let r: AccessRules = "deny 192.0.2.0/24".parse().expect("rules");
        assert!(r.allows(ip("10.0.0.1")) && !r.allows(ip("192.0.2.9")));
        assert!(AccessRules::default().allows(None));
        let v6: AccessRules = "allow 2001:db8::/32, deny all".parse().expect("v6");
        assert!(v6.allows(ip("2001:db8::5")) && !v6.allows(ip("2001:db9::5")));
    }

    #[test]
    fn rules_parse_or_say_why() {
        assert!(AccessRule::parse("permit 10.0.0.0/8")
            .expect_err("verb")
            .contains("unknown access verb \"permit\""));
        assert!(AccessRule::parse("allow 10.0.0.0/33")
            .expect_err("cidr")
            .contains("invalid network"));
        assert!(AccessRule::parse("allow").is_err());
        assert_eq!(
            AccessRule::parse("  deny   all ").expect("all").to_string(),
            "deny all"
        );
    }
}
