//! Proof by difference: the same corpus of requests sent to real nginx and to Switchyard, in front of the same named echo backends, and every difference in what comes back reported, tolerated only by a documented name.
//!
//! A config under test is three files in one directory (`tests/fixtures/nginx/`):
//!
//! - `NAME.conf`: a whole nginx.conf (`events {}`, `http {}`) as a user writes one, without
//!   `daemon`, `master_process`, `pid` and `error_log` (the harness sets those). Test-machine
//!   values are placeholders: `{http}` and `{https}` (the ports nginx listens on), each backend
//!   name of the corpus (`{api_1}`: that echo backend's `127.0.0.1:PORT`), each dead server
//!   (`{dead}`: an address nothing listens on), `{certs}` (the repository's test certificates),
//!   `{fixtures}` (this directory), `{repo}` and `{dir}` (nginx's temp dir; write the access log
//!   to `{dir}/access.log` for cases that compare logging).
//! - `NAME.corpus.toml`: the backends to start, the directives the config is declared to use,
//!   the headers every case compares, and the cases ([`Corpus`], [`Case`]).
//! - the Switchyard config to compare with, given to [`Differential::run`] as text: the same
//!   placeholders (with Switchyard's own ports), or concrete addresses (the output of
//!   `switchyard import nginx` run on the filled nginx.conf: listener addresses on nginx's ports
//!   are moved to Switchyard's). Its `[server]` paths are set for the test machine.
//!
//! Each case goes to nginx, then to Switchyard; compared are the status, the redirect `Location`
//! (ports named), which backend answered (`x-backend`), the path and the listed request headers
//! the backend saw, the listed response headers, the HTTP version, a websocket's echo, a burst's
//! refusals (count within a tolerance, and status) and, where asked, whether the request was
//! logged. A difference fails the run unless the case names a [`TOLERATED`] entry covering that
//! aspect; each such name is explained in `docs/migrating-from-nginx.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde::Deserialize;

use crate::http::client_builder;
use crate::nginx::Nginx;
use crate::ports::{closed_addr, port};
use crate::proxy::Proxy;
use crate::template::{fill, CERTS, REPO};
use crate::wait::wait_until;
use crate::{Backend, Bin};

/// A difference that is deliberate: Switchyard answers otherwise on purpose. A case tolerates
/// it by `name`, for the `aspect` it covers (a name may have several entries, one per aspect).
#[derive(Debug, Clone, Copy)]
pub struct Tolerated {
    /// The name cases write in `tolerate`; a line of `## Deliberate differences` in
    /// docs/migrating-from-nginx.md.
    pub name: &'static str,
    /// What it covers: an aspect as [`Difference::aspect`] writes it, or a prefix of aspects
    /// followed by `*` (`"header *"`: every response header).
    pub aspect: &'static str,
    pub reason: &'static str,
}

/// Every deliberate difference; nothing else is tolerated.
pub const TOLERATED: &[Tolerated] = &[
    Tolerated {
        name: "expires-header",
        aspect: "header expires",
        reason: "nginx's `expires` also sends an `Expires` date; Switchyard sends only \
                 `Cache-Control: max-age`, which HTTP/1.1 caches prefer anyway",
    },
    Tolerated {
        name: "basic-auth-charset",
        aspect: "header www-authenticate",
        reason: "Switchyard's 401 challenge adds `charset=\"UTF-8\"` (RFC 7617) to nginx's \
                 `Basic realm=\"...\"`",
    },
    Tolerated {
        name: "normalised-upstream-path",
        aspect: "upstream path",
        reason: "nginx forwards the request URI as the client wrote it with `proxy_pass \
                 http://up;`; Switchyard forwards the normalised path that was routed and \
                 limited (`forward_original_path = true` restores nginx's behaviour)",
    },
    Tolerated {
        name: "headers-on-https-redirect",
        aspect: "header *",
        reason: "Switchyard's redirect to HTTPS carries the response headers of the route the \
                 request would take; nginx's port-80 server block that only returns 301 adds \
                 none",
    },
    Tolerated {
        name: "exact-location-is-a-prefix",
        aspect: "backend",
        reason: "a Switchyard route path is a prefix on whole segments: nginx's `location = /x` \
                 becomes a route for `/x`, which also takes `/x/more`, where nginx falls through \
                 to the next matching location",
    },
    Tolerated {
        name: "hsts-on-plain-http",
        aspect: "header strict-transport-security",
        reason: "ingress-nginx sends its HSTS header only over HTTPS; Switchyard's \
                 `response_headers` go on every answer, so a TLS host with `ssl-redirect: \
                 \"false\"` also sends it over plain HTTP, where browsers ignore it",
    },
    Tolerated {
        name: "cors-headers-by-request-kind",
        aspect: "header access-control-*",
        reason: "ingress-nginx sends every CORS header on every answer; Switchyard sends \
                 `-Allow-Methods`, `-Allow-Headers` and `-Max-Age` on preflights only and \
                 `-Expose-Headers` on actual answers only, where browsers read each",
    },
    Tolerated {
        name: "cors-preflight-refused",
        aspect: "status",
        reason: "a preflight from an origin the route does not allow is answered 403 by \
                 Switchyard; ingress-nginx passes it to the upstream",
    },
    Tolerated {
        name: "cors-preflight-refused",
        aspect: "backend",
        reason: "the refused preflight reaches no backend",
    },
    Tolerated {
        name: "cors-preflight-refused",
        aspect: "upstream *",
        reason: "the refused preflight reaches no backend",
    },
];

