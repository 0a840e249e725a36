//! Reads the TOML config and turns it into a validated model, reporting every error with file:line:col.
//!
//! `check`, `serve` and reload all go through [`load`], so they report the same errors.

pub mod access;
mod acme;
mod admin;
pub mod affinity;
pub mod certs;
mod cluster;
pub mod compression;
pub mod cors;
pub mod error_pages;
pub mod headers;
mod limits;
mod listeners;
pub mod log_format;
mod raw;
pub mod redirect;
mod resolve;
pub mod retry;
pub mod rollout;
mod routes;
mod serialize;
mod server;
mod services;
pub mod static_site;
mod tls_names;
pub mod tls_policy;
mod tracing;
pub mod transport;
mod upstream_conn;
pub mod values;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml::Spanned;

pub use acme::{AcmeCertificate, AcmeConfig, ChallengeKind, Eab};
pub use admin::{AdminConfig, AdminTls, DEFAULT_ADMIN_ADDRESS};
pub use cluster::ClusterConfig;
pub use error_pages::{ErrorPages, PageBody, PageKind};
pub use limits::{HeadLimits, LimitsConfig, DEFAULT_MAX_KEYS};
pub use listeners::{CertificateConfig, ListenerConfig};
use raw::RawConfig;
pub use routes::{HostPattern, RouteConfig, RouteOptions};
pub use server::{AccessLogTarget, ProcessLogFormat, ServerSettings};
pub use services::{
    Balance, HealthCheck, PassivePolicy, PoolConfig, ServerAddress, ServerConfig, ServiceConfig,
};
pub use tls_policy::{TlsPolicy, TlsVersion};
pub use tracing::TracingConfig;
pub use transport::{Protocol, TlsClient, Transport};
pub use upstream_conn::UpstreamConn;
pub use values::{Share, Steps, ValueError, Weight, MAX_WEIGHT};

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
/// Serializes as `GET /v1/config` shows it: every setting, secrets as `"<redacted>"`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    #[serde(serialize_with = "serialize::path")]
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
    /// `[tls]`: what the TLS listeners offer (versions, suites, groups, resumption, OCSP).
    pub tls: TlsPolicy,
    /// `[tracing]`: W3C trace context and the optional OTLP export of request spans.
    pub tracing: TracingConfig,
    /// `[cluster]`: the fleet this node shares runtime state with, if any.
    pub cluster: Option<ClusterConfig>,
}

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
    /// `scope = "cluster"` zones and where they say so, checked against `[cluster] redis`.
    cluster_zones: Vec<(String, std::ops::Range<usize>)>,
    /// Host names of addresses, resolved together before validation.
    resolved: HashMap<String, resolve::Resolved>,
    /// Whether host names are looked up at all.
    lookups: bool,
    /// `[server] merge_slashes`, which decides what a normal path is.
    merge_slashes: bool,
    /// The system's root certificates, read at most once per load (pools with TLS).
    system_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
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
            cluster_zones: Vec::new(),
            resolved: HashMap::new(),
            lookups: true,
            merge_slashes: true,
            system_roots: None,
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
        // Every host name of a bind address at once, concurrently, before anything asks for
        // one. Server names are not looked up here: the resolver service keeps them fresh.
        let listeners = raw.listeners.iter().map(|l| l.get_ref().address.get_ref());
        let admin = raw
            .admin
            .iter()
            .filter_map(|a| a.get_ref().address.as_ref().map(|t| t.get_ref()));
        if self.lookups {
            self.resolved = resolve::resolve_all(listeners.chain(admin).map(|t| -> &str { t }));
        }
        let server = self.server(&raw);
        self.merge_slashes = server.merge_slashes;
        let listeners = self.listeners(&raw);
        let certificates = self.certificates(&raw);
        let tls = self.tls_policy(raw.tls.as_ref());
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
        let tracing = self.tracing(&raw);
        let cluster = self.cluster(&raw);
        let alpn = acme.as_ref().is_some_and(|a| {
            a.certificates
                .iter()
                .any(|c| c.challenge == ChallengeKind::TlsAlpn01)
        });
        if cluster.is_some() && alpn {
            // The CA may dial any node; only HTTP-01 tokens and DNS-01 records are shared.
            let span = self.header_span("tls-alpn-01");
            self.error(
                span,
                "tls-alpn-01 is not available with [cluster]: the CA may reach any node, and only HTTP-01 tokens are shared through etcd; use http-01 or dns-01",
            );
        }
        if cluster.as_ref().is_none_or(|c| c.redis.is_none()) {
            for (name, span) in std::mem::take(&mut self.cluster_zones) {
                self.error(
                    span,
                    format!("zone \"{name}\" has scope = \"cluster\", which needs `redis` in [cluster] (its counters live there)"),
                );
            }
        }
        Config {
            cluster,
            tracing,
            tls,
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
}

#[cfg(test)]
mod tests;
