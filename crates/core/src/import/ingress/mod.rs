//! `switchyard import ingress`: Kubernetes Ingress manifests, as ingress-nginx serves them, turned into a Switchyard config that passes validation, with a finding for everything that could not be carried over.
//!
//! The model: one route per Ingress rule path, one service per backend (a canary Ingress's
//! backend becomes a second pool of the service it shadows), server names
//! `SERVICE.NAMESPACE.svc.cluster.local:PORT` (the ClusterIP, or the pods of a headless
//! Service), TLS secrets as files under [`TLS_DIR`], htpasswd secrets under [`HTPASSWD_DIR`],
//! and ingress-nginx's ConfigMap defaults written out in `[defaults]`. docs/migrating-from-nginx.md
//! ("From ingress-nginx") has the table of annotations.

mod annotations;
mod emit;
mod manifest;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use annotations::{Affinity, Annotations, BackendProtocol, Canary, NGINX};
use manifest::{IngressBackend, Manifests, Origin};

/// Where TLS secrets are expected as files: `TLS_DIR/NAMESPACE/SECRET.crt` and `.key`.
pub const TLS_DIR: &str = "/etc/switchyard/tls";
/// Where basic-auth secrets are expected as htpasswd files: `HTPASSWD_DIR/NAMESPACE/SECRET`.
pub const HTPASSWD_DIR: &str = "/etc/switchyard/htpasswd";

/// The converted config and what it could not carry over.
#[derive(Debug, Clone)]
pub struct Converted {
    /// A commented Switchyard config that passes validation (but for the files of
    /// [`Converted::needed_files`], which must be exported from the cluster).
    pub toml: String,
    /// Everything not carried over, or carried over differently: the config needs review.
    pub findings: Vec<Finding>,
    /// Files the config names that come from Kubernetes secrets.
    pub needed_files: Vec<NeededFile>,
}

/// One thing the import could not carry over (also a comment at its place in the TOML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// The line the manifest's YAML document starts on.
    pub line: usize,
    /// The annotation, field or object concerned.
    pub what: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.what, self.message
        )
    }
}

/// A file the config reads that a Kubernetes secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededFile {
    pub path: String,
    /// A command that writes it from the cluster.
    pub export: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error("{file}:{line}:{column}: {message}")]
    Yaml {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("no networking.k8s.io/v1 Ingress in the files")]
    NoIngress,
    /// The import wrote a config that does not validate: a bug of the import.
    #[error("the converted config does not validate (a bug of the import):\n{errors}\n--- config ---\n{toml}")]
    Invalid { errors: String, toml: String },
}

/// A backend as Switchyard reaches it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Server {
    namespace: String,
    service: String,
    port: u16,
    headless: bool,
}

impl Server {
    fn address(&self) -> String {
        format!(
            "{}.{}.svc.cluster.local:{}",
            self.service, self.namespace, self.port
        )
    }
}

/// What makes a Switchyard service: its pools and how clients stick to a server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ServiceKey {
    stable: Server,
    canary: Option<(Server, Canary)>,
    affinity: Option<Affinity>,
    protocol: BackendProtocol,
}

/// One route to write.
#[derive(Debug, Clone)]
struct Route {
    host: String,
    path: String,
    strip_prefix: bool,
    key: ServiceKey,
    /// Index into the Ingresses (for their options and notes).
    ingress: usize,
    /// Comments written above the route.
    comments: Vec<String>,
}

/// Converts the manifests in `files` into a checked Switchyard config.
pub fn convert(files: &[PathBuf]) -> Result<Converted, IngressError> {
    let mut findings = Vec::new();
    let mut manifests = Manifests::default();
    for f in files {
        manifests.read(f, &mut findings)?;
    }
    if manifests.ingresses.is_empty() {
        return Err(IngressError::NoIngress);
    }
    let mut c = Converter {
        manifests: &manifests,
        findings,
        annotations: Vec::new(),
        routes: Vec::new(),
        ingress_comments: BTreeMap::new(),
    };
    c.run();
    let Converter {
        findings,
        annotations,
        routes,
        ingress_comments,
        ..
    } = c;
    let out = emit::write(&emit::Input {
        files,
        manifests: &manifests,
        annotations: &annotations,
        routes: &routes,
        ingress_comments: &ingress_comments,
    });
    let mut findings = findings;
    findings.extend(out.findings);
    let (toml, refused) = settle(out.toml, &out.needed_files)?;
    findings.extend(refused);
    Ok(Converted {
        toml,
        findings,
        needed_files: out.needed_files,
    })
}