/// A config's request corpus: `NAME.corpus.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    /// The directives (nginx) or annotations (Ingress) the config is declared to use: each must
    /// be exercised by a case, and a case may exercise only these.
    pub directives: Vec<String>,
    /// Echo backends to start, by name (each answers with its name); `{NAME}` is its address.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Dead servers, by name; `{NAME}` is an address nothing listens on.
    #[serde(default)]
    pub dead: Vec<String>,
    /// Response headers every case compares (those the config adds).
    #[serde(default)]
    pub compare_headers: Vec<String>,
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// One request of a corpus, and what to compare of its answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default = "get")]
    pub method: String,
    /// `http` (the `{http}` listener) or `https` (`{https}`).
    #[serde(default = "https")]
    pub scheme: String,
    /// Sent as `Host` (HTTP/1.1) and SNI.
    pub host: String,
    /// The request target, query included.
    #[serde(default = "root")]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A body of this many bytes (with its `Content-Length`).
    #[serde(default)]
    pub body: Option<usize>,
    /// The directives this request exercises (from the corpus' `directives`).
    pub exercises: Vec<String>,
    /// Response headers compared besides the corpus' `compare_headers`.
    #[serde(default)]
    pub compare_headers: Vec<String>,
    /// Request headers the backend saw, compared.
    #[serde(default)]
    pub upstream_headers: Vec<String>,
    /// The backend is compared by name without its `_N` replica suffix (a balanced upstream).
    #[serde(default)]
    pub replica_any: bool,
    /// Names from [`TOLERATED`] whose aspect may differ on this case.
    #[serde(default)]
    pub tolerate: Vec<String>,
    /// Send the request this many times back to back on one connection: compares the number
    /// of refusals (within `tolerance`) and their status instead of one answer.
    #[serde(default)]
    pub burst: Option<usize>,
    /// Send the request this many times at once, each on its own connection: compares
    /// refusals like `burst`.
    #[serde(default)]
    pub concurrent: Option<usize>,
    /// How far the refusal counts of a burst may differ (default: 2, or a tenth of the
    /// burst when larger).
    #[serde(default)]
    pub tolerance: Option<usize>,
    /// A websocket upgrade: after the 101, this message is sent and its echo compared.
    #[serde(default)]
    pub websocket: Option<String>,
    /// Over HTTP/2 (ALPN on `https`): the answer's version is compared.
    #[serde(default)]
    pub http2: bool,
    /// The client offers TLS 1.2 at most.
    #[serde(default)]
    pub tls12: bool,
    /// Compare whether the request reached the access log (the path must be unique).
    #[serde(default)]
    pub logged: bool,
}

fn get() -> String {
    "GET".into()
}
fn https() -> String {
    "https".into()
}
fn root() -> String {
    "/".into()
}

impl Case {
    fn describe(&self) -> String {
        let mut s = format!(
            "{} {}://{}{}",
            self.method, self.scheme, self.host, self.path
        );
        for (k, v) in &self.headers {
            let _ = write!(s, " [{k}: {v}]");
        }
        if let Some(n) = self.body {
            let _ = write!(s, " (body {n} bytes)");
        }
        if let Some(n) = self.burst {
            let _ = write!(s, " x{n} back to back");
        }
        if let Some(n) = self.concurrent {
            let _ = write!(s, " x{n} at once");
        }
        if let Some(m) = &self.websocket {
            let _ = write!(s, " (websocket, message {m:?})");
        }
        if self.http2 {
            s.push_str(" (HTTP/2)");
        }
        if self.tls12 {
            s.push_str(" (TLS 1.2)");
        }
        s
    }
}

