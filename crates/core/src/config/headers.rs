//! Header values and redirect targets with request variables (`$host`, `$request_uri`, ...), compiled at config load; `request_headers` and `response_headers_remove`.
//!
//! A template is parsed once into literal parts and variables; a value without variables is kept
//! as a ready `HeaderValue`, so rendering it per request allocates nothing. `${VAR}` (environment)
//! is expanded by [`super::values::Text`] before a template is parsed: `$$` there writes a `$`, so
//! `$$host` is the variable `$host`, and a literal `$` before a letter is written `$$$$`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::routes::{RawDefaults, RouteOptions};
use super::values::Text;
use super::Validator;

/// A request variable a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The request's host, lowercase, without a port.
    Host,
    /// `http` or `https`: how the client reached Switchyard.
    Scheme,
    /// The real client address (`[limits] trusted_proxies` honoured).
    ClientIp,
    /// The request id (`X-Request-Id`).
    RequestId,
    /// The request target as the client sent it, with its query.
    RequestUri,
    /// The normalised path, without the query.
    Uri,
    /// The normalised path after the route's prefix (`/` when nothing is left).
    Path,
    /// The query string without `?` (empty when there is none).
    Args,
    /// `?` when there is a query string, else empty.
    IsArgs,
}

impl Var {
    const ALL: [(&'static str, Var); 9] = [
        ("host", Var::Host),
        ("scheme", Var::Scheme),
        ("client_ip", Var::ClientIp),
        ("request_id", Var::RequestId),
        ("request_uri", Var::RequestUri),
        ("uri", Var::Uri),
        ("path", Var::Path),
        ("args", Var::Args),
        ("is_args", Var::IsArgs),
    ];

    fn named(name: &str) -> Option<Var> {
        Var::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// Whether the value comes from the request head itself (not from the per-request state).
    fn reads_head(self) -> bool {
        !matches!(self, Var::Scheme | Var::ClientIp | Var::RequestId)
    }
}

/// The values a template is rendered with, borrowed from one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    pub host: &'a str,
    pub tls: bool,
    pub client_ip: Option<IpAddr>,
    pub request_id: &'a str,
    pub request_uri: &'a str,
    pub uri: &'a str,
    /// The route's path prefix (`/` for none), for `$path`.
    pub prefix: &'a str,
}

impl Vars<'_> {
    fn write(&self, var: Var, out: &mut String) {
        use std::fmt::Write;
        match var {
            Var::Host => out.push_str(self.host),
            Var::Scheme => out.push_str(if self.tls { "https" } else { "http" }),
            Var::ClientIp => {
                if let Some(ip) = self.client_ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Var::RequestId => out.push_str(self.request_id),
            Var::RequestUri => out.push_str(self.request_uri),
            Var::Uri => out.push_str(self.uri),
            Var::Path => {
                let rest = match self.uri.strip_prefix(self.prefix) {
                    Some(rest) if self.prefix != "/" => rest,
                    _ => self.uri,
                };
                if !rest.starts_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
            }
            Var::Args => out.push_str(self.query().unwrap_or("")),
            Var::IsArgs => {
                if self.query().is_some() {
                    out.push('?');
                }
            }
        }
    }

    fn query(&self) -> Option<&str> {
        self.request_uri.split_once('?').map(|(_, q)| q)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Var(Var),
}

#[derive(Debug, Clone)]
enum Form {
    /// No variable: the value itself.
    Static(HeaderValue),
    Parts(Box<[Part]>),
}

/// A value with variables, as parsed from the config.
#[derive(Debug, Clone)]
pub struct Template {
    /// As written (after `${VAR}` expansion), for `GET /v1/config` and messages.
    text: Box<str>,
    form: Form,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable ${0} (known: $host, $scheme, $client_ip, $request_id, $request_uri, $uri, $path, $args, $is_args; write $$$$ for a literal $)")]
    UnknownVar(String),
    #[error("invalid header value {0:?}")]
    BadValue(String),
}

impl Template {
    /// Parses `$name` variables; a `$` not followed by a letter or `_` is literal, and `$$` is a `$`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                lit.push('$');
                rest = tail;
                continue;
            }
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                lit.push('$');
                rest = after;
                continue;
            }
            let var = Var::named(name).ok_or_else(|| TemplateError::UnknownVar(name.into()))?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Var(var));
            rest = &after[end..];
        }
        lit.push_str(rest);
        let form = if parts.is_empty() {
            let value = HeaderValue::from_str(&lit)
                .map_err(|_| TemplateError::BadValue(text.to_string()))?;
            Form::Static(value)
        } else {
            if !lit.is_empty() {
                parts.push(Part::Lit(lit.into()));
            }
            let literal_ok = parts.iter().all(|p| match p {
                Part::Lit(l) => HeaderValue::from_str(l).is_ok(),
                Part::Var(_) => true,
            });
            if !literal_ok {
                return Err(TemplateError::BadValue(text.to_string()));
            }
            Form::Parts(parts.into())
        };
        Ok(Template {
            text: text.into(),
            form,
        })
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether rendering needs the request head (host, target, path), not only the request's
    /// id, scheme and client.
    pub fn needs_head(&self) -> bool {
        match &self.form {
            Form::Static(_) => false,
            Form::Parts(parts) => parts
                .iter()
                .any(|p| matches!(p, Part::Var(v) if v.reads_head())),
        }
    }

    /// The value itself when the template has no variable: every request gets it as it is.
    pub fn literal(&self) -> Option<&HeaderValue> {
        match &self.form {
            Form::Static(v) => Some(v),
            Form::Parts(_) => None,
        }
    }

    /// The value for one request: a clone of the value itself when it has no variable; `None`
    /// when a variable made it an invalid header value (the header is then left out).
    pub fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        match &self.form {
            Form::Static(v) => Some(v.clone()),
            Form::Parts(_) => HeaderValue::try_from(self.render_string(vars)).ok(),
        }
    }

    /// The text for one request (a redirect's `Location`).
    pub fn render_string(&self, vars: &Vars<'_>) -> String {
        match &self.form {
            Form::Static(_) => self.text.to_string(),
            Form::Parts(parts) => {
                let mut out = String::with_capacity(self.text.len() + 32);
                for p in parts.iter() {
                    match p {
                        Part::Lit(l) => out.push_str(l),
                        Part::Var(v) => vars.write(*v, &mut out),
                    }
                }
                out
            }
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Headers to set (name → template) and to remove, in that order: removed first, then set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderRules {
    #[serde(serialize_with = "set_map")]
    pub set: Vec<(HeaderName, Template)>,
    #[serde(serialize_with = "name_list")]
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// `{"name": "template"}`, as the config writes it.
pub fn set_map<S: Serializer>(h: &[(HeaderName, Template)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(h.iter().map(|(n, t)| (n.as_str(), t.as_str())))
}

pub fn name_list<S: Serializer>(h: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(HeaderName::as_str))
}

/// `request_headers = { set = { Name = "value" }, remove = ["Name"] }`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRequestHeaders {
    pub set: Option<Spanned<BTreeMap<String, Text>>>,
    pub remove: Option<Vec<Spanned<Text>>>,
}

/// Headers that carry the message's framing: neither set nor removed by configuration.
const FRAMING: [HeaderName; 3] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
];

impl Validator {
    /// Merges `raw` (name → value) into `set`: a name set again replaces the earlier value.
    pub(super) fn header_set(
        &mut self,
        raw: &Spanned<BTreeMap<String, Text>>,
        set: &mut Vec<(HeaderName, Template)>,
    ) {
        let span = raw.span();
        for (name, value) in raw.get_ref() {
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                self.error(span.clone(), format!("invalid header name \"{name}\""));
                continue;
            };
            if FRAMING.contains(&n) {
                self.error(
                    span.clone(),
                    format!("header \"{name}\" frames the message and cannot be set"),
                );
                continue;
            }
            match Template::parse(value) {
                Ok(t) => {
                    set.retain(|(existing, _)| existing != n);
                    set.push((n, t));
                }
                Err(TemplateError::BadValue(_)) => {
                    self.error(span.clone(), format!("invalid value for header \"{name}\""))
                }
                Err(e) => self.error(span.clone(), format!("header \"{name}\": {e}")),
            }
        }
    }

    /// A list of header names to remove (it replaces the list it is layered over).
    pub(super) fn header_names(&mut self, raw: &[Spanned<Text>]) -> Vec<HeaderName> {
        let mut out = Vec::new();
        for name in raw {
            match HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Ok(n) if FRAMING.contains(&n) => self.error(
                    name.span(),
                    format!(
                        "header \"{}\" frames the message and cannot be removed",
                        name.get_ref()
                    ),
                ),
                Ok(n) => out.push(n),
                Err(_) => self.error(
                    name.span(),
                    format!("invalid header name \"{}\"", name.get_ref()),
                ),
            }
        }
        out
    }

    /// `request_headers` layered over `base`: `set` merged by name, `remove` replacing.
    pub(super) fn request_headers(
        &mut self,
        raw: &RawRequestHeaders,
        base: &HeaderRules,
    ) -> HeaderRules {
        let mut rules = base.clone();
        if let Some(set) = &raw.set {
            self.header_set(set, &mut rules.set);
        }
        if let Some(remove) = &raw.remove {
            rules.remove = self.header_names(remove);
        }
        rules
    }
}