/// Validation passes to make before giving up: each takes out at least one block.
const SETTLE_ROUNDS: usize = 32;

/// Runs Switchyard's own validation on the output until it passes: a route option with a value
/// Switchyard refuses (annotations may carry anything), or else the whole block that holds it
/// (a route, a service, a zone, a certificate: the lines between two blank lines), is commented
/// out and reported with Switchyard's reason; what depends on it goes the same way in the next
/// round. Errors about the secret files (not
/// exported yet) are expected.
fn settle(toml: String, needed: &[NeededFile]) -> Result<(String, Vec<Finding>), IngressError> {
    let path = Path::new("/etc/switchyard/switchyard.toml");
    let mut lines: Vec<String> = toml.lines().map(String::from).collect();
    let mut findings = Vec::new();
    for _ in 0..=SETTLE_ROUNDS {
        let text = lines.join("\n") + "\n";
        let errors = match crate::config::parse_without_lookups(&text, path) {
            Ok(_) => return Ok((text, findings)),
            Err(errors) => errors.0,
        };
        let real: Vec<_> = errors
            .into_iter()
            .filter(|e| !needed.iter().any(|n| e.reason.contains(&n.path)))
            .collect();
        if real.is_empty() {
            return Ok((text, findings));
        }
        if !take_out(&mut lines, &real, &mut findings) {
            return Err(IngressError::Invalid {
                errors: real
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                toml: text,
            });
        }
    }
    Err(IngressError::Invalid {
        errors: format!("still invalid after {SETTLE_ROUNDS} rounds"),
        toml: lines.join("\n"),
    })
}

/// Comments out the block of each error; false when none could be (an error in the import's
/// own header, listeners or defaults).
fn take_out(
    lines: &mut [String],
    errors: &[crate::config::ConfigError],
    findings: &mut Vec<Finding>,
) -> bool {
    let mut changed = false;
    for e in errors {
        let Some(at) = error_line(lines, e) else {
            continue;
        };
        if lines[at].trim_start().starts_with('#') {
            continue;
        }
        let start = (0..at)
            .rev()
            .find(|l| lines[*l].trim().is_empty())
            .map_or(0, |l| l + 1);
        let end = (at..lines.len())
            .find(|l| lines[*l].trim().is_empty())
            .unwrap_or(lines.len());
        let header = lines[start..end]
            .iter()
            .find(|l| l.starts_with('['))
            .cloned()
            .unwrap_or_default();
        if header == "[[listeners]]" || header == "[defaults]" || header == "[limits]" {
            continue;
        }
        let origin = (0..end).rev().find_map(|l| origin_of(&lines[l]));
        findings.push(Finding {
            file: origin.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
            line: origin.map_or(0, |o| o.1),
            what: format!("{header} {}", lines[at].trim()),
            message: format!("Switchyard refuses it ({}); left out", e.reason),
        });
        let reason = e.reason.replace('\n', " ");
        // A route option (CORS, access, limits...) goes alone: the route stays.
        let key = lines[at].split('=').next().unwrap_or_default().trim();
        if header == "[[routes]]" && !["host", "path", "service"].contains(&key) {
            lines[at] = format!("# NOT CARRIED OVER ({reason}): {}", lines[at]);
            changed = true;
            continue;
        }
        for (i, line) in lines[start..end].iter_mut().enumerate() {
            if start + i == at {
                *line = format!("# NOT CARRIED OVER ({reason}): {line}");
            } else if !line.starts_with('#') {
                *line = format!("# {line}");
            }
        }
        changed = true;
    }
    changed
}