/// What one server answered to one case.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// 0 when no answer came (the error says why).
    pub status: u16,
    pub error: Option<String>,
    pub version: String,
    /// Lowercased names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The start of the body, for the report.
    pub body: String,
    /// The echo backend's JSON, when a backend answered.
    pub echo: Option<serde_json::Value>,
    pub websocket_echo: Option<String>,
    /// Statuses of a burst, in order.
    pub burst: Vec<u16>,
    pub logged: Option<bool>,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.burst.is_empty() {
            return write!(f, "statuses {:?}", self.burst);
        }
        write!(f, "{} {}", self.version, self.status)?;
        if let Some(e) = &self.error {
            write!(f, " (error: {e})")?;
        }
        for (k, v) in &self.headers {
            write!(f, "\n      {k}: {v}")?;
        }
        if !self.body.is_empty() {
            write!(f, "\n      body: {}", self.body)?;
        }
        if let Some(w) = &self.websocket_echo {
            write!(f, "\n      websocket echo: {w:?}")?;
        }
        if let Some(l) = self.logged {
            write!(f, "\n      logged: {l}")?;
        }
        Ok(())
    }
}

/// One aspect of one case on which the two servers disagree.
#[derive(Debug, Clone)]
pub struct Difference {
    pub case: String,
    pub request: String,
    /// `status`, `location`, `backend`, `upstream path`, `upstream header NAME`, `header NAME`,
    /// `version`, `websocket echo`, `refusals`, `refusal status`, `logged`.
    pub aspect: String,
    pub nginx: String,
    pub switchyard: String,
    /// The [`TOLERATED`] name that covers it, if the case named one.
    pub tolerated: Option<&'static str>,
    nginx_answer: String,
    switchyard_answer: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.tolerated {
            Some(name) => format!("tolerated ({name})"),
            None => "DIFFERENCE".to_string(),
        };
        write!(
            f,
            "{tag} in {:?}, {}: nginx {:?}, switchyard {:?}\n  request: {}\n  nginx answered:\n    {}\n  switchyard answered:\n    {}",
            self.case,
            self.aspect,
            self.nginx,
            self.switchyard,
            self.request,
            self.nginx_answer,
            self.switchyard_answer
        )
    }
}

/// The outcome of one run: every difference, and which cases exercise each directive.
#[derive(Debug)]
pub struct Report {
    pub config: String,
    pub differences: Vec<Difference>,
    /// Directive → the cases that exercise it.
    pub coverage: BTreeMap<String, Vec<String>>,
    /// What each burst came to on both sides, different or not.
    pub bursts: Vec<String>,
}

impl Report {
    /// The differences no tolerated name covers.
    pub fn untolerated(&self) -> Vec<&Difference> {
        self.differences
            .iter()
            .filter(|d| d.tolerated.is_none())
            .collect()
    }

    /// Directives no case exercises.
    pub fn unexercised(&self) -> Vec<&str> {
        self.coverage
            .iter()
            .filter(|(_, cases)| cases.is_empty())
            .map(|(d, _)| d.as_str())
            .collect()
    }

    /// The coverage table and every difference, as text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "== {}: which requests exercise each directive\n",
            self.config
        );
        for (directive, cases) in &self.coverage {
            let cases = if cases.is_empty() {
                "NONE".to_string()
            } else {
                cases.join("; ")
            };
            let _ = writeln!(s, "  {directive}: {cases}");
        }
        let _ = writeln!(s, "== {}: bursts", self.config);
        for b in &self.bursts {
            let _ = writeln!(s, "  {b}");
        }
        let _ = writeln!(
            s,
            "== {}: {} differences, {} not tolerated",
            self.config,
            self.differences.len(),
            self.untolerated().len()
        );
        for d in &self.differences {
            let _ = writeln!(s, "{d}");
        }
        s
    }

    /// Prints the report; panics on an unexercised directive or an untolerated difference,
    /// with every such difference in the message.
    pub fn assert_equivalent(&self) {
        println!("{}", self.text());
        assert!(
            self.unexercised().is_empty(),
            "{}: no request exercises {:?}",
            self.config,
            self.unexercised()
        );
        let untolerated = self.untolerated();
        let mut text = String::new();
        for d in &untolerated {
            let _ = writeln!(text, "{d}");
        }
        assert!(
            untolerated.is_empty(),
            "{}: nginx and Switchyard answer differently in {} ways:\n{text}",
            self.config,
            untolerated.len()
        );
    }
}

/// A config under test: its corpus, its nginx.conf, and the backends both servers proxy to
/// (started once, shared by every run).
pub struct Differential {
    name: String,
    dir: PathBuf,
    corpus: Corpus,
    nginx_conf: String,
    backends: BTreeMap<String, Backend>,
    dead: BTreeMap<String, String>,
}

