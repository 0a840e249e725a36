//! The host table: exact names, wildcard suffixes and a catch-all, each with path prefixes, longest first.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::redirect::RedirectConfig;
use crate::config::static_site::StaticSite;
use crate::config::{HostPattern, RouteConfig, RouteOptions};
use crate::limits::Limiter;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// `host` + `path`, as written, for logs and metrics.
    pub id: Arc<str>,
    pub prefix: Box<str>,
    pub strip_prefix: bool,
    /// Index into `Snapshot::services`; `None` for a route that answers itself (`static`,
    /// `redirect`).
    pub service: Option<usize>,
    /// The files a static route serves (`proxy::static_files`).
    pub static_files: Option<Arc<StaticSite>>,
    /// Where a redirecting route sends its clients.
    pub redirect: Option<RedirectConfig>,
    pub options: RouteOptions,
    /// The rate-limit zones named by `options.limits`, all of which a request must pass.
    pub zones: Vec<Arc<dyn Limiter>>,
}

/// Routes sharing one host pattern, longest prefix first.
#[derive(Debug, Default)]
struct HostRoutes {
    routes: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<Box<str>, HostRoutes>,
    wildcard: HashMap<Box<str>, HostRoutes>,
    catch_all: HostRoutes,
}

impl RouteTable {
    /// Compiles routes; `service_index` maps a service name to its index (validated beforehand).
    pub fn build(routes: &[RouteConfig], service_index: impl Fn(&str) -> Option<usize>) -> Self {
        let mut table = RouteTable::default();
        for r in routes {
            let service = match &r.service {
                Some(name) => match service_index(name) {
                    Some(i) => Some(i),
                    // Unreachable after validation; a route to nowhere is dropped rather than
                    // panicking.
                    None => continue,
                },
                None => None,
            };
            let idx = table.routes.len() as u32;
            table.routes.push(Route {
                id: format!("{}{}", r.host, r.path).into(),
                prefix: r.path.clone().into(),
                strip_prefix: r.strip_prefix,
                service,
                static_files: r.static_files.clone(),
                redirect: r.redirect.clone(),
                options: r.options.clone(),
                zones: Vec::new(),
            });
            let entry = match &r.host {
                HostPattern::Exact(h) => table.exact.entry(h.as_str().into()).or_default(),
                HostPattern::Wildcard(s) => table.wildcard.entry(s.as_str().into()).or_default(),
                HostPattern::Any => &mut table.catch_all,
            };
            entry.routes.push(idx);
        }
        let routes = &table.routes;
        let by_len = |list: &mut HostRoutes| {
            list.routes
                .sort_by_key(|&i| std::cmp::Reverse(routes[i as usize].prefix.len()));
        };
        table.exact.values_mut().for_each(by_len);
        table.wildcard.values_mut().for_each(by_len);
        by_len(&mut table.catch_all);
        table
    }