impl Validator {
    /// The options of this module and `cors.rs`, layered over `o`.
    pub(super) fn answer_options(&mut self, raw: &RawDefaults, o: &mut RouteOptions) {
        if let Some(r) = &raw.request_headers {
            o.request_headers = self.request_headers(r, &o.request_headers);
        }
        if let Some(list) = &raw.response_headers_remove {
            o.response_headers_remove = self.header_names(list);
        }
        if let Some(c) = &raw.cors {
            o.cors = self.cors(c.get_ref(), c.span());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            host: "www.example.com",
            tls: true,
            client_ip: Some("192.0.2.7".parse().expect("ip")),
            request_id: "abc",
            request_uri: "/docs/a%20b?x=1",
            uri: "/docs/a b",
            prefix: "/docs",
        }
    }

    #[test]
    fn static_values_render_as_themselves() {
        let t = Template::parse("max-age=63072000").expect("parses");
        assert!(!t.needs_head());
        assert_eq!(t.render(&vars()).expect("value"), "max-age=63072000");
        let t = Template::parse("costs $5 or $$x").expect("parses");
        assert_eq!(t.render(&vars()).expect("value"), "costs $5 or $x");
        // Given as they are, with no request's variables to work out first.
        assert_eq!(t.literal().expect("a literal"), "costs $5 or $x");
        let t = Template::parse("id $request_id").expect("parses");
        assert_eq!(
            t.literal(),
            None,
            "a template with a variable is no literal"
        );
    }