impl Differential {
    /// Reads `dir/NAME.conf` and `dir/NAME.corpus.toml`, checks the corpus against the
    /// declared directives and [`TOLERATED`], and starts its backends.
    pub fn load(dir: &Path, name: &str) -> Differential {
        let read = |file: String| {
            let path = dir.join(&file);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        };
        let nginx_conf = read(format!("{name}.conf"));
        let corpus: Corpus = toml::from_str(&read(format!("{name}.corpus.toml")))
            .unwrap_or_else(|e| panic!("{name}.corpus.toml: {e}"));
        check_corpus(name, &corpus);
        let backends = corpus
            .backends
            .iter()
            .map(|b| {
                let backend =
                    Backend::spawn(b).unwrap_or_else(|e| panic!("start backend {b}: {e}"));
                (b.clone(), backend)
            })
            .collect();
        let dead = corpus
            .dead
            .iter()
            .map(|d| (d.clone(), closed_addr()))
            .collect();
        Differential {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            corpus,
            nginx_conf,
            backends,
            dead,
        }
    }

    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// The nginx.conf filled in for listeners on `http` and `https` (`{dir}` and `{certs}` are
    /// left for [`Nginx::start_config`]).
    pub fn nginx_conf(&self, http: u16, https: u16) -> String {
        let mut conf = self.nginx_conf.clone();
        for (name, value) in self.vars(http, https) {
            conf = conf.replace(&format!("{{{name}}}"), &value);
        }
        conf
    }

    /// Starts nginx on the config and Switchyard on `switchyard(filled nginx.conf)`, sends the
    /// corpus to both and compares.
    pub fn run(&self, bin: Bin, switchyard: impl FnOnce(&str) -> String) -> Report {
        let (nginx_http, nginx_https) = (port(), port());
        let conf = self.nginx_conf(nginx_http, nginx_https);
        let nginx = Nginx::start_config(&conf, &[nginx_http, nginx_https]);
        let nginx_filled =
            std::fs::read_to_string(nginx.dir().join("nginx.conf")).expect("read back nginx.conf");
        let (sy_http, sy_https) = (port(), port());
        let template = switchyard(&nginx_filled);
        let vars = self.vars(sy_http, sy_https);
        let refs: Vec<(&str, &dyn fmt::Display)> = vars
            .iter()
            .map(|(k, v)| (k.as_str(), v as &dyn fmt::Display))
            .collect();
        let config = for_test_machine(
            &fill(&template, &refs),
            [(nginx_http, sy_http), (nginx_https, sy_https)],
        );
        let proxy = Proxy::start(bin, &config);

        let nginx_side = Side {
            http: nginx_http,
            https: nginx_https,
            log: Log::Nginx(&nginx),
        };
        let switchyard_side = Side {
            http: sy_http,
            https: sy_https,
            log: Log::Switchyard(&proxy),
        };
        let mut differences = Vec::new();
        let mut bursts = Vec::new();
        for case in &self.corpus.cases {
            let a = nginx_side.send(case);
            let b = switchyard_side.send(case);
            if !a.burst.is_empty() {
                bursts.push(format!(
                    "{}: nginx {}, switchyard {}",
                    case.name,
                    refusal_summary(&a.burst),
                    refusal_summary(&b.burst)
                ));
            }
            differences.extend(self.compare(case, &nginx_side, &a, &switchyard_side, &b));
        }
        let mut coverage: BTreeMap<String, Vec<String>> = self
            .corpus
            .directives
            .iter()
            .map(|d| (d.clone(), Vec::new()))
            .collect();
        for case in &self.corpus.cases {
            for d in &case.exercises {
                coverage
                    .entry(d.clone())
                    .or_default()
                    .push(case.name.clone());
            }
        }
        Report {
            config: self.name.clone(),
            differences,
            coverage,
            bursts,
        }
    }

    /// The placeholders of both configs, with listeners on `http` and `https`.
    fn vars(&self, http: u16, https: u16) -> Vec<(String, String)> {
        let mut vars = vec![
            ("http".to_string(), http.to_string()),
            ("https".to_string(), https.to_string()),
            ("fixtures".to_string(), self.dir.display().to_string()),
            ("repo".to_string(), REPO.to_string()),
            ("certs".to_string(), CERTS.to_string()),
        ];
        vars.extend(
            self.backends
                .iter()
                .map(|(n, b)| (n.clone(), b.addr.to_string())),
        );
        vars.extend(self.dead.iter().map(|(n, a)| (n.clone(), a.clone())));
        vars
    }

