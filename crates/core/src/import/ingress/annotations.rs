//! The ingress-nginx and cert-manager annotations of one Ingress, read into what Switchyard can carry over, with a note for every one it cannot.

use std::collections::BTreeMap;

/// ingress-nginx's annotation prefix.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// An annotation that is not carried over (or only in part): a finding and a TOML comment.
#[derive(Debug, Clone)]
pub struct Note {
    pub annotation: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cors {
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Canary {
    pub weight: u32,
    pub total: u32,
    pub header: Option<String>,
    pub header_value: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Affinity {
    pub cookie: String,
    pub max_age: Option<u64>,
}

/// How the backends are spoken to (`backend-protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackendProtocol {
    #[default]
    Http,
    Https,
    Grpc,
    Grpcs,
}

/// What the annotations of one Ingress ask for.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    /// A Switchyard size string.
    pub body_size: Option<String>,
    pub connect_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub rps: Option<u32>,
    pub rpm: Option<u32>,
    pub connections: Option<u32>,
    pub burst_multiplier: u32,
    pub cors: Option<Cors>,
    /// `canary: "true"`, with its rules.
    pub canary: Option<Canary>,
    pub affinity: Option<Affinity>,
    /// `allow NET` / `deny NET` rules.
    pub access: Vec<String>,
    /// (realm, namespace, secret)
    pub basic_auth: Option<(Option<String>, String, String)>,
    pub rewrite_target: Option<String>,
    pub use_regex: bool,
    pub protocol: BackendProtocol,
    /// (`ClusterIssuer` or `Issuer`, name)
    pub issuer: Option<(String, String)>,
    pub notes: Vec<Note>,
}

/// strconv.ParseBool, as ingress-nginx reads its booleans.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_u32(v: &str) -> Option<u32> {
    v.trim().parse().ok()
}

/// An nginx size (`8m`, `512k`, `1g`, `1024`) as a Switchyard size; `0` (no limit) as the
/// largest size anyone sends.
fn parse_size(v: &str) -> Option<String> {
    let v = v.trim();
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let n: u64 = digits.parse().ok()?;
    if n == 0 {
        return Some("1024GB".into());
    }
    let unit = match unit {
        "" => "B",
        "k" | "K" => "KB",
        "m" | "M" => "MB",
        "g" | "G" => "GB",
        _ => return None,
    };
    Some(format!("{n}{unit}"))
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// ingress-nginx's CORS defaults.
const CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const CORS_MAX_AGE: u64 = 1_728_000;

/// Annotations read elsewhere or on purpose without effect here.
const QUIET: &[&str] = &[
    "kubernetes.io/ingress.class",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Reads annotations by name, keeping track of the ones read and of bad values.
struct Reader<'a> {
    map: &'a BTreeMap<String, String>,
    used: Vec<String>,
    notes: Vec<Note>,
}

impl Reader<'_> {
    fn take(&mut self, k: &str) -> Option<String> {
        let key = format!("{NGINX}{k}");
        let v = self.map.get(&key).cloned();
        if v.is_some() {
            self.used.push(key);
        }
        v
    }

    fn bad(&mut self, k: &str, v: &str, what: &str) {
        self.notes.push(Note {
            annotation: format!("{NGINX}{k}"),
            message: format!(
                "{v:?} is not {what}; ingress-nginx ignores it, and so does the import"
            ),
        });
    }

    fn boolean(&mut self, k: &str) -> Option<bool> {
        let v = self.take(k)?;
        let b = parse_bool(&v);
        if b.is_none() {
            self.bad(k, &v, "a boolean");
        }
        b
    }

    fn number(&mut self, k: &str) -> Option<u32> {
        let v = self.take(k)?;
        let n = parse_u32(&v);
        if n.is_none() {
            self.bad(k, &v, "a whole number");
        }
        n
    }

    fn note(&mut self, k: &str, message: String) {
        self.notes.push(Note {
            annotation: format!("{NGINX}{k}"),
            message,
        });
    }
}