/// The line (0-based) of an error: its own, or for an error about a whole service (reported
/// at 1:1), the service's first table.
fn error_line(lines: &[String], e: &crate::config::ConfigError) -> Option<usize> {
    if e.line == 1 && e.column == 1 {
        let (_, rest) = e.reason.split_once("service \"")?;
        let (name, _) = rest.split_once('"')?;
        let table = format!("[services.{}.", emit::q(name));
        return lines.iter().position(|l| l.starts_with(&table));
    }
    e.line.checked_sub(1).filter(|l| *l < lines.len())
}

/// The `(FILE:LINE)` at the end of a comment line that names an Ingress.
fn origin_of(line: &str) -> Option<(String, usize)> {
    let rest = line.strip_prefix('#')?;
    let (_, tail) = rest.rsplit_once("Ingress ")?;
    let (_, place) = tail.rsplit_once(" (")?;
    let (file, n) = place.strip_suffix(')')?.rsplit_once(':')?;
    Some((file.to_string(), n.parse().ok()?))
}

struct Converter<'a> {
    manifests: &'a Manifests,
    findings: Vec<Finding>,
    annotations: Vec<Annotations>,
    routes: Vec<Route>,
    /// Comments (and findings) of an Ingress as a whole, written above its first route.
    ingress_comments: BTreeMap<usize, Vec<String>>,
}

/// What a path of an Ingress becomes.
enum PathOutcome {
    Route {
        path: String,
        strip_prefix: bool,
        /// Carried over with a difference: (finding or only a comment, text).
        note: Option<(bool, String)>,
    },
    Skip(String),
}

/// Regex metacharacters (a `.` is taken as the dot it usually means in a path).
const REGEX_META: &[char] = &[
    '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
];

/// A literal path as a route path (trailing `/` dropped, as Switchyard ignores it).
fn prefix(path: &str) -> String {
    let p = path.trim_end_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        p.to_string()
    }
}

/// How ingress-nginx matches `path` of `path_type`, as a Switchyard route path.
fn route_path(path: &str, path_type: &str, regex: bool, rewrite: Option<&str>) -> PathOutcome {
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') {
        return PathOutcome::Skip(format!("path {path:?} does not start with `/`"));
    }
    if path_type == "Exact" {
        let note = format!(
            "pathType Exact {path:?}: a Switchyard route is a prefix, so it also takes {path}/more"
        );
        return literal_or_skip(path, true, note);
    }
    if !regex {
        let note = (path_type != "Prefix").then(|| {
            (
                false,
                format!(
                    "pathType {path_type} {path:?}: nginx's `location {path}` also takes \
                     {}more; the route takes whole segments only",
                    path
                ),
            )
        });
        if path.contains(REGEX_META) && path_type != "Prefix" {
            return PathOutcome::Skip(format!(
                "path {path:?} is a regex, but use-regex is not set: ingress-nginx takes it \
                 literally; not carried over"
            ));
        }
        return PathOutcome::Route {
            path: prefix(path),
            strip_prefix: false,
            note,
        };
    }
    // A regex location: `~* ^PATH`, case-insensitive, as ingress-nginx writes it.
    let cut = path.find(REGEX_META).unwrap_or(path.len());
    let (lit, tail) = path.split_at(cut);
    let case_note = format!(
        "regex path {path:?} (nginx matches it case-insensitively) taken as the prefix {}",
        prefix(lit)
    );
    let (segments, captures) = match tail {
        "" => (false, 0),
        "(/|$)(.*)" | "(/|$)" => (true, 2),
        "(.*)" | ".*" => (lit.ends_with('/'), 1),
        "/(.*)" | "/.*" => (true, 1),
        _ => {
            return PathOutcome::Skip(format!(
                "regex path {path:?} is not a prefix; not carried over"
            ))
        }
    };
    let mut strip_prefix = false;
    let mut note = (false, case_note);
    if let Some(target) = rewrite {
        let strip = (captures == 2 && target == "/$2") || (captures == 1 && target == "/$1");
        if strip && lit.trim_end_matches('/').is_empty() {
            // `/(.*)` to `/$1`: the path unchanged.
        } else if strip && segments {
            strip_prefix = true;
        } else {
            note = (
                true,
                format!(
                    "rewrite-target {target:?} on {path:?} is not a prefix strip (only \
                     `PREFIX(/|$)(.*)` to `/$2` is): the path goes upstream unchanged"
                ),
            );
        }
    }
    if !segments && !note.0 {
        note.1 = format!(
            "{}; nginx's regex also takes {}more, the route whole segments only",
            note.1, lit
        );
    }
    PathOutcome::Route {
        path: prefix(lit),
        strip_prefix,
        note: Some(note),
    }
}

