//! Reads the TOML config and turns it into a validated model, reporting every error with file:line:col.
//!
//! `check`, `serve` and reload all go through [`load`], so they report the same errors.

mod acme;
pub mod certs;
mod limits;
mod raw;
mod resolve;
pub mod rollout;
pub mod values;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use rustls::sign::CertifiedKey;
use toml::Spanned;

pub use acme::{AcmeCertificate, AcmeConfig, ChallengeKind, Eab};
pub use limits::{HeadLimits, LimitsConfig, DEFAULT_MAX_KEYS};
pub use raw::Balance;
use raw::{RawConfig, RawDefaults, RawRoute};

/// One problem found in a config file, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.reason
        )
    }
}

/// Every problem found in one config file (never empty).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The validated configuration: everything here has been checked and can be compiled without errors.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub listeners: Vec<ListenerConfig>,
    pub certificates: Vec<CertificateConfig>,
    pub routes: Vec<RouteConfig>,
    pub services: Vec<ServiceConfig>,
    /// The admin API, when `[admin]` is present.
    pub admin: Option<AdminConfig>,
    pub limits: LimitsConfig,
    /// `[defaults]`: the route options every route starts from; its header and keep-alive
    /// timeouts also govern every connection's first request, read before any route is known.
    pub defaults: RouteOptions,
    /// Certificates obtained over ACME, when `[acme]` is present.
    pub acme: Option<AcmeConfig>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Bearer token; from `token`, else `token_file`, else $SWITCHYARD_TOKEN.
    pub token: Option<String>,
    /// Whether `GET /metrics` needs the token too (default: scrapable without it).
    pub metrics_require_token: bool,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("metrics_require_token", &self.metrics_require_token)
            .finish()
    }
}

/// The default admin API address, when `[admin]` gives none.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9900";

/// Active health checks: every server of every pool of the service is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    /// The status that counts as healthy; any 2xx or 3xx when absent.
    pub expect_status: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive checks on the request path, like nginx's max_fails/fail_timeout: `max_fails` connect
/// errors or timeouts in a row eject a server for `fail_timeout`. `max_fails = 0` turns them off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassivePolicy {
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

impl Default for PassivePolicy {
    fn default() -> Self {
        PassivePolicy {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    /// How long in-flight requests get after SIGTERM or SIGQUIT; the process exits once none remain.
    pub drain_timeout: Duration,
    pub access_log: AccessLogTarget,
    pub upgrade_socket: String,
    pub pid_file: Option<String>,
    /// Where runtime state (weight overrides) is persisted.
    pub state_dir: PathBuf,
    /// Whether requests are counted and timed for Prometheus (default true). Off only to measure
    /// what the recording costs: scrape-time gauges and connection counts are kept either way.
    pub metrics: bool,
    /// `//` in request paths counts as `/` (nginx's `merge_slashes`, default on).
    pub merge_slashes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub tls: bool,
    pub h2: bool,
    pub redirect_https: bool,
    pub https_port: u16,
}

#[derive(Clone)]
pub struct CertificateConfig {
    pub cert_path: PathBuf,
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    pub fallback: bool,
}

impl fmt::Debug for CertificateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateConfig")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .field("fallback", &self.fallback)
            .finish()
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

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub path: String,
    pub strip_prefix: bool,
    pub service: String,
    pub options: RouteOptions,
}

#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub max_body_size: u64,
    pub redirect_https: bool,
    pub compression: bool,
    pub websocket: bool,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Names of the rate-limit zones the route's requests must all pass.
    pub limits: Vec<String>,
    /// The whole request head must arrive within this (for a connection's first request from
    /// accept, under `[defaults]`; for the next request on the connection, under the route's).
    pub client_header_timeout: Duration,
    /// The longest wait between two reads of a request body.
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request; 0: no keep-alive.
    pub keepalive_timeout: Duration,
    /// Send the path upstream as the client wrote it rather than normalised.
    pub forward_original_path: bool,
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
            websocket: true,
            response_headers: Vec::new(),
            limits: Vec::new(),
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            forward_original_path: false,
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

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub balance: Balance,
    pub health: Option<HealthCheck>,
    pub passive: PassivePolicy,
    pub pools: Vec<PoolConfig>,
    /// Defaults of this service's rollouts, and its pools' live window.
    pub rollout: rollout::RolloutPolicy,
    /// Keep each client on one pool (by hash) while weights move.
    pub sticky: Option<rollout::StickyKey>,
    /// A header/cookie with which testers pick a pool.
    pub pool_override: Option<rollout::PoolOverride>,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub weight: u32,
    pub servers: Vec<ServerConfig>,
    /// The pool's own active check; `None` uses the service's.
    pub health: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub address: SocketAddr,
    pub weight: u32,
}

