//! The `[server]` table: process-wide settings (threads, drain, logs, state directory).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::log_format::LogFormat;
use super::raw::RawConfig;
use super::values::{self, Text};
use super::{serialize, Validator};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<Spanned<usize>>,
    pub work_stealing: Option<bool>,
    pub reuseport: Option<bool>,
    pub preserve_header_case: Option<bool>,
    pub drain_timeout: Option<values::Duration>,
    pub access_log: Option<Text>,
    /// `"json"`, `"combined"` or a template of nginx variables (`log_format.rs`).
    pub access_log_format: Option<Spanned<Text>>,
    /// The process log's format: `"text"` or `"json"`.
    pub log_format: Option<Spanned<Text>>,
    pub upgrade_socket: Option<Text>,
    pub pid_file: Option<Text>,
    pub state_dir: Option<Text>,
    pub metrics: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub resolvers: Option<Vec<Spanned<Text>>>,
    pub resolve_min: Option<values::Duration>,
    pub resolve_max: Option<values::Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    pub threads: usize,
    /// Whether the proxy's worker threads share one work-stealing scheduler (`true`) or each run
    /// its own single-threaded one, a connection staying on the thread that took it (`false`,
    /// the default: less CPU per request, benches/RESULTS.md). Read at start.
    pub work_stealing: bool,
    /// With `work_stealing = false` and more than one thread: one listening socket per worker
    /// thread on every TCP address (`SO_REUSEPORT`, nginx's `listen ... reuseport`), the kernel
    /// spreading new connections over them and each thread serving what it accepts. Off: one
    /// socket per address, each connection handed to a thread at random. Read at start; a binary
    /// upgrade hands every socket over.
    pub reuseport: bool,
    /// Whether HTTP/1 header names keep the case the client (and the upstream) wrote them in.
    /// Off (the default, like HAProxy and Envoy): names go out in the titled form of the
    /// well-known ones (`Content-Type`) and lowercase otherwise, and each request and response
    /// keeps one header map instead of two. Applies to connections opened after a reload.
    pub preserve_header_case: bool,
    /// How long in-flight requests get after SIGTERM or SIGQUIT; the process exits once none remain.
    #[serde(serialize_with = "serialize::duration")]
    pub drain_timeout: Duration,
    pub access_log: AccessLogTarget,
    /// How each line is written (reloadable: read from the request's snapshot).
    pub access_log_format: LogFormat,
    /// The process log's format (stderr): text lines or one JSON object per line. Applies on reload.
    pub log_format: ProcessLogFormat,
    pub upgrade_socket: String,
    pub pid_file: Option<String>,
    /// Where runtime state (weight overrides) is persisted.
    #[serde(serialize_with = "serialize::path")]
    pub state_dir: PathBuf,
    /// Whether requests are counted and timed for Prometheus (default true). Off only to measure
    /// what the recording costs: scrape-time gauges and connection counts are kept either way.
    pub metrics: bool,
    /// `//` in request paths counts as `/` (nginx's `merge_slashes`, default on).
    pub merge_slashes: bool,
    /// DNS servers for server names (nginx's `resolver`); empty: `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// Server names are re-resolved at their record's TTL, clamped to these bounds; a failed
    /// lookup is retried after `resolve_min`, doubling up to `resolve_max`.
    #[serde(serialize_with = "serialize::duration")]
    pub resolve_min: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub resolve_max: Duration,
}

/// `[server] log_format`: how the process log (not the access log) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessLogFormat {
    /// `2026-11-29T20:50:00.123456Z  INFO switchyard::server: message key=value`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

/// `"off"`, `"stdout"`, `"stderr"` or the file's path, as the config writes it.
impl Serialize for AccessLogTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AccessLogTarget::Off => s.serialize_str("off"),
            AccessLogTarget::Stdout => s.serialize_str("stdout"),
            AccessLogTarget::Stderr => s.serialize_str("stderr"),
            AccessLogTarget::File(p) => serialize::path(p, s),
        }
    }
}

impl Validator {
    pub(super) fn server(&mut self, raw: &RawConfig) -> ServerSettings {
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
        let resolvers = s
            .resolvers
            .iter()
            .flatten()
            .filter_map(|r| {
                let text: &str = r.get_ref();
                let parsed = text
                    .parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
                if parsed.is_err() {
                    self.error(
                        r.span(),
                        format!("resolver \"{text}\" is not an IP address or IP:port"),
                    );
                }
                parsed.ok()
            })
            .collect();
        let resolve_min = s.resolve_min.map_or(Duration::from_secs(1), |d| d.0);
        let resolve_max = s.resolve_max.map_or(Duration::from_secs(60), |d| d.0);
        if resolve_min.is_zero() || resolve_min > resolve_max {
            let span = self.header_span("resolve_min");
            self.error(
                span,
                format!(
                    "resolve_min ({resolve_min:?}) must be above 0 and at most resolve_max ({resolve_max:?})"
                ),
            );
        }
        ServerSettings {
            resolvers,
            resolve_min,
            resolve_max,
            threads,
            work_stealing: s.work_stealing.unwrap_or(false),
            reuseport: s.reuseport.unwrap_or(true),
            preserve_header_case: s.preserve_header_case.unwrap_or(false),
            drain_timeout: s.drain_timeout.map_or(Duration::from_secs(10), |d| d.0),
            access_log,
            access_log_format: self.log_format(s.access_log_format.as_ref()),
            log_format: self.process_log_format(s.log_format.as_ref()),
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

    fn process_log_format(&mut self, raw: Option<&Spanned<Text>>) -> ProcessLogFormat {
        let Some(raw) = raw else {
            return ProcessLogFormat::default();
        };
        let text: &str = raw.get_ref();
        match text {
            "text" => ProcessLogFormat::Text,
            "json" => ProcessLogFormat::Json,
            other => {
                self.error(
                    raw.span(),
                    format!("log_format must be \"text\" or \"json\", not \"{other}\""),
                );
                ProcessLogFormat::default()
            }
        }
    }
}