fn literal_or_skip(path: &str, finding: bool, note: String) -> PathOutcome {
    if path.contains(REGEX_META) {
        return PathOutcome::Skip(format!(
            "path {path:?} has regex characters; not carried over"
        ));
    }
    PathOutcome::Route {
        path: prefix(path),
        strip_prefix: false,
        note: Some((finding, note)),
    }
}

impl Converter<'_> {
    fn finding(&mut self, origin: &Origin, what: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            file: origin.file.clone(),
            line: origin.line,
            what: what.into(),
            message: message.into(),
        });
    }

    /// A finding, also written as a comment above the Ingress's routes.
    fn ingress_finding(&mut self, i: usize, what: &str, message: &str) {
        let origin = self.manifests.ingresses[i].1.clone();
        self.finding(&origin, what, message);
        self.ingress_comments
            .entry(i)
            .or_default()
            .push(format!("NOT CARRIED OVER: {what}: {message}"));
    }

    fn run(&mut self) {
        for (ing, _) in &self.manifests.ingresses {
            self.annotations.push(Annotations::read(
                &ing.metadata.annotations,
                ing.metadata.namespace(),
            ));
        }
        let regex_hosts = self.regex_hosts();
        for i in 0..self.manifests.ingresses.len() {
            let notes = self.annotations[i].notes.clone();
            for n in notes {
                self.ingress_finding(i, &n.annotation, &n.message);
            }
            if self.annotations[i].canary.is_none() {
                self.main_routes(i, &regex_hosts);
            }
        }
        for i in 0..self.manifests.ingresses.len() {
            if self.annotations[i].canary.is_some() {
                self.canary(i, &regex_hosts);
            }
        }
        self.affinity_findings();
        self.catch_all_findings();
    }

    /// With a catch-all route (an Ingress with a defaultBackend and no rules), a request for a
    /// rule's host on a path no rule takes goes to it; ingress-nginx answers those from the
    /// controller's default backend (404).
    fn catch_all_findings(&mut self) {
        let Some(catch_all) = self.routes.iter().find(|r| r.host == "*" && r.path == "/") else {
            return;
        };
        let catch_all = catch_all.ingress;
        let mut seen = BTreeSet::new();
        let lacking: Vec<(usize, String)> = self
            .routes
            .iter()
            .filter(|r| r.host != "*" && seen.insert(r.host.clone()))
            .filter(|r| {
                !self
                    .routes
                    .iter()
                    .any(|o| o.host == r.host && o.path == "/")
            })
            .map(|r| (r.ingress, r.host.clone()))
            .collect();
        let (ing, _) = &self.manifests.ingresses[catch_all];
        let name = format!("{}/{}", ing.metadata.namespace(), ing.metadata.name);
        for (i, host) in lacking {
            self.ingress_finding(
                i,
                &format!("host {host}"),
                &format!(
                    "a path of {host} that no rule takes goes to the defaultBackend of \
                     Ingress {name} (Switchyard falls back to the catch-all host); \
                     ingress-nginx answers it 404 from the controller's default backend"
                ),
            );
        }
    }

    /// Hosts on which ingress-nginx writes every location as a regex: those of an Ingress with
    /// `use-regex` or `rewrite-target` (it applies to every Ingress of the host).
    fn regex_hosts(&self) -> BTreeSet<String> {
        let mut hosts = BTreeSet::new();
        for (i, (ing, _)) in self.manifests.ingresses.iter().enumerate() {
            let a = &self.annotations[i];
            if a.use_regex || a.rewrite_target.is_some() {
                hosts.extend(ing.spec.rules.iter().map(rule_host));
            }
        }
        hosts
    }

    /// The routes of a main (not canary) Ingress.
    fn main_routes(&mut self, i: usize, regex_hosts: &BTreeSet<String>) {
        let (ing, origin) = &self.manifests.ingresses[i];
        let ns = ing.metadata.namespace().to_string();
        let a = self.annotations[i].clone();
        for rule in &ing.spec.rules {
            let host = rule_host(rule);
            let mut has_root = false;
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let (raw, path_type) = (p.path(), p.path_type());
                let regex = regex_hosts.contains(&host);
                let outcome = route_path(&raw, &path_type, regex, a.rewrite_target.as_deref());
                let (path, strip_prefix, note) = match outcome {
                    PathOutcome::Route {
                        path,
                        strip_prefix,
                        note,
                    } => (path, strip_prefix, note),
                    PathOutcome::Skip(why) => {
                        self.ingress_finding(i, &format!("path {host}{raw}"), &why);
                        continue;
                    }
                };
                let Some(stable) = self.server(&ns, &p.backend, origin, &format!("{host}{raw}"))
                else {
                    continue;
                };
                has_root |= path == "/";
                let mut comments = Vec::new();
                if let Some((is_finding, text)) = note {
                    if is_finding {
                        self.finding(origin, format!("path {host}{raw}"), text.clone());
                        comments.push(format!("NOT CARRIED OVER: {text}"));
                    } else {
                        comments.push(text);
                    }
                }
                self.add_route(Route {
                    host: host.clone(),
                    path,
                    strip_prefix,
                    key: ServiceKey {
                        stable,
                        canary: None,
                        affinity: a.affinity.clone(),
                        protocol: a.protocol,
                    },
                    ingress: i,
                    comments,
                });
            }
            if !has_root {
                self.default_backend_route(i, &host);
            }
        }
        if ing.spec.rules.is_empty() {
            self.default_backend_route(i, "*");
        }
    }

    /// `spec.defaultBackend` takes the paths of `host` no rule path takes, as ingress-nginx's
    /// root location of the host; without rules, every host.
    fn default_backend_route(&mut self, i: usize, host: &str) {
        let (ing, origin) = &self.manifests.ingresses[i];
        let Some(backend) = &ing.spec.default_backend else {
            return;
        };
        let ns = ing.metadata.namespace().to_string();
        let Some(stable) = self.server(&ns, backend, origin, "defaultBackend") else {
            return;
        };
        let a = &self.annotations[i];
        let key = ServiceKey {
            stable,
            canary: None,
            affinity: a.affinity.clone(),
            protocol: a.protocol,
        };
        self.add_route(Route {
            host: host.to_string(),
            path: "/".into(),
            strip_prefix: false,
            key,
            ingress: i,
            comments: vec!["spec.defaultBackend".into()],
        });
    }

    fn add_route(&mut self, route: Route) {
        if let Some(first) = self
            .routes
            .iter()
            .find(|r| r.host == route.host && r.path == route.path)
        {
            let (ing, _) = &self.manifests.ingresses[first.ingress];
            let name = format!("{}/{}", ing.metadata.namespace(), ing.metadata.name);
            let what = format!("path {}{}", route.host, route.path);
            self.ingress_finding(
                route.ingress,
                &what,
                &format!("also in Ingress {name}, which is read first and wins"),
            );
            return;
        }
        self.routes.push(route);
    }

    /// A canary Ingress: its backend becomes a second pool of the routes with its hosts and
    /// paths.
    fn canary(&mut self, i: usize, regex_hosts: &BTreeSet<String>) {
        let (ing, origin) = &self.manifests.ingresses[i];
        let ns = ing.metadata.namespace().to_string();
        let a = self.annotations[i].clone();
        let Some(canary) = a.canary.clone() else {
            return;
        };
        for rule in &ing.spec.rules {
            let host = rule_host(rule);
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let (raw, path_type) = (p.path(), p.path_type());
                let path = match route_path(&raw, &path_type, regex_hosts.contains(&host), None) {
                    PathOutcome::Route { path, .. } => path,
                    PathOutcome::Skip(_) => continue,
                };
                let Some(server) = self.server(&ns, &p.backend, origin, &format!("{host}{raw}"))
                else {
                    continue;
                };
                match self
                    .routes
                    .iter_mut()
                    .find(|r| r.host == host && r.path == path)
                {
                    Some(route) if route.key.canary.is_none() => {
                        route.key.canary = Some((server, canary.clone()));
                        route.comments.push(format!(
                            "canary: Ingress {}/{}",
                            ing.metadata.namespace(),
                            ing.metadata.name
                        ));
                    }
                    Some(_) => self.ingress_finding(
                        i,
                        &format!("path {host}{raw}"),
                        "a second canary for the same path: ingress-nginx allows one; ignored",
                    ),
                    None => self.ingress_finding(
                        i,
                        &format!("path {host}{raw}"),
                        "a canary with no main Ingress for this host and path; ignored",
                    ),
                }
            }
        }
        if let (Some(_), Some(v)) = (&canary.cookie, &canary.header_value) {
            if v != "always" {
                self.ingress_finding(
                    i,
                    &format!("{NGINX}canary-by-cookie"),
                    "not carried over beside canary-by-header-value: the override names the \
                     canary pool after the header's value, and the cookie would need it to be \
                     \"always\"",
                );
            }
        }
        if canary.header_value.as_deref() == Some("main") {
            self.ingress_finding(
                i,
                &format!("{NGINX}canary-by-header-value"),
                "\"main\" is the name of the main pool: the header picks the main pool",
            );
        }
        for note in canary_ignored(&ing.metadata.annotations) {
            self.ingress_finding(
                i,
                &note,
                "ignored on a canary Ingress (ingress-nginx takes the main Ingress's settings)",
            );
        }
    }

    /// Affinity needs the pods' addresses: a finding where a ClusterIP stands between.
    fn affinity_findings(&mut self) {
        let mut seen = BTreeSet::new();
        let notes: Vec<(usize, String)> = self
            .routes
            .iter()
            .filter(|r| r.key.affinity.is_some() && !r.key.stable.headless)
            .filter(|r| seen.insert(r.key.stable.clone()))
            .map(|r| (r.ingress, r.key.stable.address()))
            .collect();
        for (i, address) in notes {
            self.ingress_finding(
                i,
                &format!("{NGINX}affinity"),
                &format!(
                    "{address} is a ClusterIP service: one address, so the cookie keeps clients \
                     on nothing (kube-proxy balances behind it); give Switchyard a headless \
                     Service (clusterIP: None, its manifest among the files) to reach the pods, \
                     which affinity, least_conn and passive ejection need"
                ),
            );
        }
    }

    /// The server of a backend, or a finding and `None`.
    fn server(
        &mut self,
        ns: &str,
        backend: &IngressBackend,
        origin: &Origin,
        at: &str,
    ) -> Option<Server> {
        let Some(svc) = &backend.service else {
            let what = if backend.resource.is_some() {
                "a resource backend"
            } else {
                "no service"
            };
            self.finding(
                origin,
                format!("backend of {at}"),
                format!("{what}: not carried over"),
            );
            return None;
        };
        let manifest = self.manifests.service(ns, &svc.name);
        let headless = manifest.is_some_and(manifest::Service::headless);
        let spec_port = match (&svc.port.number, &svc.port.name, manifest) {
            (Some(n), _, m) => m
                .and_then(|m| m.spec.ports.iter().find(|p| p.port == *n))
                .cloned()
                .map(Ok)
                .unwrap_or(Err(*n)),
            (None, Some(name), Some(m)) => match m
                .spec
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
            {
                Some(p) => Ok(p.clone()),
                None => {
                    self.finding(
                        origin,
                        format!("backend {}:{name}", svc.name),
                        format!(
                            "Service {ns}/{} has no port named {name:?}; not carried over",
                            svc.name
                        ),
                    );
                    return None;
                }
            },
            (None, Some(name), None) => {
                self.finding(
                    origin,
                    format!("backend {}:{name}", svc.name),
                    format!(
                        "a named port needs the Service manifest ({ns}/{}) among the files; \
                         not carried over",
                        svc.name
                    ),
                );
                return None;
            }
            (None, None, _) => {
                self.finding(
                    origin,
                    format!("backend {}", svc.name),
                    "no port; not carried over",
                );
                return None;
            }
        };
        let port = match spec_port {
            Err(n) => n,
            Ok(p) if !headless => p.port,
            // A headless name resolves to the pods: their port is the target port.
            Ok(p) => match &p.target_port {
                None => p.port,
                Some(serde_norway::Value::Number(n)) => {
                    match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                        Some(n) => n,
                        None => p.port,
                    }
                }
                Some(other) => {
                    let shown = serde_norway::to_string(other).unwrap_or_default();
                    self.finding(
                        origin,
                        format!("backend {}", svc.name),
                        format!(
                            "headless Service {ns}/{} names its targetPort ({}): write the \
                             container port number in the manifest; not carried over",
                            svc.name,
                            shown.trim()
                        ),
                    );
                    return None;
                }
            },
        };
        Some(Server {
            namespace: ns.to_string(),
            service: svc.name.clone(),
            port,
            headless,
        })
    }
}