    fn compare(
        &self,
        case: &Case,
        nginx_side: &Side<'_>,
        a: &Answer,
        sy_side: &Side<'_>,
        b: &Answer,
    ) -> Vec<Difference> {
        let mut out = Vec::new();
        let mut differ = |aspect: String, x: String, y: String| {
            if x == y {
                return;
            }
            let tolerated = case
                .tolerate
                .iter()
                .flat_map(|n| TOLERATED.iter().filter(move |t| t.name == n))
                .find(|t| covers(t.aspect, &aspect))
                .map(|t| t.name);
            out.push(Difference {
                case: case.name.clone(),
                request: case.describe(),
                aspect,
                nginx: x,
                switchyard: y,
                tolerated,
                nginx_answer: a.to_string(),
                switchyard_answer: b.to_string(),
            });
        };
        if case.burst.is_some() || case.concurrent.is_some() {
            let n = a.burst.len();
            let tolerance = case.tolerance.unwrap_or((n / 10).max(2));
            let refusals = |s: &[u16]| s.iter().filter(|c| is_refusal(**c)).count();
            let (ra, rb) = (refusals(&a.burst), refusals(&b.burst));
            if ra.abs_diff(rb) > tolerance {
                differ(
                    "refusals".into(),
                    format!("{ra} of {n}"),
                    format!("{rb} of {n} (tolerance {tolerance})"),
                );
            }
            let statuses = |s: &[u16]| -> BTreeSet<u16> {
                s.iter().copied().filter(|c| is_refusal(*c)).collect()
            };
            differ(
                "refusal status".into(),
                format!("{:?}", statuses(&a.burst)),
                format!("{:?}", statuses(&b.burst)),
            );
            return out;
        }
        differ("status".into(), a.status.to_string(), b.status.to_string());
        let location = |side: &Side<'_>, ans: &Answer| {
            side.name_ports(ans.headers.get("location").map_or("", String::as_str))
        };
        differ(
            "location".into(),
            location(nginx_side, a),
            location(sy_side, b),
        );
        let backend = |ans: &Answer| {
            let name = ans.headers.get("x-backend").cloned().unwrap_or_default();
            if case.replica_any {
                strip_replica(&name).to_string()
            } else {
                name
            }
        };
        differ("backend".into(), backend(a), backend(b));
        let echo = |ans: &Answer, side: &Side<'_>, key: &str| -> String {
            ans.echo
                .as_ref()
                .and_then(|e| e.pointer(key))
                .and_then(|v| v.as_str())
                .map(|v| side.name_ports(v))
                .unwrap_or_default()
        };
        differ(
            "upstream path".into(),
            echo(a, nginx_side, "/path"),
            echo(b, sy_side, "/path"),
        );
        for h in &case.upstream_headers {
            let key = format!("/headers/{}", h.to_ascii_lowercase());
            differ(
                format!("upstream header {}", h.to_ascii_lowercase()),
                echo(a, nginx_side, &key),
                echo(b, sy_side, &key),
            );
        }
        let names: BTreeSet<String> = self
            .corpus
            .compare_headers
            .iter()
            .chain(&case.compare_headers)
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for h in names {
            let value = |side: &Side<'_>, ans: &Answer| {
                let v = side.name_ports(ans.headers.get(&h).map_or("", String::as_str));
                if TOKEN_HEADERS.contains(&h.as_str()) {
                    v.to_ascii_lowercase()
                } else {
                    v
                }
            };
            differ(
                format!("header {h}"),
                value(nginx_side, a),
                value(sy_side, b),
            );
        }
        if case.http2 {
            differ("version".into(), a.version.clone(), b.version.clone());
        }
        if case.websocket.is_some() {
            differ(
                "websocket echo".into(),
                a.websocket_echo.clone().unwrap_or_default(),
                b.websocket_echo.clone().unwrap_or_default(),
            );
        }
        if case.logged {
            differ(
                "logged".into(),
                format!("{:?}", a.logged),
                format!("{:?}", b.logged),
            );
        }
        out
    }
}

/// Whether a status is a refusal: neither a success nor a redirect (0, no answer at all, is one).
fn is_refusal(status: u16) -> bool {
    !(200..400).contains(&status)
}

/// `"4 of 8 refused (429)"`.
fn refusal_summary(statuses: &[u16]) -> String {
    let refused: Vec<u16> = statuses
        .iter()
        .copied()
        .filter(|s| is_refusal(*s))
        .collect();
    let kinds: BTreeSet<u16> = refused.iter().copied().collect();
    format!("{} of {} refused {kinds:?}", refused.len(), statuses.len())
}

/// Whether a tolerance's `pattern` covers `aspect`.
fn covers(pattern: &str, aspect: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => aspect.starts_with(prefix),
        None => pattern == aspect,
    }
}

/// `api_2` → `api`: a replica's name without its number.
fn strip_replica(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => base,
        _ => name,
    }
}