    #[test]
    fn variables_render_per_request() {
        let t = Template::parse("$scheme://$host$request_uri from $client_ip ($request_id)")
            .expect("parses");
        assert!(t.needs_head());
        assert_eq!(
            t.render_string(&vars()),
            "https://www.example.com/docs/a%20b?x=1 from 192.0.2.7 (abc)"
        );
        let t = Template::parse("https://new.example.com/manual$path$is_args$args").expect("ok");
        assert_eq!(
            t.render_string(&vars()),
            "https://new.example.com/manual/a b?x=1"
        );
        let t = Template::parse("$uri|$path").expect("ok");
        let root = Vars {
            prefix: "/",
            uri: "/x",
            ..vars()
        };
        assert_eq!(t.render_string(&root), "/x|/x");
        let exact = Vars {
            uri: "/docs",
            ..vars()
        };
        assert_eq!(t.render_string(&exact), "/docs|/");
        let t = Template::parse("id=$request_id").expect("ok");
        assert!(!t.needs_head());
    }

    #[test]
    fn unknown_variables_and_bad_values_are_refused() {
        assert_eq!(
            Template::parse("$hostname").expect_err("unknown"),
            TemplateError::UnknownVar("hostname".into())
        );
        assert!(matches!(
            Template::parse("a\nb"),
            Err(TemplateError::BadValue(_))
        ));
    }
}