/// Largest pool or server weight: keeps sums far from overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

impl Config {
    /// `config ok: 3 routes, 2 services, 3 pools`
    pub fn summary(&self) -> String {
        let pools: usize = self.services.iter().map(|s| s.pools.len()).sum();
        format!(
            "config ok: {} routes, {} services, {} pools, {} listeners, {} certificates",
            self.routes.len(),
            self.services.len(),
            pools,
            self.listeners.len(),
            self.certificates.len()
        )
    }
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = crate::fsutil::read_regular_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            reason: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse_with(text, path, true)
}

/// Like [`parse`], but a host name is never looked up (it is reported as not resolved): for
/// fuzzing, where a lookup per input would make the run crawl.
pub fn parse_without_lookups(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse_with(text, path, false)
}

fn parse_with(text: &str, path: &Path, lookups: bool) -> Result<Config, ConfigErrors> {
    let mut v = Validator::new(text, path);
    v.lookups = lookups;
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            v.error(span, e.message().to_string());
            return Err(ConfigErrors(v.errors));
        }
    };
    let config = v.validate(raw);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// Byte offsets to line:column, and the growing list of errors.
struct Validator {
    file: String,
    base_dir: PathBuf,
    line_starts: Vec<usize>,
    text: String,
    text_len: usize,
    /// Zone names of `[limits.zones]`, known before routes are read.
    zone_names: Vec<String>,
    /// Host names of addresses, resolved together before validation.
    resolved: HashMap<String, resolve::Resolved>,
    /// Whether host names are looked up at all.
    lookups: bool,
    /// `[server] merge_slashes`, which decides what a normal path is.
    merge_slashes: bool,
    errors: Vec<ConfigError>,
}