/// Panics on a corpus that cannot prove anything: a case exercising an undeclared directive,
/// naming an unknown tolerance, or asking for two kinds of sending at once.
fn check_corpus(name: &str, corpus: &Corpus) {
    let declared: BTreeSet<&str> = corpus.directives.iter().map(String::as_str).collect();
    for case in &corpus.cases {
        for d in &case.exercises {
            assert!(
                declared.contains(d.as_str()),
                "{name}.corpus.toml: case {:?} exercises {d:?}, which `directives` does not declare",
                case.name
            );
        }
        assert!(
            !case.exercises.is_empty(),
            "{name}.corpus.toml: case {:?} exercises nothing",
            case.name
        );
        for t in &case.tolerate {
            assert!(
                TOLERATED.iter().any(|k| k.name == t),
                "{name}.corpus.toml: case {:?} tolerates {t:?}, which is not in TOLERATED",
                case.name
            );
        }
        let kinds = [
            case.burst.is_some(),
            case.concurrent.is_some(),
            case.websocket.is_some(),
        ];
        assert!(
            kinds.iter().filter(|k| **k).count() <= 1,
            "{name}.corpus.toml: case {:?} is at most one of burst, concurrent, websocket",
            case.name
        );
        assert!(
            ["http", "https"].contains(&case.scheme.as_str()),
            "{name}.corpus.toml: case {:?}: scheme is http or https",
            case.name
        );
    }
}

/// The Switchyard config with the test machine's `[server]` paths (in `{tmp}`), an `[admin]`
/// on a free port if it has one, and listeners written on nginx's ports moved to Switchyard's.
fn for_test_machine(config: &str, ports: [(u16, u16); 2]) -> String {
    let mut doc: toml::Table = toml::from_str(config)
        .unwrap_or_else(|e| panic!("the Switchyard config is not TOML: {e}\n{config}"));
    let server = doc
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[server] is a table");
    let test: toml::Table = toml::from_str(crate::template::SERVER).expect("SERVER is TOML");
    for (k, v) in test["server"].as_table().expect("[server]") {
        server.insert(k.clone(), v.clone());
    }
    server.remove("pid_file");
    server.remove("resolvers");
    if let Some(admin) = doc.get_mut("admin").and_then(toml::Value::as_table_mut) {
        admin.insert("address".into(), format!("127.0.0.1:{}", port()).into());
    }
    if let Some(listeners) = doc.get_mut("listeners").and_then(toml::Value::as_array_mut) {
        for l in listeners.iter_mut().filter_map(toml::Value::as_table_mut) {
            for (from, to) in ports {
                if l.get("address").and_then(toml::Value::as_str)
                    == Some(&format!("127.0.0.1:{from}"))
                {
                    l.insert("address".into(), format!("127.0.0.1:{to}").into());
                }
                if l.get("https_port").and_then(toml::Value::as_integer) == Some(i64::from(from)) {
                    l.insert("https_port".into(), i64::from(to).into());
                }
            }
        }
    }
    toml::to_string(&doc).expect("a TOML table serialises")
}

/// Where a side's access log is.
enum Log<'a> {
    Nginx(&'a Nginx),
    Switchyard(&'a Proxy),
}

/// One of the two servers: its ports and its log.
struct Side<'a> {
    http: u16,
    https: u16,
    log: Log<'a>,
}

/// Response headers whose values are case-insensitive tokens or header names, compared
/// lowercased.
const TOKEN_HEADERS: &[&str] = &[
    "vary",
    "connection",
    "upgrade",
    "content-encoding",
    "access-control-allow-headers",
    "access-control-expose-headers",
];
/// How long a side gets to write a request's access-log line before it counts as not logged.
const LOG_WAIT: Duration = Duration::from_secs(2);
/// The longest a request (or a websocket's echo) may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Body characters kept for the report.
const BODY_SHOWN: usize = 300;