    /// Resolves every route's zone names (validated beforehand; an unknown name is skipped).
    pub fn attach_zones(&mut self, zones: &HashMap<String, Arc<dyn Limiter>>) {
        for route in &mut self.routes {
            route.zones = route
                .options
                .limits
                .iter()
                .filter_map(|name| zones.get(name).cloned())
                .collect();
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn get(&self, idx: usize) -> Option<&Route> {
        self.routes.get(idx)
    }

    /// Finds the route for a normalized host (lowercase, no port) and a path.
    ///
    /// The most specific host pattern that has a matching prefix wins: the exact name, then wildcards
    /// from the longest suffix to the shortest, then the catch-all.
    pub fn lookup(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(found) = self.exact.get(host).and_then(|h| self.match_path(h, path)) {
            return Some(found);
        }
        // Each parent domain, longest first: what follows each dot. By bytes, and not at all
        // without wildcards: `split_once` costs about 100 instructions a dot, on every request.
        if !self.wildcard.is_empty() {
            for (dot, _) in host.bytes().enumerate().filter(|&(_, b)| b == b'.') {
                let parent = &host[dot + 1..];
                if let Some(found) = self
                    .wildcard
                    .get(parent)
                    .and_then(|h| self.match_path(h, path))
                {
                    return Some(found);
                }
            }
        }
        self.match_path(&self.catch_all, path)
    }

    fn match_path(&self, host: &HostRoutes, path: &str) -> Option<usize> {
        host.routes
            .iter()
            .map(|&i| i as usize)
            .find(|&i| prefix_matches(&self.routes[i].prefix, path))
    }
}

/// `/v1/auth` matches `/v1/auth` and `/v1/auth/x`, not `/v1/authors`; `/` matches everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path sent upstream when a route strips its prefix: `/v1/auth/login` → `/login`. A path
/// that does not start with the prefix on a segment boundary (an original path forwarded as
/// sent, `forward_original_path`) is left as it is.
pub fn strip(prefix: &str, path: &str) -> String {
    if prefix == "/" || !prefix_matches(prefix, path) {
        return path.to_string();
    }
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    }
}

/// Host header value → lookup key: port removed, trailing dot removed, lowercase (borrowed when already so).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    // By bytes: the string patterns of `split_once` cost more than the rest of the function.
    let bytes = raw.as_bytes();
    let without_port = if bytes.first() == Some(&b'[') {
        bytes
            .iter()
            .position(|&b| b == b']')
            .map_or(raw, |end| &raw[1..end])
    } else {
        match bytes.iter().rposition(|&b| b == b':') {
            Some(colon) if bytes[colon + 1..].iter().all(u8::is_ascii_digit) => &raw[..colon],
            _ => raw,
        }
    };
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: HostPattern, path: &str, service: &str) -> RouteConfig {
        RouteConfig {
            host,
            path: path.into(),
            strip_prefix: false,
            service: Some(service.into()),
            static_files: None,
            redirect: None,
            options: RouteOptions::default(),
        }
    }

    fn table() -> RouteTable {
        let routes = vec![
            route(HostPattern::Exact("api.example.com".into()), "/", "api"),
            route(
                HostPattern::Exact("api.example.com".into()),
                "/v1/auth",
                "auth",
            ),
            route(HostPattern::Exact("api.example.com".into()), "/v1", "v1"),
            route(HostPattern::Wildcard("example.com".into()), "/", "wild"),
            route(HostPattern::Wildcard("dev.example.com".into()), "/", "dev"),
            route(
                HostPattern::Exact("only.example.org".into()),
                "/admin",
                "admin",
            ),
            route(HostPattern::Any, "/", "any"),
        ];
        let names = ["api", "auth", "v1", "wild", "dev", "admin", "any"];
        RouteTable::build(&routes, |s| names.iter().position(|n| *n == s))
    }

    fn svc(t: &RouteTable, host: &str, path: &str) -> Option<usize> {
        t.lookup(host, path)
            .and_then(|i| t.get(i).expect("route").service)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table();
        assert_eq!(svc(&t, "api.example.com", "/v1/auth/login"), Some(1));
        assert_eq!(svc(&t, "api.example.com", "/v1/auth"), Some(1));
        assert_eq!(svc(&t, "api.example.com", "/v1/authors"), Some(2));
        assert_eq!(svc(&t, "api.example.com", "/v2"), Some(0));
    }

    #[test]
    fn wildcards_most_specific_first_then_catch_all() {
        let t = table();
        assert_eq!(svc(&t, "x.example.com", "/"), Some(3));
        assert_eq!(svc(&t, "a.b.example.com", "/"), Some(3));
        assert_eq!(svc(&t, "api.dev.example.com", "/"), Some(4));
        assert_eq!(svc(&t, "example.com", "/"), Some(6));
        assert_eq!(svc(&t, "elsewhere.net", "/"), Some(6));
        // A host whose own prefixes do not match falls through to less specific patterns.
        assert_eq!(svc(&t, "only.example.org", "/other"), Some(6));
        assert_eq!(svc(&t, "only.example.org", "/admin/x"), Some(5));
    }

    #[test]
    fn without_wildcards_a_host_goes_from_its_exact_name_to_the_catch_all() {
        let routes = vec![
            route(HostPattern::Exact("a.test".into()), "/", "a"),
            route(HostPattern::Exact("test".into()), "/", "b"),
            route(HostPattern::Any, "/", "c"),
        ];
        let names = ["a", "b", "c"];
        let t = RouteTable::build(&routes, |s| names.iter().position(|n| *n == s));
        assert_eq!(svc(&t, "a.test", "/"), Some(0));
        // An exact name is no wildcard: its subdomains are not under it.
        assert_eq!(svc(&t, "x.a.test", "/"), Some(2));
        assert_eq!(svc(&t, "x.test", "/"), Some(2));
        assert_eq!(svc(&t, "...", "/"), Some(2));
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let routes = vec![route(HostPattern::Exact("a.test".into()), "/", "a")];
        let t = RouteTable::build(&routes, |_| Some(0));
        assert_eq!(t.lookup("b.test", "/"), None);
        assert_eq!(t.lookup("a.test", "/x"), Some(0));
    }

    #[test]
    fn strips_and_normalizes() {
        assert_eq!(strip("/v1/auth", "/v1/auth/login"), "/login");
        assert_eq!(strip("/v1/auth", "/v1/auth"), "/");
        assert_eq!(strip("/", "/x"), "/x");
        assert_eq!(
            strip("/v1/auth", "/v1/authors/../auth/login"),
            "/v1/authors/../auth/login",
            "not under the prefix: unchanged"
        );
        for (raw, normalized) in [
            ("API.Example.com:8443", "api.example.com"),
            ("example.com.", "example.com"),
            ("[::1]:80", "::1"),
            ("[::1]", "::1"),
            ("[::1", "[::1"),
            ("host:", "host"),
            ("host:8o", "host:8o"),
            ("a:b:80", "a:b"),
            ("ÉX.test:1", "Éx.test"),
        ] {
            assert_eq!(normalize_host(raw), normalized, "{raw}");
        }
        assert!(matches!(
            normalize_host("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// Every host of up to five characters from an alphabet of each kind (letters of both cases,
    /// digits, the colon, the dot, brackets, a non-ASCII letter) against the rule written with
    /// string methods: a bracketed literal's inside, else the port after the last colon goes
    /// when it is all digits (an empty one too); then one trailing dot; then the rest is
    /// lowercased (borrowed when it already is).
    #[test]
    fn hosts_normalize_by_the_rule_at_every_character() {
        let alphabet = ['a', 'Z', '0', '9', ':', '.', '[', ']', 'É', '-'];
        let rule = |raw: &str| -> String {
            let without_port = if let Some(rest) = raw.strip_prefix('[') {
                rest.split_once(']').map_or(raw, |(inside, _)| inside)
            } else {
                match raw.rsplit_once(':') {
                    Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
                    _ => raw,
                }
            };
            without_port
                .strip_suffix('.')
                .unwrap_or(without_port)
                .to_string()
        };
        let mut checked = 0;
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut raw = String::new();
                for _ in 0..len {
                    raw.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                let got = normalize_host(&raw);
                let host = rule(&raw);
                assert_eq!(got, host.to_ascii_lowercase(), "{raw:?}");
                assert_eq!(
                    matches!(got, std::borrow::Cow::Borrowed(_)),
                    !host.chars().any(|c| c.is_ascii_uppercase()),
                    "{raw:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 100_000);
    }
}