/// The non-canary ingress-nginx annotations of a canary Ingress (which ingress-nginx ignores).
fn canary_ignored(map: &BTreeMap<String, String>) -> Vec<String> {
    map.keys()
        .filter(|k| {
            k.strip_prefix(NGINX)
                .is_some_and(|n| !n.starts_with("canary"))
        })
        .cloned()
        .collect()
}

/// A rule's host, `*` for none.
fn rule_host(rule: &manifest::IngressRule) -> String {
    match rule.host.as_deref().map(str::trim) {
        None | Some("") => "*".into(),
        Some(h) => h.to_ascii_lowercase(),
    }
}

/// Whether `host` is covered by a TLS host (exact, or a wildcard one label deep).
fn tls_covers(tls: &str, host: &str) -> bool {
    if tls == host {
        return true;
    }
    match (tls.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((_, rest))) => rest == suffix,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, ty: &str, regex: bool, rewrite: Option<&str>) -> (String, bool) {
        match route_path(path, ty, regex, rewrite) {
            PathOutcome::Route {
                path, strip_prefix, ..
            } => (path, strip_prefix),
            PathOutcome::Skip(why) => panic!("skipped: {why}"),
        }
    }

    #[test]
    fn paths_as_ingress_nginx_matches_them() {
        // (path, pathType, regex, rewrite-target, route path, strip_prefix)
        type Case<'a> = (&'a str, &'a str, bool, Option<&'a str>, &'a str, bool);
        let cases: &[Case<'_>] = &[
            ("/v1/auth", "Prefix", false, None, "/v1/auth", false),
            ("/v1/", "Prefix", false, None, "/v1", false),
            ("/", "Prefix", false, None, "/", false),
            ("/x", "Exact", false, None, "/x", false),
            (
                "/api(/|$)(.*)",
                "ImplementationSpecific",
                true,
                Some("/$2"),
                "/api",
                true,
            ),
            (
                "/api/(.*)",
                "ImplementationSpecific",
                true,
                Some("/$1"),
                "/api",
                true,
            ),
            (
                "/(.*)",
                "ImplementationSpecific",
                true,
                Some("/$1"),
                "/",
                false,
            ),
            ("/api(/|$)(.*)", "Prefix", true, Some("/"), "/api", false),
        ];
        for (path, ty, regex, rewrite, want, strip) in cases {
            assert_eq!(
                route(path, ty, *regex, *rewrite),
                (want.to_string(), *strip),
                "{path} {ty}"
            );
        }
        assert!(matches!(
            route_path("/v[0-9]+/x", "ImplementationSpecific", true, None),
            PathOutcome::Skip(_)
        ));
    }

    #[test]
    fn wildcard_tls_hosts_cover_one_label() {
        assert!(tls_covers("*.example.com", "api.example.com"));
        assert!(!tls_covers("*.example.com", "a.b.example.com"));
        assert!(tls_covers("api.example.com", "api.example.com"));
    }
}