impl Side<'_> {
    fn port(&self, scheme: &str) -> u16 {
        if scheme == "https" {
            self.https
        } else {
            self.http
        }
    }

    /// `text` with this side's ports written as `{http}` and `{https}`.
    fn name_ports(&self, text: &str) -> String {
        text.replace(&format!(":{}", self.https), ":{https}")
            .replace(&format!(":{}", self.http), ":{http}")
    }

    fn url(&self, case: &Case) -> String {
        format!(
            "{}://{}:{}{}",
            case.scheme,
            case.host,
            self.port(&case.scheme),
            case.path
        )
    }

    fn client(&self, case: &Case) -> reqwest::blocking::Client {
        let builder = client_builder().timeout(TIMEOUT);
        let builder = if case.http2 {
            builder
        } else {
            builder.http1_only()
        };
        let builder = if case.tls12 {
            builder.max_tls_version(reqwest::tls::Version::TLS_1_2)
        } else {
            builder
        };
        builder.build().expect("build client")
    }

    fn request(
        &self,
        client: &reqwest::blocking::Client,
        case: &Case,
    ) -> reqwest::blocking::RequestBuilder {
        let method = reqwest::Method::from_bytes(case.method.as_bytes())
            .unwrap_or_else(|e| panic!("case {:?}: method: {e}", case.name));
        let mut req = client.request(method, self.url(case));
        if !case.http2 {
            req = req.header("host", &case.host);
        }
        for (k, v) in &case.headers {
            req = req.header(k, v);
        }
        if let Some(n) = case.body {
            req = req.body(vec![b'x'; n]);
        }
        req
    }

    fn send(&self, case: &Case) -> Answer {
        if let Some(n) = case.burst {
            let client = self.client(case);
            let burst = (0..n)
                .map(|_| status_of(self.request(&client, case).send()))
                .collect();
            return Answer {
                burst,
                ..Answer::default()
            };
        }
        if let Some(n) = case.concurrent {
            let start = Arc::new(Barrier::new(n));
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let client = self.client(case);
                    let req = self.request(&client, case);
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        status_of(req.send())
                    })
                })
                .collect();
            let burst = threads.into_iter().map(|t| t.join().unwrap_or(0)).collect();
            return Answer {
                burst,
                ..Answer::default()
            };
        }
        let mut answer = match &case.websocket {
            Some(message) => self.websocket(case, message),
            None => match self.request(&self.client(case), case).send() {
                Ok(resp) => answer_of(resp),
                Err(e) => Answer {
                    error: Some(error_chain(&e)),
                    ..Answer::default()
                },
            },
        };
        if case.logged {
            answer.logged = Some(self.logged(&case.path));
        }
        answer
    }

    /// Whether the access log gets a line for `target` within [`LOG_WAIT`].
    fn logged(&self, target: &str) -> bool {
        match self.log {
            Log::Nginx(nginx) => {
                let needle = format!(" {target} HTTP/");
                wait_until(LOG_WAIT, || {
                    nginx.access_log().iter().any(|l| l.contains(&needle))
                })
            }
            // JSON lines (the default format) or text (a format like nginx's).
            Log::Switchyard(proxy) => {
                let text = format!(" {target} HTTP/");
                let json = serde_json::json!(target).to_string();
                let json = format!("\"path\":{json}");
                wait_until(LOG_WAIT, || {
                    std::fs::read_to_string(proxy.access_log_path())
                        .unwrap_or_default()
                        .lines()
                        .any(|l| l.contains(&text) || l.contains(&json))
                })
            }
        }
    }

    /// A websocket upgrade over a raw connection (TLS for `https`): the 101's head, then
    /// `message` and whatever comes back of its length.
    fn websocket(&self, case: &Case, message: &str) -> Answer {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port(&case.scheme)));
        let tcp = match TcpStream::connect(addr) {
            Ok(tcp) => tcp,
            Err(e) => {
                return Answer {
                    error: Some(format!("connect: {e}")),
                    ..Answer::default()
                }
            }
        };
        tcp.set_read_timeout(Some(TIMEOUT))
            .expect("set_read_timeout");
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            case.method, case.path, case.host
        );
        for (k, v) in &case.headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.push_str("\r\n");
        let result = if case.scheme == "https" {
            let mut tls = tls_stream(tcp, &case.host);
            upgrade(&mut tls, &head, message)
        } else {
            let mut tcp = tcp;
            upgrade(&mut tcp, &head, message)
        };
        result.unwrap_or_else(|e| Answer {
            error: Some(e),
            ..Answer::default()
        })
    }
}

/// A TLS client stream to `host` trusting the test CA, HTTP/1.1 only.
fn tls_stream(
    tcp: TcpStream,
    host: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(format!("{CERTS}/test-ca.crt")).expect("read certs/test-ca.crt");
    let ca = rustls::pki_types::CertificateDer::from(pem_body(&pem));
    roots.add(ca).expect("add the test CA");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("a DNS name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    rustls::StreamOwned::new(conn, tcp)
}

/// The DER bytes of the first PEM block of `pem`.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem)
        .expect("a PEM certificate")
        .to_vec()
}