impl Validator {
    fn new(text: &str, path: &Path) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Validator {
            file: path.display().to_string(),
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            line_starts,
            text: text.to_string(),
            text_len: text.len(),
            zone_names: Vec::new(),
            resolved: HashMap::new(),
            lookups: true,
            merge_slashes: true,
            errors: Vec::new(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text_len);
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.line_starts[line - 1] + 1)
    }

    fn error(&mut self, span: Range<usize>, reason: impl Into<String>) {
        let (line, column) = self.line_col(span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            reason: reason.into(),
        });
    }

    /// Where a table header is written, for tables toml cannot span; the file start if absent.
    fn header_span(&self, header: &str) -> Range<usize> {
        let start = self.text.find(header).unwrap_or(0);
        start..start + header.len()
    }

    /// `p` when it is in the normal form requests are matched in (`crate::path`), else an error
    /// saying how to write it: a prefix like `/a//b` or `/%7Euser` would never match.
    fn normal_path(&mut self, p: &Spanned<values::Text>) -> Option<String> {
        let raw: &str = p.get_ref();
        match crate::path::normalize(raw, self.merge_slashes) {
            Ok(n) if n == raw => Some(n.into_owned()),
            Ok(n) => {
                self.error(
                    p.span(),
                    format!(
                        "path \"{raw}\" never matches: requests are matched by their normalised path; write \"{n}\""
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    p.span(),
                    format!("path \"{raw}\" is refused in requests: {e}"),
                );
                None
            }
        }
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn validate(&mut self, raw: RawConfig) -> Config {
        // Every host name at once, concurrently, before anything asks for one.
        let listeners = raw.listeners.iter().map(|l| l.get_ref().address.get_ref());
        let servers = raw
            .services
            .values()
            .flat_map(|s| s.pools.values())
            .flat_map(|p| &p.get_ref().servers)
            .map(|s| &s.get_ref().address);
        let admin = raw
            .admin
            .iter()
            .filter_map(|a| a.get_ref().address.as_ref().map(|t| t.get_ref()));
        if self.lookups {
            self.resolved =
                resolve::resolve_all(listeners.chain(servers).chain(admin).map(|t| -> &str { t }));
        }
        let server = self.server(&raw);
        self.merge_slashes = server.merge_slashes;
        let listeners = self.listeners(&raw);
        let certificates = self.certificates(&raw);
        let services = self.services(&raw);
        let limits = raw
            .limits
            .as_ref()
            .map(|l| self.limits(l))
            .unwrap_or_default();
        self.zone_names = limits.zones.iter().map(|z| z.name.clone()).collect();
        let defaults = self.route_options(&raw.defaults, &RouteOptions::default());
        let routes = self.routes(&raw, &defaults, &services);
        let admin = self.admin(&raw);
        let acme = raw
            .acme
            .as_ref()
            .map(|a| self.acme(a, &listeners, &certificates));
        Config {
            acme,
            admin,
            limits,
            defaults,
            source: PathBuf::from(&self.file),
            server,
            listeners,
            certificates,
            routes,
            services,
        }
    }

    fn server(&mut self, raw: &RawConfig) -> ServerSettings {
        let s = &raw.server;
        let threads = match &s.threads {
            Some(t) if *t.get_ref() == 0 => {
                self.error(t.span(), "threads must be at least 1");
                1
            }
            Some(t) => *t.get_ref(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let access_log = match s.access_log.as_deref() {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("stderr") => AccessLogTarget::Stderr,
            Some("off") => AccessLogTarget::Off,
            Some(path) => AccessLogTarget::File(self.resolve_path(path)),
        };
        ServerSettings {
            threads,
            drain_timeout: s.drain_timeout.map_or(Duration::from_secs(10), |d| d.0),
            access_log,
            upgrade_socket: s
                .upgrade_socket
                .as_ref()
                .map_or_else(|| "/tmp/switchyard_upgrade.sock".into(), |t| t.0.clone()),
            pid_file: s.pid_file.as_ref().map(|t| t.0.clone()),
            state_dir: s.state_dir.as_ref().map_or_else(
                || PathBuf::from("/var/lib/switchyard"),
                |t| self.resolve_path(t),
            ),
            metrics: s.metrics.unwrap_or(true),
            merge_slashes: s.merge_slashes.unwrap_or(true),
        }
    }

    fn listeners(&mut self, raw: &RawConfig) -> Vec<ListenerConfig> {
        if raw.listeners.is_empty() {
            self.error(0..0, "no [[listeners]]: at least one listener is needed");
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::new();
        for l in &raw.listeners {
            let span = l.span();
            let l = l.get_ref();
            let name = l.name.get_ref().0.clone();
            if let Some(first) = names.insert(name.clone(), span.start) {
                let (line, _) = self.line_col(first);
                self.error(
                    l.name.span(),
                    format!("duplicate listener name \"{name}\" (first defined at line {line})"),
                );
            }
            let Some(address) = self.socket_addr(&l.address) else {
                continue;
            };
            if let Some(first) = addrs.insert(address, span.start) {
                let (line, _) = self.line_col(first);
                self.error(
                    l.address.span(),
                    format!("duplicate listener address {address} (first defined at line {line})"),
                );
            }
            out.push(ListenerConfig {
                name,
                address,
                tls: l.tls,
                h2: l.h2.unwrap_or(true),
                redirect_https: l.redirect_https,
                https_port: l.https_port.unwrap_or(443),
            });
        }
        out
    }

    fn socket_addr(&mut self, addr: &Spanned<values::Text>) -> Option<SocketAddr> {
        let text: &str = addr.get_ref();
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Some(a);
        }
        let resolved = match self.resolved.get(text) {
            Some(r) => r.clone(),
            None if !self.lookups => resolve::Resolved::Failed,
            // Not gathered beforehand: looked up alone.
            None => resolve::resolve_all([text])
                .remove(text)
                .unwrap_or(resolve::Resolved::Failed),
        };
        match resolved {
            resolve::Resolved::Addr(a) => Some(a),
            resolve::Resolved::Failed => {
                self.error(
                    addr.span(),
                    format!("invalid socket address \"{text}\" (expected host:port)"),
                );
                None
            }
            resolve::Resolved::TimedOut => {
                self.error(
                    addr.span(),
                    format!(
                        "cannot resolve \"{text}\": no answer within {:?}",
                        resolve::DEADLINE
                    ),
                );
                None
            }
        }
    }

    fn certificates(&mut self, raw: &RawConfig) -> Vec<CertificateConfig> {
        let mut out = Vec::new();
        let mut fallback_seen = None;
        for c in &raw.certificates {
            let span = c.span();
            let c = c.get_ref();
            if c.fallback {
                if let Some(first) = fallback_seen {
                    let (line, _) = self.line_col(first);
                    self.error(
                        span.clone(),
                        format!("only one certificate may be the fallback (first at line {line})"),
                    );
                }
                fallback_seen = Some(span.start);
            }
            let cert_path = self.resolve_path(c.cert.get_ref());
            let key_path = self.resolve_path(c.key.get_ref());
            match certs::load_certified_key(&cert_path, &key_path) {
                Ok((key, san_names)) => {
                    let names = match &c.names {
                        Some(list) => list
                            .iter()
                            .map(|n| n.get_ref().to_ascii_lowercase())
                            .collect(),
                        None => san_names,
                    };
                    if names.is_empty() && !c.fallback {
                        self.error(
                            c.cert.span(),
                            format!(
                                "certificate \"{}\" names no DNS host; set `names` or `fallback = true`",
                                c.cert.get_ref()
                            ),
                        );
                    }
                    out.push(CertificateConfig {
                        cert_path,
                        names,
                        key,
                        fallback: c.fallback,
                    });
                }
                Err(e) => {
                    let span = match e {
                        certs::TlsError::ReadKey { .. }
                        | certs::TlsError::NoKey { .. }
                        | certs::TlsError::BadKey { .. } => c.key.span(),
                        _ => c.cert.span(),
                    };
                    self.error(span, e.to_string());
                }
            }
        }
        out
    }

    fn services(&mut self, raw: &RawConfig) -> Vec<ServiceConfig> {
        let mut out = Vec::new();
        for (name, svc) in &raw.services {
            let span = match svc.pools.values().next() {
                Some(first_pool) => first_pool.span(),
                None => self.header_span(&format!("[services.{name}]")),
            };
            if svc.pools.is_empty() {
                self.error(span.clone(), format!("service \"{name}\" has no pools"));
            }
            let mut pools = Vec::new();
            let mut sum: u64 = 0;
            for (pool_name, pool) in &svc.pools {
                let pspan = pool.span();
                let pool = pool.get_ref();
                let weight = match &pool.weight {
                    Some(w) if *w.get_ref() > MAX_WEIGHT => {
                        self.error(
                            w.span(),
                            format!("pool weight must be at most {MAX_WEIGHT}"),
                        );
                        0
                    }
                    Some(w) => *w.get_ref(),
                    None => 1,
                };
                sum += u64::from(weight);
                if pool.servers.is_empty() {
                    self.error(
                        pspan.clone(),
                        format!("pool \"{pool_name}\" of service \"{name}\" has no servers"),
                    );
                }
                let mut servers = Vec::new();
                for s in &pool.servers {
                    let sspan = s.span();
                    let entry = s.get_ref();
                    if entry.weight == 0 || entry.weight > MAX_WEIGHT {
                        self.error(
                            sspan.clone(),
                            format!("server weight must be between 1 and {MAX_WEIGHT}"),
                        );
                        continue;
                    }
                    let spanned = Spanned::new(sspan, entry.address.clone());
                    if let Some(address) = self.socket_addr(&spanned) {
                        if servers.iter().any(|s: &ServerConfig| s.address == address) {
                            self.error(
                                spanned.span(),
                                format!("server {address} is listed twice in pool \"{pool_name}\""),
                            );
                        }
                        servers.push(ServerConfig {
                            address,
                            weight: entry.weight,
                        });
                    }
                }
                let health = pool.health.as_ref().map(|h| self.health(h));
                pools.push(PoolConfig {
                    name: pool_name.clone(),
                    weight,
                    servers,
                    health,
                });
            }
            if !svc.pools.is_empty() && sum == 0 {
                self.error(
                    span,
                    format!(
                        "weights of service \"{name}\" sum to 0; at least one pool needs a weight above 0"
                    ),
                );
            }
            let health = svc.health.as_ref().map(|h| self.health(h));
            let defaults = PassivePolicy::default();
            let passive = svc
                .passive
                .as_ref()
                .map_or(defaults.clone(), |p| PassivePolicy {
                    max_fails: p.max_fails.unwrap_or(defaults.max_fails),
                    fail_timeout: p.fail_timeout.map_or(defaults.fail_timeout, |d| d.0),
                });
            let rollout = self.rollout_policy(svc.rollout.as_ref());
            let sticky = svc.sticky.as_ref().and_then(|s| self.sticky(s));
            let pool_override = svc
                .pool_override
                .as_ref()
                .and_then(|o| self.pool_override(o));
            out.push(ServiceConfig {
                name: name.clone(),
                balance: svc.balance,
                health,
                passive,
                pools,
                rollout,
                sticky,
                pool_override,
            });
        }
        out
    }

    fn health(&mut self, raw: &Spanned<raw::RawHealth>) -> HealthCheck {
        let h = raw.get_ref();
        let path = match &h.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(
                    p.span(),
                    format!("health check path \"{}\" must start with /", p.get_ref()),
                );
                "/".to_string()
            }
            Some(p) => p.get_ref().0.clone(),
            None => "/health/ready".to_string(),
        };
        if let Some(s) = &h.expect_status {
            if !(100..=599).contains(s.get_ref()) {
                self.error(
                    s.span(),
                    format!("expect_status {} is not an HTTP status", s.get_ref()),
                );
            }
        }
        let interval = h.interval.map_or(Duration::from_secs(2), |d| d.0);
        let timeout = h.timeout.map_or(Duration::from_secs(1), |d| d.0);
        if interval.is_zero() || timeout.is_zero() {
            self.error(
                raw.span(),
                "health check interval and timeout must be above 0",
            );
        }
        let healthy_threshold = self.threshold(&h.healthy_threshold, 2);
        let unhealthy_threshold = self.threshold(&h.unhealthy_threshold, 3);
        HealthCheck {
            path,
            expect_status: h.expect_status.as_ref().map(|s| *s.get_ref()),
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    fn threshold(&mut self, t: &Option<Spanned<u32>>, default: u32) -> u32 {
        match t {
            Some(v) if *v.get_ref() == 0 => {
                self.error(v.span(), "thresholds must be at least 1");
                1
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    fn admin(&mut self, raw: &RawConfig) -> Option<AdminConfig> {
        let spanned = raw.admin.as_ref()?;
        let a = spanned.get_ref();
        let address = match &a.address {
            Some(addr) => self.socket_addr(addr)?,
            None => DEFAULT_ADMIN_ADDRESS.parse().ok()?,
        };
        let mut token = a.token.as_ref().map(|t| t.0.clone());
        if token.is_none() {
            if let Some(file) = &a.token_file {
                let path = self.resolve_path(file.get_ref());
                match crate::fsutil::read_regular_to_string(&path) {
                    Ok(t) => token = Some(t.trim().to_string()),
                    Err(e) => self.error(
                        file.span(),
                        format!("cannot read token file \"{}\": {e}", path.display()),
                    ),
                }
            }
        }
        if token.is_none() {
            token = std::env::var("SWITCHYARD_TOKEN").ok();
        }
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() && !address.ip().is_loopback() {
            let span = a.address.as_ref().map_or(spanned.span(), |s| s.span());
            self.error(
                span,
                format!(
                    "the admin API on non-loopback address {address} needs a token (token, token_file or SWITCHYARD_TOKEN)"
                ),
            );
        }
        Some(AdminConfig {
            address,
            token,
            metrics_require_token: a.metrics_require_token,
        })
    }

    fn routes(
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
            let service = match &r.service {
                None => {
                    self.error(span.clone(), "route has no `service`");
                    continue;
                }
                Some(s) if !services.iter().any(|svc| svc.name == s.get_ref().0) => {
                    self.error(
                        s.span(),
                        format!("route refers to unknown service \"{}\"", s.get_ref()),
                    );
                    continue;
                }
                Some(s) => s.get_ref().0.clone(),
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
                service,
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

    fn route_options(&mut self, raw: &RawDefaults, base: &RouteOptions) -> RouteOptions {
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
        if let Some(b) = raw.compression {
            o.compression = b;
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
            let span = headers.span();
            for (name, value) in headers.get_ref() {
                let parsed = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                );
                match parsed {
                    (Ok(n), Ok(v)) => {
                        o.response_headers.retain(|(existing, _)| existing != n);
                        o.response_headers.push((n, v));
                    }
                    (Err(_), _) => {
                        self.error(span.clone(), format!("invalid header name \"{name}\""))
                    }
                    (_, Err(_)) => {
                        self.error(span.clone(), format!("invalid value for header \"{name}\""))
                    }
                }
            }
        }
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
        compression: r.compression,
        websocket: r.websocket,
        response_headers: r.response_headers.clone(),
        limits: r.limits.clone(),
        client_header_timeout: r.client_header_timeout.clone(),
        client_body_timeout: r.client_body_timeout.clone(),
        keepalive_timeout: r.keepalive_timeout.clone(),
        forward_original_path: r.forward_original_path,
    }
}

#[cfg(test)]
mod tests;
