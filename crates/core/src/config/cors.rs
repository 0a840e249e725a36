//! `cors = { origins, methods, headers, expose, credentials, max_age }`: a route's CORS policy, validated, with the pure decisions the request path asks of it.

use http::header::{HeaderName, HeaderValue};
use http::Method;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::{self, Text};
use super::Validator;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Option<Vec<Spanned<Text>>>,
    pub methods: Option<Vec<Spanned<Text>>>,
    pub headers: Option<Vec<Spanned<Text>>>,
    pub expose: Option<Vec<Spanned<Text>>>,
    pub credentials: Option<Spanned<bool>>,
    pub max_age: Option<Spanned<values::Duration>>,
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `https://app.example.com` (lowercase, with its port if written).
    Exact(String),
    /// `https://*.example.com`: `scheme://` + one label + `suffix` (`.example.com`, port included).
    Label { scheme: String, suffix: String },
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Label { scheme, suffix } => {
                let Some(rest) = strip_prefix_ci(origin, scheme) else {
                    return false;
                };
                let Some(label) = strip_suffix_ci(rest, suffix) else {
                    return false;
                };
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let at = s.len().checked_sub(suffix.len())?;
    let tail = s.get(at..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..at])
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginPattern::Exact(o) => f.write_str(o),
            OriginPattern::Label { scheme, suffix } => write!(f, "{scheme}*{suffix}"),
        }
    }
}

/// A list that may be `["*"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed<T> {
    Any,
    List(Vec<T>),
}

/// A validated CORS policy, with its answer headers built once.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub origins: Allowed<OriginPattern>,
    pub methods: Allowed<Method>,
    /// `["*"]`: a preflight's requested headers are echoed.
    pub headers: Allowed<HeaderName>,
    pub credentials: bool,
    /// Access-Control-Allow-Methods when `methods` is a list.
    pub allow_methods: Option<HeaderValue>,
    /// Access-Control-Allow-Headers when `headers` is a non-empty list.
    pub allow_headers: Option<HeaderValue>,
    /// Access-Control-Expose-Headers, when any.
    pub expose: Option<HeaderValue>,
    /// Access-Control-Max-Age in seconds, when set.
    pub max_age: Option<HeaderValue>,
}

/// What a preflight gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// 204 with the CORS headers.
    Allowed,
    /// 403 without CORS headers.
    OriginRefused,
    MethodRefused,
}

impl CorsPolicy {
    /// Whether a request from `origin` may read the answer.
    pub fn allows_origin(&self, origin: &str) -> bool {
        match &self.origins {
            Allowed::Any => true,
            Allowed::List(list) => list.iter().any(|p| p.matches(origin)),
        }
    }

    /// The Access-Control-Allow-Origin value for an allowed origin: `*` when every origin is
    /// allowed without credentials, else the origin itself.
    pub fn allow_origin<'a>(&self, origin: &'a HeaderValue) -> std::borrow::Cow<'a, HeaderValue> {
        if self.origins == Allowed::Any && !self.credentials {
            std::borrow::Cow::Owned(HeaderValue::from_static("*"))
        } else {
            std::borrow::Cow::Borrowed(origin)
        }
    }

    /// Whether the answer depends on the Origin (so caches must key on it).
    pub fn varies(&self) -> bool {
        self.origins != Allowed::Any || self.credentials
    }

    /// The decision on a preflight from `origin` for `method` (its Access-Control-Request-Method).
    pub fn preflight(&self, origin: &str, method: &str) -> Preflight {
        if !self.allows_origin(origin) {
            return Preflight::OriginRefused;
        }
        let method_ok = match &self.methods {
            Allowed::Any => true,
            Allowed::List(list) => list.iter().any(|m| m.as_str() == method),
        };
        if method_ok {
            Preflight::Allowed
        } else {
            Preflight::MethodRefused
        }
    }
}

