//! `[[routes]]` and `[defaults]`: which host and path go to which service, with which options.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::access::{AccessRules, BasicAuth, ForwardAuth, OffOr, RawBasicAuth, RawForwardAuth};
use super::compression::{CompressionSettings, RawCompression};
use super::cors::{CorsPolicy, RawCors};
use super::error_pages::{ErrorPages, RawErrorPage};
use super::headers::{self, HeaderRules, RawRequestHeaders, Template};
use super::raw::RawConfig;
use super::redirect::{RawRedirect, RedirectConfig, RouteTarget};
use super::retry::{RawRetry, RetryPolicy};
use super::static_site::{RawStatic, StaticSite};
use super::values::{self, Bytes, Text};
use super::{serialize, ServiceConfig, Validator};

/// Declares a struct with the per-route options, plus extra leading fields: the route defaults and
/// the routes share one list of options without serde's `flatten` (which defeats unknown-key errors).
macro_rules! with_route_options {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            pub connect_timeout: Option<values::Duration>,
            pub read_timeout: Option<values::Duration>,
            pub send_timeout: Option<values::Duration>,
            pub max_body_size: Option<Bytes>,
            pub redirect_https: Option<bool>,
            /// `true`, `false` or `{ types, min_length, level }` (`compression.rs`).
            pub compression: Option<Spanned<RawCompression>>,
            pub websocket: Option<bool>,
            pub response_headers: Option<Spanned<BTreeMap<String, Text>>>,
            /// Rate-limit zones (by name) every request of the route must pass.
            pub limits: Option<Vec<Spanned<Text>>>,
            pub client_header_timeout: Option<Spanned<values::Duration>>,
            pub client_body_timeout: Option<Spanned<values::Duration>>,
            pub keepalive_timeout: Option<Spanned<values::Duration>>,
            pub forward_original_path: Option<bool>,
            /// When a failed attempt goes to another server (`retry.rs`).
            pub retry: Option<RawRetry>,
            /// `headers.rs`, `cors.rs`.
            pub request_headers: Option<RawRequestHeaders>,
            pub response_headers_remove: Option<Vec<Spanned<Text>>>,
            pub cors: Option<Spanned<RawCors>>,
            /// Bodies of Switchyard's own error answers, by status (`error_pages.rs`).
            pub error_pages: Option<BTreeMap<String, Spanned<RawErrorPage>>>,
            /// `false`: the route's requests write no access-log line (health checks).
            pub access_log: Option<bool>,
            /// Allow/deny by client network, and authentication (`access.rs`).
            pub access: Option<Vec<Spanned<Text>>>,
            pub basic_auth: Option<Spanned<OffOr<RawBasicAuth>>>,
            pub forward_auth: Option<Spanned<OffOr<RawForwardAuth>>>,
        }
    };
}

with_route_options! {
    /// `[defaults]`: the options every route starts from.
    pub struct RawDefaults {}
}

with_route_options! {
    /// One `[[routes]]` entry.
    pub struct RawRoute {
        host: Option<Spanned<Text>>,
        path: Option<Spanned<Text>>,
        strip_prefix: Option<bool>,
        service: Option<Spanned<Text>>,
        /// Files from a directory instead of a service (`static_site.rs`).
        #[serde(rename = "static")]
        static_files: Option<Spanned<RawStatic>>,
        redirect: Option<Spanned<RawRedirect>>,
    }
}

/// Which requests a route's host matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One name, lowercase.
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix`; holds the suffix without `*.`.
    Wildcard(String),
    /// `*`: every host.
    Any,
}

/// As written in the config: `"api.example.com"`, `"*.example.com"` or `"*"`.
impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub path: String,
    pub strip_prefix: bool,
    /// The service the route proxies to; `None` for a route that answers itself (`static`,
    /// `redirect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The files a static route serves instead of a service.
    #[serde(
        rename = "static",
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::static_site::serialize_opt"
    )]
    pub static_files: Option<Arc<StaticSite>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectConfig>,
    pub options: RouteOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteOptions {
    #[serde(serialize_with = "serialize::duration")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub read_timeout: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub send_timeout: Duration,
    pub max_body_size: u64,
    pub redirect_https: bool,
    pub compression: bool,
    /// Which responses are compressed and how, when `compression` is on.
    pub compression_settings: CompressionSettings,
    pub websocket: bool,
    /// Set on every answer, the upstream's and Switchyard's own; values may hold variables.
    #[serde(serialize_with = "headers::set_map")]
    pub response_headers: Vec<(HeaderName, Template)>,
    /// Removed from the upstream's answers (and Switchyard's own).
    #[serde(serialize_with = "headers::name_list")]
    pub response_headers_remove: Vec<HeaderName>,
    /// Set on and removed from the request before it goes upstream.
    pub request_headers: HeaderRules,
    pub cors: Option<CorsPolicy>,
    /// Names of the rate-limit zones the route's requests must all pass.
    pub limits: Vec<String>,
    /// The whole request head must arrive within this (for a connection's first request from
    /// accept, under `[defaults]`; for the next request on the connection, under the route's).
    #[serde(serialize_with = "serialize::duration")]
    pub client_header_timeout: Duration,
    /// The longest wait between two reads of a request body.
    #[serde(serialize_with = "serialize::duration")]
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request; 0: no keep-alive.
    #[serde(serialize_with = "serialize::duration")]
    pub keepalive_timeout: Duration,
    /// Send the path upstream as the client wrote it rather than normalised.
    pub forward_original_path: bool,
    /// When a request that failed on one server goes to another.
    pub retry: RetryPolicy,
    /// This route's own error pages (not merged with `[defaults]`': the proxy looks at the
    /// route's, then the service's, then `[defaults]`').
    pub error_pages: ErrorPages,
    /// Whether the route's requests are written to the access log.
    pub access_log: bool,
    /// `allow`/`deny` by the client's address, first match wins.
    pub access: AccessRules,
    pub basic_auth: Option<BasicAuth>,
    pub forward_auth: Option<ForwardAuth>,
}