/// Writes the upgrade request, reads the answer's head; on 101 sends `message` and reads its
/// echo.
fn upgrade(stream: &mut (impl Read + Write), head: &str, message: &str) -> Result<Answer, String> {
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(_) => {
                return Err(format!(
                    "EOF in the head: {:?}",
                    String::from_utf8_lossy(&raw)
                ))
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut answer = Answer {
        status: status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        version: status_line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string(),
        ..Answer::default()
    };
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            join_header(
                &mut answer.headers,
                &k.trim().to_ascii_lowercase(),
                v.trim(),
            );
        }
    }
    if answer.status == 101 {
        stream
            .write_all(message.as_bytes())
            .map_err(|e| format!("write message: {e}"))?;
        stream.flush().map_err(|e| format!("flush: {e}"))?;
        let mut echo = vec![0u8; message.len()];
        answer.websocket_echo = Some(match stream.read_exact(&mut echo) {
            Ok(()) => String::from_utf8_lossy(&echo).to_string(),
            Err(e) => format!("(no echo: {e})"),
        });
    }
    Ok(answer)
}

fn join_header(headers: &mut BTreeMap<String, String>, name: &str, value: &str) {
    headers
        .entry(name.to_string())
        .and_modify(|v| {
            v.push_str(", ");
            v.push_str(value);
        })
        .or_insert_with(|| value.to_string());
}

fn answer_of(resp: reqwest::blocking::Response) -> Answer {
    let status = resp.status().as_u16();
    let version = format!("{:?}", resp.version());
    let mut headers = BTreeMap::new();
    for (k, v) in resp.headers() {
        join_header(
            &mut headers,
            k.as_str(),
            &String::from_utf8_lossy(v.as_bytes()),
        );
    }
    let (body, error) = match resp.bytes() {
        Ok(b) => (b.to_vec(), None),
        Err(e) => (Vec::new(), Some(format!("body: {}", error_chain(&e)))),
    };
    let echo = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .filter(|v| v.get("backend").is_some());
    let body = match std::str::from_utf8(&body) {
        Ok(text) => text.chars().take(BODY_SHOWN).collect(),
        Err(_) => format!("({} bytes, not text)", body.len()),
    };
    Answer {
        status,
        error,
        version,
        headers,
        body,
        echo,
        ..Answer::default()
    }
}

fn status_of(result: reqwest::Result<reqwest::blocking::Response>) -> u16 {
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Read the body so the connection is reused for the next request of the burst.
            let _ = resp.bytes();
            status
        }
        Err(_) => 0,
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}

/// Every name of [`TOLERATED`] that the `## Deliberate differences` section of `doc` does not
/// mention (as `` `name` ``): a tolerated difference must be documented.
pub fn undocumented_tolerances(doc: &str) -> Vec<&'static str> {
    let section = doc
        .split("\n## Deliberate differences")
        .nth(1)
        .map(|rest| rest.split("\n## ").next().unwrap_or_default())
        .unwrap_or_default();
    TOLERATED
        .iter()
        .map(|t| t.name)
        .filter(|n| !section.contains(&format!("`{n}`")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_lose_their_number() {
        assert_eq!(strip_replica("api_2"), "api");
        assert_eq!(strip_replica("api"), "api");
        assert_eq!(strip_replica("blue_green"), "blue_green");
    }

    fn corpus(text: &str) -> Corpus {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    #[should_panic(expected = "which `directives` does not declare")]
    fn a_case_may_exercise_only_declared_directives() {
        let c = corpus(
            "directives = [\"return 301\"]\n[[case]]\nname = \"a\"\nhost = \"h\"\nexercises = [\"retrun 301\"]\n",
        );
        check_corpus("test", &c);
    }

    #[test]
    #[should_panic(expected = "which is not in TOLERATED")]
    fn a_case_may_tolerate_only_known_names() {
        let c = corpus(
            "directives = [\"x\"]\n[[case]]\nname = \"a\"\nhost = \"h\"\nexercises = [\"x\"]\ntolerate = [\"anything\"]\n",
        );
        check_corpus("test", &c);
    }

    #[test]
    #[should_panic(expected = "no request exercises [\"gzip_types\"]")]
    fn an_unexercised_directive_fails_the_report() {
        let report = Report {
            config: "test".into(),
            differences: Vec::new(),
            coverage: BTreeMap::from([
                ("return 301".to_string(), vec!["a".to_string()]),
                ("gzip_types".to_string(), Vec::new()),
            ]),
            bursts: Vec::new(),
        };
        report.assert_equivalent();
    }

    #[test]
    fn tolerances_cover_an_aspect_or_a_prefix() {
        assert!(covers("header *", "header x-frame-options"));
        assert!(!covers("header *", "status"));
        assert!(covers("upstream path", "upstream path"));
        assert!(!covers("upstream path", "upstream path x"));
    }

    #[test]
    fn tolerances_are_found_only_in_their_section() {
        let doc = "# M\n## Deliberate differences\n- `expires-header`: why\n## Other\n`basic-auth-charset`\n";
        let missing = undocumented_tolerances(doc);
        assert!(!missing.contains(&"expires-header"));
        assert!(missing.contains(&"basic-auth-charset"));
    }
}