impl Annotations {
    /// Reads the annotations of an Ingress in `namespace`.
    pub fn read(map: &BTreeMap<String, String>, namespace: &str) -> Annotations {
        let mut a = Annotations {
            burst_multiplier: 5,
            ..Annotations::default()
        };
        let mut r = Reader {
            map,
            used: Vec::new(),
            notes: Vec::new(),
        };
        a.ssl_redirect = r.boolean("ssl-redirect");
        a.force_ssl_redirect = r.boolean("force-ssl-redirect").unwrap_or(false);
        if let Some(v) = r.take("proxy-body-size") {
            a.body_size = parse_size(&v);
            if a.body_size.is_none() {
                r.bad("proxy-body-size", &v, "an nginx size");
            }
        }
        a.connect_timeout = r.number("proxy-connect-timeout").map(u64::from);
        a.read_timeout = r.number("proxy-read-timeout").map(u64::from);
        a.send_timeout = r.number("proxy-send-timeout").map(u64::from);
        a.rps = r.number("limit-rps").filter(|n| *n > 0);
        a.rpm = r.number("limit-rpm").filter(|n| *n > 0);
        a.connections = r.number("limit-connections").filter(|n| *n > 0);
        if let Some(m) = r.number("limit-burst-multiplier") {
            a.burst_multiplier = m;
        }
        if r.boolean("enable-cors") == Some(true) {
            let origins = list(&r.take("cors-allow-origin").unwrap_or_else(|| "*".into()));
            let origins = if origins.iter().any(|o| o == "*") {
                vec!["*".to_string()]
            } else {
                origins
            };
            let mut cors = Cors {
                origins,
                methods: list(
                    &r.take("cors-allow-methods")
                        .unwrap_or_else(|| CORS_METHODS.into()),
                ),
                headers: list(
                    &r.take("cors-allow-headers")
                        .unwrap_or_else(|| CORS_HEADERS.into()),
                ),
                expose: list(&r.take("cors-expose-headers").unwrap_or_default()),
                credentials: r.boolean("cors-allow-credentials").unwrap_or(true),
                max_age: Some(r.number("cors-max-age").map_or(CORS_MAX_AGE, u64::from)),
            };
            // ingress-nginx sends `Access-Control-Allow-Origin: *` with `-Credentials: true`,
            // which browsers refuse for credentialed calls; without credentials they answer
            // the same, and Switchyard refuses the pair.
            if cors.origins == ["*"] {
                cors.credentials = false;
            }
            a.cors = Some(cors);
        } else {
            for k in [
                "cors-allow-origin",
                "cors-allow-methods",
                "cors-allow-headers",
                "cors-expose-headers",
                "cors-allow-credentials",
                "cors-max-age",
            ] {
                r.take(k);
            }
        }
        if r.boolean("canary") == Some(true) {
            a.canary = Some(Canary {
                weight: r.number("canary-weight").unwrap_or(0),
                total: r.number("canary-weight-total").unwrap_or(100).max(1),
                header: r.take("canary-by-header"),
                header_value: r.take("canary-by-header-value"),
                cookie: r.take("canary-by-cookie"),
            });
            if let Some(p) = r.take("canary-by-header-pattern") {
                r.note(
                    "canary-by-header-pattern",
                    format!("{p:?}: not supported (an override names one pool)"),
                );
            }
        }
        match r.take("affinity").as_deref() {
            Some("cookie") => {
                a.affinity = Some(Affinity {
                    cookie: r
                        .take("session-cookie-name")
                        .unwrap_or_else(|| "INGRESSCOOKIE".into()),
                    max_age: r.number("session-cookie-max-age").map(u64::from),
                });
                if let Some(p) = r.take("session-cookie-path") {
                    if p != "/" {
                        r.note(
                            "session-cookie-path",
                            format!("{p:?}: Switchyard's affinity cookie always has Path=/"),
                        );
                    }
                }
            }
            Some(other) => r.bad("affinity", other, "\"cookie\""),
            None => {}
        }
        for (k, verb) in [
            ("denylist-source-range", "deny"),
            ("whitelist-source-range", "allow"),
            ("allowlist-source-range", "allow"),
        ] {
            if let Some(v) = r.take(k) {
                a.access
                    .extend(list(&v).into_iter().map(|n| format!("{verb} {n}")));
            }
        }
        if a.access.iter().any(|r| r.starts_with("allow ")) {
            a.access.push("deny all".into());
        }
        match r.take("auth-type").as_deref() {
            Some("basic") => {
                let realm = r.take("auth-realm");
                match r.take("auth-secret") {
                    Some(s) => {
                        let (ns, name) = s.split_once('/').unwrap_or((namespace, &s));
                        a.basic_auth = Some((realm, ns.to_string(), name.to_string()));
                        if r.take("auth-secret-type").as_deref() == Some("auth-map") {
                            r.note(
                                "auth-secret-type",
                                "auth-map: the secret's keys are the users; write them to the \
                                 htpasswd file as `user:hash` lines (the export command reads \
                                 the `auth` key of an auth-file secret)"
                                    .into(),
                            );
                        }
                    }
                    None => r.note(
                        "auth-type",
                        "basic without auth-secret: ingress-nginx ignores it".into(),
                    ),
                }
            }
            Some(other) => r.bad(
                "auth-type",
                other,
                "\"basic\" (digest auth is not supported)",
            ),
            None => {}
        }
        a.rewrite_target = r.take("rewrite-target");
        a.use_regex = r.boolean("use-regex").unwrap_or(false);
        match r
            .take("backend-protocol")
            .map(|v| v.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("HTTP") => {}
            Some("HTTPS") => a.protocol = BackendProtocol::Https,
            Some("GRPC") => a.protocol = BackendProtocol::Grpc,
            Some("GRPCS") => a.protocol = BackendProtocol::Grpcs,
            Some(other) => r.bad("backend-protocol", other, "HTTP, HTTPS, GRPC or GRPCS"),
        }
        // ClusterIP is what the import targets anyway.
        r.take("service-upstream");
        let Reader { used, notes, .. } = r;
        let mut used = used;
        let mut notes = notes;

        for (kind, key) in [
            ("ClusterIssuer", "cert-manager.io/cluster-issuer"),
            ("Issuer", "cert-manager.io/issuer"),
        ] {
            if let Some(name) = map.get(key) {
                used.push(key.to_string());
                if a.issuer.is_none() {
                    a.issuer = Some((kind.to_string(), name.clone()));
                }
            }
        }

        for (k, v) in map {
            if used.contains(k) || QUIET.contains(&k.as_str()) {
                continue;
            }
            let message = if let Some(name) = k.strip_prefix(NGINX) {
                match name {
                    "configuration-snippet"
                    | "server-snippet"
                    | "auth-snippet"
                    | "stream-snippet"
                    | "modsecurity-snippet" => {
                        "nginx code is never carried over: write what it does as Switchyard \
                         config by hand"
                            .to_string()
                    }
                    n if n.starts_with("canary") => {
                        "canary settings without `canary: \"true\"` have no effect".to_string()
                    }
                    n if n.starts_with("session-cookie") => {
                        "not carried over: Switchyard's affinity cookie has its name and \
                         max-age only (HttpOnly, SameSite=Lax, Path=/, Secure on TLS)"
                            .to_string()
                    }
                    "limit-whitelist" => {
                        "not carried over: Switchyard zones have no exempt client networks \
                         (only `[limits] exempt_paths`)"
                            .to_string()
                    }
                    "load-balance" | "upstream-hash-by" => {
                        "not carried over: a ClusterIP name is one address; balancing \
                         happens in kube-proxy (a headless Service gives Switchyard the pods, \
                         then set `balance`)"
                            .to_string()
                    }
                    "ssl-passthrough" => "not supported: Switchyard terminates TLS".to_string(),
                    _ => format!("{v:?}: not supported by the import"),
                }
            } else if k.starts_with("cert-manager.io/") {
                format!("{v:?}: only cert-manager's issuer annotations are carried over")
            } else {
                continue;
            };
            notes.push(Note {
                annotation: k.clone(),
                message,
            });
        }
        a.notes.extend(notes);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sizes() {
        assert_eq!(parse_size("8m").as_deref(), Some("8MB"));
        assert_eq!(parse_size("512k").as_deref(), Some("512KB"));
        assert_eq!(parse_size("100").as_deref(), Some("100B"));
        assert_eq!(parse_size("0").as_deref(), Some("1024GB"));
        assert_eq!(parse_size("8mb"), None);
        assert_eq!(parse_size(""), None);
    }
}