impl Default for RouteOptions {
    /// nginx's proxy defaults as our users run them: connect 30 s, read/send 60 s, 10 MB bodies.
    fn default() -> Self {
        RouteOptions {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_body_size: 10 << 20,
            redirect_https: false,
            compression: true,
            compression_settings: CompressionSettings::default(),
            websocket: true,
            response_headers: Vec::new(),
            response_headers_remove: Vec::new(),
            request_headers: HeaderRules::default(),
            cors: None,
            limits: Vec::new(),
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            forward_original_path: false,
            retry: RetryPolicy::default(),
            error_pages: ErrorPages::default(),
            access_log: true,
            access: AccessRules::default(),
            basic_auth: None,
            forward_auth: None,
        }
    }
}

impl RouteOptions {
    /// The keep-alive timeout in whole seconds (rounded up), as the HTTP/1 session takes it;
    /// `None` when keep-alive is off.
    pub fn keepalive_seconds(&self) -> Option<u64> {
        let ms = self.keepalive_timeout.as_millis() as u64;
        (ms > 0).then(|| ms.div_ceil(1000))
    }
}

impl Validator {
    pub(super) fn routes(
        &mut self,
        raw: &RawConfig,
        defaults: &RouteOptions,
        services: &[ServiceConfig],
    ) -> Vec<RouteConfig> {
        let mut seen: HashMap<(HostPattern, String), usize> = HashMap::new();
        let mut out = Vec::new();
        for r in &raw.routes {
            let span = r.span();
            let r = r.get_ref();
            let Some(host_raw) = &r.host else {
                self.error(
                    span.clone(),
                    "route has no `host` (use \"*\" for a catch-all)",
                );
                continue;
            };
            let Some(host) = self.host_pattern(host_raw) else {
                continue;
            };
            let path = match &r.path {
                None => "/".to_string(),
                Some(p) if !p.get_ref().starts_with('/') => {
                    self.error(
                        p.span(),
                        format!("path \"{}\" must start with /", p.get_ref()),
                    );
                    continue;
                }
                Some(p) if p.get_ref().contains(['?', '#', ' ']) => {
                    self.error(
                        p.span(),
                        format!("path \"{}\" must be a plain path prefix", p.get_ref()),
                    );
                    continue;
                }
                Some(p) if self.normal_path(p).is_none() => continue,
                Some(p) => {
                    let trimmed = p.get_ref().trim_end_matches('/');
                    if trimmed.is_empty() {
                        "/".into()
                    } else {
                        trimmed.to_string()
                    }
                }
            };
            let target = self.route_target(
                span.clone(),
                r.service.as_ref(),
                r.redirect.as_ref(),
                r.static_files.as_ref(),
                services,
            );
            let Some(target) = target else {
                continue;
            };
            if let Some(first) = seen.insert((host.clone(), path.clone()), span.start) {
                let (line, _) = self.line_col(first);
                self.error(
                    host_raw.span(),
                    format!(
                        "duplicate route for host \"{host}\" path \"{path}\" (first defined at line {line})"
                    ),
                );
                continue;
            }
            let options = self.route_options(&as_defaults(r), defaults);
            out.push(RouteConfig {
                host,
                path,
                strip_prefix: r.strip_prefix.unwrap_or(false),
                service: match &target {
                    RouteTarget::Service(s) => Some(s.clone()),
                    _ => None,
                },
                static_files: match &target {
                    RouteTarget::Static(s) => Some(s.clone()),
                    _ => None,
                },
                redirect: match target {
                    RouteTarget::Redirect(r) => Some(r),
                    _ => None,
                },
                options,
            });
        }
        out
    }