impl Serialize for CorsPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        fn list<T: ToString>(a: &Allowed<T>) -> Vec<String> {
            match a {
                Allowed::Any => vec!["*".into()],
                Allowed::List(l) => l.iter().map(ToString::to_string).collect(),
            }
        }
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let mut st = s.serialize_struct("Cors", 6)?;
        st.serialize_field("origins", &list(&self.origins))?;
        st.serialize_field("methods", &list(&self.methods))?;
        st.serialize_field("headers", &list(&self.headers))?;
        st.serialize_field("expose", &text(&self.expose))?;
        st.serialize_field("credentials", &self.credentials)?;
        st.serialize_field("max_age", &text(&self.max_age))?;
        st.end()
    }
}

/// Methods a browser sends without asking when `methods` is not given.
const DEFAULT_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

impl Validator {
    /// A route's `cors`; `None` when `origins` is empty (CORS off, e.g. over `[defaults]`).
    pub(super) fn cors(&mut self, raw: &RawCors, at: std::ops::Range<usize>) -> Option<CorsPolicy> {
        let Some(origins_raw) = &raw.origins else {
            self.error(
                at,
                "cors needs `origins` (a list; [] turns CORS off for the route)",
            );
            return None;
        };
        if origins_raw.is_empty() {
            return None;
        }
        let credentials = raw.credentials.as_ref().is_some_and(|c| *c.get_ref());
        let origins = self.origins(origins_raw, credentials)?;
        let methods = match &raw.methods {
            None => Allowed::List(DEFAULT_METHODS.to_vec()),
            Some(list) => self.star_or(list, "methods", |m| {
                Method::from_bytes(m.as_bytes())
                    .ok()
                    .filter(|_| m.bytes().all(|b| b.is_ascii_graphic()))
            })?,
        };
        let headers = match &raw.headers {
            None => Allowed::List(Vec::new()),
            Some(list) => self.star_or(list, "headers", |h| {
                HeaderName::from_bytes(h.as_bytes()).ok()
            })?,
        };
        let expose = match &raw.expose {
            None => Allowed::List(Vec::new()),
            Some(list) => self.star_or(list, "expose", |h| {
                HeaderName::from_bytes(h.as_bytes()).ok()
            })?,
        };
        if let (Allowed::Any, true, Some(list)) = (&expose, credentials, &raw.expose) {
            self.error(
                list[0].span(),
                "expose = [\"*\"] is taken literally by browsers when credentials = true; name the headers",
            );
            return None;
        }
        let joined = |items: Vec<&str>| {
            (!items.is_empty()).then(|| HeaderValue::from_str(&items.join(", ")).ok())?
        };
        let allow_methods = match &methods {
            Allowed::Any => None,
            Allowed::List(l) => joined(l.iter().map(Method::as_str).collect()),
        };
        let allow_headers = match &headers {
            Allowed::Any => None,
            Allowed::List(l) => joined(l.iter().map(HeaderName::as_str).collect()),
        };
        let expose = match &expose {
            Allowed::Any => Some(HeaderValue::from_static("*")),
            Allowed::List(l) => joined(l.iter().map(HeaderName::as_str).collect()),
        };
        let max_age = raw
            .max_age
            .as_ref()
            .map(|d| HeaderValue::from(d.get_ref().0.as_secs()));
        Some(CorsPolicy {
            origins,
            methods,
            headers,
            credentials,
            allow_methods,
            allow_headers,
            expose,
            max_age,
        })
    }

    fn origins(
        &mut self,
        raw: &[Spanned<Text>],
        credentials: bool,
    ) -> Option<Allowed<OriginPattern>> {
        if let Some(star) = raw.iter().find(|o| o.get_ref().0 == "*") {
            if raw.len() > 1 {
                self.error(
                    star.span(),
                    "origins: \"*\" allows every origin and stands alone",
                );
                return None;
            }
            if credentials {
                self.error(
                    star.span(),
                    "origins = [\"*\"] with credentials = true: browsers refuse credentials for a wildcard origin; list the origins",
                );
                return None;
            }
            return Some(Allowed::Any);
        }
        let mut out = Vec::new();
        for o in raw {
            match origin_pattern(o.get_ref()) {
                Ok(p) => out.push(p),
                Err(why) => self.error(o.span(), format!("origin \"{}\": {why}", o.get_ref())),
            }
        }
        (out.len() == raw.len()).then_some(Allowed::List(out))
    }