    fn host_pattern(&mut self, host: &Spanned<values::Text>) -> Option<HostPattern> {
        let h = host.get_ref().trim_end_matches('.').to_ascii_lowercase();
        if h == "*" {
            return Some(HostPattern::Any);
        }
        let (pattern, name) = match h.strip_prefix("*.") {
            Some(suffix) => (HostPattern::Wildcard(suffix.to_string()), suffix),
            None => (HostPattern::Exact(h.clone()), h.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            self.error(
                host.span(),
                format!(
                    "invalid host \"{}\" (expected a name, \"*.name\" or \"*\")",
                    host.get_ref()
                ),
            );
            return None;
        }
        Some(pattern)
    }

    pub(super) fn route_options(&mut self, raw: &RawDefaults, base: &RouteOptions) -> RouteOptions {
        let mut o = base.clone();
        if let Some(d) = raw.connect_timeout {
            o.connect_timeout = d.0;
        }
        if let Some(d) = raw.read_timeout {
            o.read_timeout = d.0;
        }
        if let Some(d) = raw.send_timeout {
            o.send_timeout = d.0;
        }
        if let Some(b) = raw.max_body_size {
            o.max_body_size = b.0;
        }
        if let Some(b) = raw.redirect_https {
            o.redirect_https = b;
        }
        if let Some(c) = &raw.compression {
            self.compression(c, &mut o.compression, &mut o.compression_settings);
        }
        if let Some(b) = raw.websocket {
            o.websocket = b;
        }
        for (key, value, field) in [
            (
                "client_header_timeout",
                &raw.client_header_timeout,
                &mut o.client_header_timeout,
            ),
            (
                "client_body_timeout",
                &raw.client_body_timeout,
                &mut o.client_body_timeout,
            ),
        ] {
            if let Some(d) = value {
                if d.get_ref().0.is_zero() {
                    self.error(d.span(), format!("{key} must be above 0"));
                } else {
                    *field = d.get_ref().0;
                }
            }
        }
        if let Some(d) = &raw.keepalive_timeout {
            o.keepalive_timeout = d.get_ref().0;
        }
        if let Some(b) = raw.forward_original_path {
            o.forward_original_path = b;
        }
        if let Some(b) = raw.access_log {
            o.access_log = b;
        }
        if let Some(r) = &raw.retry {
            o.retry = self.retry(r, &o.retry);
        }
        o.error_pages = raw
            .error_pages
            .as_ref()
            .map_or_else(ErrorPages::default, |p| self.error_pages(p));
        if let Some(rules) = &raw.access {
            o.access = self.access_rules(rules);
        }
        if let Some(b) = &raw.basic_auth {
            o.basic_auth = self.basic_auth(b);
        }
        if let Some(f) = &raw.forward_auth {
            o.forward_auth = self.forward_auth(f);
        }
        if let Some(zones) = &raw.limits {
            o.limits.clear();
            for z in zones {
                if self.zone_names.iter().any(|n| n == &z.get_ref().0) {
                    o.limits.push(z.get_ref().0.clone());
                } else {
                    self.error(
                        z.span(),
                        format!("unknown rate-limit zone \"{}\"", z.get_ref()),
                    );
                }
            }
        }
        if let Some(headers) = &raw.response_headers {
            self.header_set(headers, &mut o.response_headers);
        }
        self.answer_options(raw, &mut o);
        o
    }
}

/// A route's own options, seen as a set of defaults to layer over the global ones.
fn as_defaults(r: &RawRoute) -> RawDefaults {
    RawDefaults {
        connect_timeout: r.connect_timeout,
        read_timeout: r.read_timeout,
        send_timeout: r.send_timeout,
        max_body_size: r.max_body_size,
        redirect_https: r.redirect_https,
        compression: r.compression.clone(),
        websocket: r.websocket,
        response_headers: r.response_headers.clone(),
        limits: r.limits.clone(),
        client_header_timeout: r.client_header_timeout.clone(),
        client_body_timeout: r.client_body_timeout.clone(),
        keepalive_timeout: r.keepalive_timeout.clone(),
        forward_original_path: r.forward_original_path,
        retry: r.retry.clone(),
        request_headers: r.request_headers.clone(),
        response_headers_remove: r.response_headers_remove.clone(),
        cors: r.cors.clone(),
        error_pages: r.error_pages.clone(),
        access_log: r.access_log,
        access: r.access.clone(),
        basic_auth: r.basic_auth.clone(),
        forward_auth: r.forward_auth.clone(),
    }
}