    /// `["*"]` or a list of items each parsed by `parse`.
    fn star_or<T>(
        &mut self,
        raw: &[Spanned<Text>],
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<Allowed<T>> {
        if let Some(star) = raw.iter().find(|v| v.get_ref().0 == "*") {
            if raw.len() > 1 {
                self.error(star.span(), format!("{key}: \"*\" stands alone"));
                return None;
            }
            return Some(Allowed::Any);
        }
        let mut out = Vec::new();
        for v in raw {
            match parse(v.get_ref()) {
                Some(p) => out.push(p),
                None => self.error(
                    v.span(),
                    format!("{key}: invalid entry \"{}\"", v.get_ref()),
                ),
            }
        }
        (out.len() == raw.len()).then_some(Allowed::List(out))
    }
}

/// `scheme://host[:port]`, the host may start with `*.` (one label).
fn origin_pattern(raw: &str) -> Result<OriginPattern, &'static str> {
    let lower = raw.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or("expected scheme://host[:port], e.g. \"https://app.example.com\"")?;
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
                return Err("invalid port");
            }
            (h, Some(p))
        }
        None => (rest, None),
    };
    let (wild, name) = match host.strip_prefix("*.") {
        Some(n) => (true, n),
        None => (false, host),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(
            "expected scheme://host[:port] with no path, e.g. \"https://app.example.com\"; a wildcard is one leading label: \"https://*.example.com\"",
        );
    }
    if wild && !name.contains('.') {
        return Err("a wildcard needs a parent domain with a dot (\"https://*.example.com\")");
    }
    let port = port.map_or(String::new(), |p| format!(":{p}"));
    Ok(if wild {
        OriginPattern::Label {
            scheme: format!("{scheme}://"),
            suffix: format!(".{name}{port}"),
        }
    } else {
        OriginPattern::Exact(format!("{scheme}://{name}{port}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_exact_and_one_wildcard_label() {
        let exact = origin_pattern("https://App.example.com").expect("exact");
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        let wild = origin_pattern("https://*.example.com").expect("wildcard");
        assert!(wild.matches("https://a.example.com"));
        assert!(wild.matches("https://A-1.Example.com"));
        assert!(!wild.matches("https://example.com"));
        assert!(!wild.matches("https://a.b.example.com"));
        assert!(!wild.matches("https://evil-example.com"));
        assert!(!wild.matches("https://a.example.com.evil.net"));
        assert!(!wild.matches("http://a.example.com"));
        let port = origin_pattern("http://*.local.test:8080").expect("port");
        assert!(port.matches("http://x.local.test:8080"));
        assert!(!port.matches("http://x.local.test"));
        for bad in [
            "app.example.com",
            "ftp://a.example.com",
            "https://a.example.com/",
            "https://*.com",
            "https://a.*.example.com",
            "https://a.example.com:99999",
            "null",
        ] {
            assert!(origin_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflight_decisions() {
        let policy = CorsPolicy {
            origins: Allowed::List(vec![origin_pattern("https://*.example.com").expect("ok")]),
            methods: Allowed::List(vec![Method::GET, Method::PUT]),
            headers: Allowed::Any,
            credentials: true,
            allow_methods: None,
            allow_headers: None,
            expose: None,
            max_age: None,
        };
        assert_eq!(
            policy.preflight("https://app.example.com", "PUT"),
            Preflight::Allowed
        );
        assert_eq!(
            policy.preflight("https://app.example.com", "DELETE"),
            Preflight::MethodRefused
        );
        assert_eq!(
            policy.preflight("https://app.evil.com", "GET"),
            Preflight::OriginRefused
        );
        let origin = HeaderValue::from_static("https://app.example.com");
        assert_eq!(*policy.allow_origin(&origin), origin);
        assert!(policy.varies());
    }
}
