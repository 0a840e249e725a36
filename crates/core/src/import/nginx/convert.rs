//! The walk over nginx's directives and the Switchyard config it writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::parse::{Directive, Pos};
use super::values::{self, RegexLocation};
use crate::config::redirect::HTTPS_CODES;
use crate::import::toml_out::{self, inline, literal, string, strings, Block, Doc, Line};
use crate::import::{finish, Finding, ImportError, Outcome, Report, Severity};

/// Where a finding's comment is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Top,
    Defaults,
    Server(usize),
    Location(usize),
    Upstream(usize),
}

type At<T> = Option<(T, Pos)>;

#[derive(Debug, Clone)]
struct AddHeader {
    name: String,
    value: String,
    always: bool,
    pos: Pos,
}

#[derive(Debug, Clone)]
struct LimitReq {
    zone: String,
    burst: u32,
    nodelay: bool,
    pos: Pos,
}

/// The settings a level inherits from the one around it, as nginx inherits them.
#[derive(Debug, Clone, Default)]
struct Ctx {
    add_headers: Option<Vec<AddHeader>>,
    proxy_headers: Option<Vec<(String, String, Pos)>>,
    hide_headers: Option<Vec<(String, Pos)>>,
    limit_req: Option<Vec<LimitReq>>,
    limit_conn: Option<Vec<(String, u32, Pos)>>,
    access: Option<Vec<(String, Pos)>>,
    connect_timeout: At<String>,
    read_timeout: At<String>,
    send_timeout: At<String>,
    client_header_timeout: At<String>,
    client_body_timeout: At<String>,
    keepalive_timeout: At<String>,
    max_body: At<u64>,
    root: At<String>,
    index: At<String>,
    try_files: At<Vec<String>>,
    expires: At<String>,
    auth_basic: At<Option<String>>,
    auth_file: At<String>,
    access_log_off: At<bool>,
    gzip: At<bool>,
    gzip_types: At<Vec<String>>,
    gzip_min_length: At<u64>,
    gzip_level: At<u32>,
    req_status: Option<u16>,
    conn_status: Option<u16>,
    ssl_certs: Option<Vec<(String, Pos)>>,
    ssl_keys: Option<Vec<(String, Pos)>>,
    retry_on: At<Vec<String>>,
    retry_tries: At<u32>,
    retry_timeout: At<String>,
    http2: Option<bool>,
}

impl Ctx {
    /// The level's own array directives start a fresh list (nginx does not merge them).
    fn fresh_arrays(&mut self, own: &[Directive]) {
        let has = |n: &str| own.iter().any(|d| d.name == n);
        if has("add_header") {
            self.add_headers = Some(Vec::new());
        }
        if has("proxy_set_header") {
            self.proxy_headers = Some(Vec::new());
        }
        if has("proxy_hide_header") {
            self.hide_headers = Some(Vec::new());
        }
        if has("limit_req") {
            self.limit_req = Some(Vec::new());
        }
        if has("limit_conn") {
            self.limit_conn = Some(Vec::new());
        }
        if has("allow") || has("deny") {
            self.access = Some(Vec::new());
        }
        if has("ssl_certificate") {
            self.ssl_certs = Some(Vec::new());
        }
        if has("ssl_certificate_key") {
            self.ssl_keys = Some(Vec::new());
        }
    }
}

#[derive(Debug, Clone)]
struct Return {
    code: u16,
    url: Option<String>,
    pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    Prefix,
    Exact,
    /// `^~`
    NoRegex,
    Extensions(Vec<String>),
}

#[derive(Debug, Clone)]
struct Loc {
    id: usize,
    pos: Pos,
    path: String,
    how: Match,
    ctx: Ctx,
    proxy_pass: At<String>,
    ret: Option<Return>,
    /// Locations inside this one's extension set (static cache rules).
    cache: Vec<(Vec<String>, String, Pos)>,
}

#[derive(Debug, Clone)]
struct Listen {
    address: String,
    tls: bool,
    h2: bool,
    default: bool,
    proxy_protocol: bool,
}

#[derive(Debug, Clone)]
struct Server {
    id: usize,
    pos: Pos,
    names: Vec<(String, Pos)>,
    listens: Vec<Listen>,
    ctx: Ctx,
    locs: Vec<Loc>,
    ret: Option<Return>,
    /// `if ($scheme = http) { return 301 https://$host$request_uri; }`
    https_if: Option<u16>,
}

#[derive(Debug, Clone)]
struct UpServer {
    address: String,
    weight: u32,
    max_fails: u32,
    fail_timeout: String,
    backup: bool,
    max_conns: Option<u32>,
    pos: Pos,
}

#[derive(Debug, Clone)]
struct Upstream {
    id: usize,
    pos: Pos,
    servers: Vec<UpServer>,
    least_conn: bool,
    keepalive: Option<u32>,
    keepalive_timeout: Option<String>,
    tls: bool,
    used: bool,
}

#[derive(Debug, Clone)]
struct Zone {
    key: String,
    rate: Option<String>,
    pos: Pos,
}

#[derive(Debug, Clone)]
enum MapKind {
    Websocket,
    Constant(String),
    Other,
}

struct Conv {
    prefix: PathBuf,
    report: Report,
    placed: Vec<(Place, Finding)>,
    next_id: usize,
    server_lines: Vec<Line>,
    tls_lines: Vec<Line>,
    limits_lines: Vec<Line>,
    trusted: Vec<(String, Pos)>,
    real_ip_header: At<String>,
    upstreams: BTreeMap<String, Upstream>,
    req_zones: BTreeMap<String, Zone>,
    conn_zones: BTreeMap<String, Zone>,
    maps: BTreeMap<String, MapKind>,
    log_formats: BTreeMap<String, (String, Pos)>,
    servers: Vec<Server>,
    /// The server whose routes also get the `*` host, once the routes are made: Switchyard has
    /// one catch-all for every listener where nginx has a default server per address.
    catch_all: Option<usize>,
    http: Ctx,
    access_log_done: bool,
    tls_done: BTreeSet<&'static str>,
    zone_names: BTreeMap<(String, u32, u16), String>,
    /// The server of each location id.
    loc_server: BTreeMap<usize, usize>,
}

/// Directives whose work Switchyard does on its own, or that have no meaning for it.
const BUILT_IN: &[(&str, &str)] = &[
    ("events", "Switchyard's event loop needs no settings"),
    (
        "worker_connections",
        "no per-worker connection table ([limits] max_connections caps connections)",
    ),
    ("multi_accept", "no equivalent needed"),
    ("use", "no equivalent needed"),
    (
        "user",
        "run Switchyard as its own user (systemd unit, container)",
    ),
    (
        "pid",
        "not needed under systemd or a container; [server] pid_file writes one",
    ),
    (
        "error_log",
        "the process log goes to stderr ([server] log_format)",
    ),
    (
        "worker_rlimit_nofile",
        "set by the service manager (LimitNOFILE)",
    ),
    ("pcre_jit", "no equivalent needed"),
    ("sendfile", "no equivalent needed"),
    ("tcp_nopush", "no equivalent needed"),
    ("tcp_nodelay", "Switchyard always sets TCP_NODELAY"),
    (
        "types",
        "Switchyard has its own table of content types for static files",
    ),
    (
        "default_type",
        "Switchyard has its own table of content types for static files",
    ),
    ("types_hash_max_size", "no equivalent needed"),
    ("types_hash_bucket_size", "no equivalent needed"),
    ("server_names_hash_bucket_size", "no equivalent needed"),
    ("server_names_hash_max_size", "no equivalent needed"),
    ("server_tokens", "no equivalent needed"),
    ("charset", "no equivalent needed"),
    (
        "proxy_http_version",
        "Switchyard speaks HTTP/1.1 to upstreams (with keep-alive)",
    ),
    ("proxy_buffering", "Switchyard streams responses"),
    (
        "client_body_temp_path",
        "Switchyard streams request bodies: no temp files",
    ),
    (
        "proxy_temp_path",
        "Switchyard streams responses: no temp files",
    ),
    ("fastcgi_temp_path", "no FastCGI: no temp files"),
    ("uwsgi_temp_path", "no uwsgi: no temp files"),
    ("scgi_temp_path", "no SCGI: no temp files"),
    ("proxy_buffers", "Switchyard streams responses"),
    ("proxy_buffer_size", "Switchyard streams responses"),
    ("proxy_busy_buffers_size", "Switchyard streams responses"),
    (
        "proxy_request_buffering",
        "Switchyard streams request bodies",
    ),
    (
        "client_body_buffer_size",
        "Switchyard streams request bodies",
    ),
    (
        "client_header_buffer_size",
        "[limits] max_header_line bounds header lines",
    ),
    (
        "ssl_prefer_server_ciphers",
        "Switchyard picks in [tls] cipher_suites order",
    ),
    (
        "ssl_session_timeout",
        "resumption lifetimes follow [tls] ticket_rotation",
    ),
    (
        "ssl_stapling_verify",
        "Switchyard checks every OCSP response it staples",
    ),
    (
        "ssl_trusted_certificate",
        "Switchyard checks OCSP responses against the certificate's own chain",
    ),
    (
        "ssl_dhparam",
        "no finite-field DHE in Switchyard (ECDHE only)",
    ),
    (
        "resolver_timeout",
        "lookups have their own bounded timeouts",
    ),
    (
        "limit_req_log_level",
        "refusals are counted in switchyard_rate_limited_total",
    ),
    (
        "limit_conn_log_level",
        "refusals are counted in switchyard_rate_limited_total",
    ),
    (
        "gzip_vary",
        "Switchyard always sends Vary: Accept-Encoding with compressed answers",
    ),
    ("gzip_disable", "no equivalent needed"),
    ("gzip_buffers", "no equivalent needed"),
    ("gzip_http_version", "no equivalent needed"),
    (
        "real_ip_recursive",
        "Switchyard always skips trusted addresses from the right",
    ),
    ("keepalive_requests", "no per-connection request cap"),
    ("reset_timedout_connection", "no equivalent needed"),
    ("log_not_found", "no equivalent needed"),
    ("open_file_cache", "no equivalent needed"),
    ("open_file_cache_valid", "no equivalent needed"),
    ("open_file_cache_min_uses", "no equivalent needed"),
    ("open_file_cache_errors", "no equivalent needed"),
    ("access_log_format_escape", "no equivalent needed"),
    (
        "zone",
        "Switchyard's pools are shared by every worker thread",
    ),
    ("etag", "static files always carry an ETag"),
];

impl Conv {
    fn id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    fn find(
        &mut self,
        place: Place,
        d: &Pos,
        directive: &str,
        message: impl Into<String>,
        severity: Severity,
    ) {
        let f = Finding {
            file: d.file.to_string(),
            line: d.line,
            directive: directive.to_string(),
            message: message.into(),
            severity,
        };
        self.report.findings.push(f.clone());
        self.placed.push((place, f));
    }

    fn not_carried(&mut self, place: Place, d: &Directive, why: impl Into<String>) {
        self.find(place, &d.pos, &d.name, why, Severity::NotCarried);
    }

    fn note(&mut self, place: Place, pos: &Pos, directive: &str, why: impl Into<String>) {
        self.find(place, pos, directive, why, Severity::Note);
    }

    /// A finding template for a line that Switchyard may refuse.
    fn drop_as(pos: &Pos, directive: &str) -> Finding {
        Finding {
            file: pos.file.to_string(),
            line: pos.line,
            directive: directive.to_string(),
            message: "dropped".to_string(),
            severity: Severity::NotCarried,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.prefix.join(path)
        };
        std::path::absolute(&full).unwrap_or(full)
    }

    /// Applies a directive that may stand at several levels; false when it is not one of them.
    fn apply(&mut self, ctx: &mut Ctx, d: &Directive, place: Place) -> bool {
        let a = |i: usize| d.arg(i).to_string();
        match d.name.as_str() {
            "add_header" => {
                if d.args.len() < 2 {
                    self.not_carried(place, d, "needs a name and a value");
                    return true;
                }
                let always = d.arg(2) == "always";
                ctx.add_headers
                    .get_or_insert_with(Vec::new)
                    .push(AddHeader {
                        name: a(0),
                        value: a(1),
                        always,
                        pos: d.pos.clone(),
                    });
            }
            "proxy_set_header" => {
                ctx.proxy_headers
                    .get_or_insert_with(Vec::new)
                    .push((a(0), a(1), d.pos.clone()));
            }
            "proxy_hide_header" => {
                ctx.hide_headers
                    .get_or_insert_with(Vec::new)
                    .push((a(0), d.pos.clone()));
            }
            "limit_req" => {
                let mut zone = String::new();
                let mut burst = 0;
                let mut nodelay = false;
                for arg in &d.args {
                    if let Some(z) = arg.strip_prefix("zone=") {
                        zone = z.to_string();
                    } else if let Some(b) = arg.strip_prefix("burst=") {
                        burst = b.parse().unwrap_or(0);
                    } else if arg == "nodelay" {
                        nodelay = true;
                    } else if arg.starts_with("delay=") {
                        self.note(place, &d.pos, "limit_req", "delay= is not carried over: Switchyard never delays, it refuses past the burst");
                    }
                }
                ctx.limit_req.get_or_insert_with(Vec::new).push(LimitReq {
                    zone,
                    burst,
                    nodelay,
                    pos: d.pos.clone(),
                });
            }
            "limit_conn" => {
                let n = d.arg(1).parse().unwrap_or(0);
                ctx.limit_conn
                    .get_or_insert_with(Vec::new)
                    .push((a(0), n, d.pos.clone()));
            }
            "allow" | "deny" => {
                ctx.access
                    .get_or_insert_with(Vec::new)
                    .push((format!("{} {}", d.name, d.arg(0)), d.pos.clone()));
            }
            "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "proxy_send_timeout"
            | "client_header_timeout"
            | "client_body_timeout"
            | "proxy_next_upstream_timeout" => {
                let Some(v) = values::duration(d.arg(0)) else {
                    self.not_carried(place, d, format!("cannot read the time {:?}", d.arg(0)));
                    return true;
                };
                let slot = match d.name.as_str() {
                    "proxy_connect_timeout" => &mut ctx.connect_timeout,
                    "proxy_read_timeout" => &mut ctx.read_timeout,
                    "proxy_send_timeout" => &mut ctx.send_timeout,
                    "client_header_timeout" => &mut ctx.client_header_timeout,
                    "client_body_timeout" => &mut ctx.client_body_timeout,
                    _ => &mut ctx.retry_timeout,
                };
                *slot = Some((v, d.pos.clone()));
            }
            "keepalive_timeout" => match values::duration_ms(d.arg(0)) {
                Some(ms) => {
                    let secs = ms.div_ceil(1000);
                    ctx.keepalive_timeout = Some((format!("{secs}s"), d.pos.clone()));
                    if d.args.len() > 1 {
                        self.note(
                            place,
                            &d.pos,
                            "keepalive_timeout",
                            "the second value (the Keep-Alive header) is not sent",
                        );
                    }
                }
                None => self.not_carried(place, d, "cannot read the time"),
            },
            "client_max_body_size" => match values::size_bytes(d.arg(0)) {
                Some(0) => {
                    ctx.max_body = Some((1 << 40, d.pos.clone()));
                    self.note(
                        place,
                        &d.pos,
                        "client_max_body_size",
                        "0 (no limit) is written as 1024GB",
                    );
                }
                Some(n) => ctx.max_body = Some((n, d.pos.clone())),
                None => self.not_carried(place, d, "cannot read the size"),
            },
            "root" => ctx.root = Some((a(0), d.pos.clone())),
            "index" => ctx.index = Some((a(0), d.pos.clone())),
            "try_files" => ctx.try_files = Some((d.args.clone(), d.pos.clone())),
            "expires" => ctx.expires = Some((a(0), d.pos.clone())),
            "auth_basic" => {
                let realm = if d.arg(0) == "off" { None } else { Some(a(0)) };
                ctx.auth_basic = Some((realm, d.pos.clone()));
            }
            "auth_basic_user_file" => ctx.auth_file = Some((a(0), d.pos.clone())),
            "access_log" if d.arg(0) == "off" => ctx.access_log_off = Some((true, d.pos.clone())),
            "gzip" => ctx.gzip = Some((d.arg(0) == "on", d.pos.clone())),
            "gzip_types" => ctx.gzip_types = Some((d.args.clone(), d.pos.clone())),
            "gzip_min_length" => match values::size_bytes(d.arg(0)) {
                Some(n) => ctx.gzip_min_length = Some((n, d.pos.clone())),
                None => self.not_carried(place, d, "cannot read the size"),
            },
            "gzip_comp_level" => match d.arg(0).parse::<u32>() {
                Ok(n) if (1..=9).contains(&n) => ctx.gzip_level = Some((n, d.pos.clone())),
                _ => self.not_carried(place, d, "a level from 1 to 9"),
            },
            "gzip_proxied" => {
                if d.arg(0) != "any" {
                    self.note(place, &d.pos, "gzip_proxied", "Switchyard compresses the answers to proxied requests (with Via) too, as `gzip_proxied any`");
                }
            }
            "limit_req_status" | "limit_conn_status" => match d.arg(0).parse::<u16>() {
                Ok(s) if (400..=599).contains(&s) => {
                    if d.name == "limit_req_status" {
                        ctx.req_status = Some(s);
                    } else {
                        ctx.conn_status = Some(s);
                    }
                }
                _ => self.not_carried(place, d, "a status from 400 to 599"),
            },
            "ssl_certificate" => ctx
                .ssl_certs
                .get_or_insert_with(Vec::new)
                .push((a(0), d.pos.clone())),
            "ssl_certificate_key" => ctx
                .ssl_keys
                .get_or_insert_with(Vec::new)
                .push((a(0), d.pos.clone())),
            "proxy_next_upstream" => {
                let mut on = Vec::new();
                for arg in &d.args {
                    match arg.as_str() {
                        "off" => on.clear(),
                        "error" => on.push("error".to_string()),
                        "timeout" => on.push("timeout".to_string()),
                        "non_idempotent" => self.note(place, &d.pos, "proxy_next_upstream", "non_idempotent: Switchyard never sends a request that may have been sent twice, whatever its method"),
                        other => match other.strip_prefix("http_").and_then(|s| s.parse::<u16>().ok()) {
                            Some(s) => on.push(s.to_string()),
                            None => self.note(place, &d.pos, "proxy_next_upstream", format!("{other} has no equivalent (Switchyard retries on errors, timeouts and statuses)")),
                        },
                    }
                }
                ctx.retry_on = Some((on, d.pos.clone()));
            }
            "proxy_next_upstream_tries" => match d.arg(0).parse::<u32>() {
                Ok(0) => {}
                Ok(n) => ctx.retry_tries = Some((n.min(8), d.pos.clone())),
                Err(_) => self.not_carried(place, d, "a number"),
            },
            "http2" => ctx.http2 = Some(d.arg(0) == "on"),
            _ => return false,
        }
        true
    }

    /// A directive at the http level (or the top of a fragment).
    fn http_level(&mut self, d: &Directive, ctx: &mut Ctx) {
        let place = Place::Defaults;
        match d.name.as_str() {
            "server" | "upstream" | "map" | "limit_req_zone" | "limit_conn_zone" | "log_format" => {
            }
            _ if self.apply(ctx, d, place) => {}
            _ => self.shared(d, place),
        }
    }

    /// Directives that set something process-wide, wherever they stand; the rest are reported.
    fn shared(&mut self, d: &Directive, place: Place) {
        let a = |i: usize| d.arg(i).to_string();
        match d.name.as_str() {
            "access_log" => {
                if self.access_log_done {
                    self.not_carried(place, d, "Switchyard writes one access log ([server] access_log); the first one is kept");
                    return;
                }
                self.access_log_done = true;
                let target = self.path(d.arg(0)).display().to_string();
                let fmt = d.arg(1);
                let format = match fmt {
                    "" | "combined" => "combined".to_string(),
                    name => match self.log_formats.get(name) {
                        Some((f, _)) => f.clone(),
                        None => {
                            self.not_carried(place, d, format!("no log_format {name:?}"));
                            "combined".to_string()
                        }
                    },
                };
                self.server_lines
                    .push(Line::new("access_log", string(&target)).from(d.pos.to_string()));
                self.server_lines.push(
                    Line::new("access_log_format", literal(&format))
                        .from(format!(
                            "{} log_format {}",
                            d.pos,
                            if fmt.is_empty() { "combined" } else { fmt }
                        ))
                        .droppable(Self::drop_as(&d.pos, "log_format")),
                );
            }
            "ssl_protocols" => {
                let has = |v: &str| d.args.iter().any(|x| x == v);
                let min = if has("TLSv1.2") {
                    "1.2"
                } else if has("TLSv1.3") {
                    "1.3"
                } else {
                    ""
                };
                if min.is_empty() {
                    self.not_carried(place, d, "Switchyard offers only TLS 1.2 and 1.3");
                    return;
                }
                if has("TLSv1") || has("TLSv1.1") || has("SSLv3") {
                    self.note(
                        place,
                        &d.pos,
                        "ssl_protocols",
                        "TLS 1.0 and 1.1 are refused as weak: Switchyard offers 1.2 and 1.3",
                    );
                }
                self.tls_once(
                    "min_version",
                    Line::new("min_version", string(min)).from(d.pos.to_string()),
                    d,
                    place,
                );
            }
            "ssl_ciphers" => {
                let line = Line::new("cipher_suites", string(d.arg(0)))
                    .from(d.pos.to_string())
                    .droppable(Self::drop_as(&d.pos, "ssl_ciphers"));
                self.tls_once("cipher_suites", line, d, place);
            }
            "ssl_ecdh_curve" => {
                if d.arg(0) != "auto" {
                    let line = Line::new("kx_groups", string(d.arg(0)))
                        .from(d.pos.to_string())
                        .droppable(Self::drop_as(&d.pos, "ssl_ecdh_curve"));
                    self.tls_once("kx_groups", line, d, place);
                }
            }
            "ssl_session_cache" => {
                let mut n: Option<u64> = None;
                for arg in &d.args {
                    if arg == "off" || arg == "none" {
                        n = Some(0);
                    } else if let Some(size) = arg
                        .strip_prefix("shared:")
                        .and_then(|s| s.split(':').nth(1))
                    {
                        // nginx: about 4000 sessions per megabyte.
                        n = values::size_bytes(size)
                            .map(|b| (b * 4000 / (1 << 20)).clamp(1, 10_000_000));
                    }
                }
                if let Some(n) = n {
                    self.tls_once(
                        "session_cache",
                        Line::new("session_cache", n.to_string())
                            .from(format!("{} (about 4000 sessions per MB, as nginx)", d.pos)),
                        d,
                        place,
                    );
                }
            }
            "ssl_session_tickets" => {
                let v = d.arg(0) == "on";
                self.tls_once(
                    "session_tickets",
                    Line::new("session_tickets", v.to_string()).from(d.pos.to_string()),
                    d,
                    place,
                );
            }
            "ssl_stapling" => {
                let v = d.arg(0) == "on";
                self.tls_once(
                    "ocsp_stapling",
                    Line::new("ocsp_stapling", v.to_string()).from(d.pos.to_string()),
                    d,
                    place,
                );
            }
            "large_client_header_buffers" => {
                let n: u64 = d.arg(0).parse().unwrap_or(4);
                if let Some(size) = values::size_bytes(d.arg(1)) {
                    let total = (n * size).clamp(size, 1 << 20);
                    for key in ["max_request_line", "max_header_line"] {
                        self.limits_lines.push(
                            Line::new(key, string(&values::size(size)))
                                .from(d.pos.to_string())
                                .droppable(Self::drop_as(&d.pos, &d.name)),
                        );
                    }
                    self.limits_lines.push(
                        Line::new("max_header_size", string(&values::size(total)))
                            .from(d.pos.to_string())
                            .droppable(Self::drop_as(&d.pos, &d.name)),
                    );
                }
            }
            "resolver" => {
                let addrs: Vec<String> = d
                    .args
                    .iter()
                    .filter(|x| !x.contains('='))
                    .cloned()
                    .collect();
                self.server_lines.push(
                    Line::new("resolvers", strings(&addrs))
                        .from(d.pos.to_string())
                        .droppable(Self::drop_as(&d.pos, "resolver")),
                );
            }
            "set_real_ip_from" => {
                if d.arg(0).starts_with("unix:") {
                    self.not_carried(place, d, "unix sockets are not listened on");
                } else {
                    self.trusted.push((a(0), d.pos.clone()));
                }
            }
            "real_ip_header" => self.real_ip_header = Some((a(0), d.pos.clone())),
            "worker_processes" => {
                if d.arg(0) != "auto" {
                    self.server_lines.push(
                        Line::new(
                            "threads",
                            d.arg(0).parse::<u32>().unwrap_or(1).max(1).to_string(),
                        )
                        .from(d.pos.to_string())
                        .droppable(Self::drop_as(&d.pos, &d.name)),
                    );
                }
            }
            _ => {
                if !self.built_in(d, place) {
                    self.not_carried(place, d, "Switchyard has no equivalent");
                }
            }
        }
    }

    /// A directive whose job Switchyard does without a setting (`BUILT_IN`): a note, not a finding
    /// that needs review. False for any other directive.
    fn built_in(&mut self, d: &Directive, place: Place) -> bool {
        let Some((_, why)) = BUILT_IN.iter().find(|(n, _)| *n == d.name) else {
            return false;
        };
        self.placed.push((
            place,
            Finding {
                file: d.pos.file.to_string(),
                line: d.pos.line,
                directive: d.name.clone(),
                message: format!("nothing to carry over: {why}"),
                severity: Severity::Note,
            },
        ));
        true
    }

    fn tls_once(&mut self, key: &'static str, line: Line, d: &Directive, place: Place) {
        if self.tls_done.insert(key) {
            self.tls_lines.push(line);
        } else {
            self.note(
                place,
                &d.pos,
                &d.name,
                "[tls] applies to every TLS listener; the first value is kept",
            );
        }
    }

    /// First pass over http: the named things other directives refer to.
    fn definitions(&mut self, list: &[Directive]) {
        for d in list {
            match d.name.as_str() {
                "upstream" => self.upstream(d),
                "limit_req_zone" | "limit_conn_zone" => {
                    let key = d.arg(0);
                    let mut zone = String::new();
                    let mut rate = None;
                    for arg in &d.args[1.min(d.args.len())..] {
                        if let Some(z) = arg.strip_prefix("zone=") {
                            zone = z.split(':').next().unwrap_or("").to_string();
                        } else if let Some(r) = arg.strip_prefix("rate=") {
                            rate = Some(r.to_string());
                        }
                    }
                    let kind = match key {
                        "$binary_remote_addr" | "$remote_addr" => Some("client_ip".to_string()),
                        k => k
                            .strip_prefix("$http_")
                            .map(|h| format!("header:{}", h.replace('_', "-"))),
                    };
                    let Some(kind) = kind else {
                        self.not_carried(Place::Defaults, d, format!("the key {key} has no equivalent (client address or a request header)"));
                        continue;
                    };
                    // Written as Switchyard reads it: `rate=005r/s` is 5 requests a second, and
                    // `rate=000r/m` none, which nginx refuses too.
                    let rate = rate.as_deref().and_then(nginx_rate);
                    if d.name == "limit_req_zone" && rate.is_none() {
                        self.not_carried(
                            Place::Defaults,
                            d,
                            "needs rate=Nr/s or rate=Nr/m with N at least 1",
                        );
                        continue;
                    }
                    let z = Zone {
                        key: kind,
                        rate,
                        pos: d.pos.clone(),
                    };
                    if d.name == "limit_req_zone" {
                        self.req_zones.insert(zone, z);
                    } else {
                        self.conn_zones.insert(zone, z);
                    }
                }
                "map" => {
                    let var = d.arg(1).trim_start_matches('$').to_string();
                    let block = d.block.as_deref().unwrap_or(&[]);
                    let vals: BTreeSet<&str> = block
                        .iter()
                        .filter_map(|e| e.args.first().map(String::as_str))
                        .collect();
                    let kind = if d.arg(0) == "$http_upgrade" {
                        MapKind::Websocket
                    } else if vals.len() == 1 && !block.iter().any(|e| e.name == "hostnames") {
                        MapKind::Constant(
                            vals.iter()
                                .next()
                                .map(|s| s.to_string())
                                .unwrap_or_default(),
                        )
                    } else {
                        MapKind::Other
                    };
                    self.maps.insert(var, kind);
                }
                "log_format" => {
                    let mut args = d.args.iter().skip(1);
                    let mut first = args.next().map(String::as_str);
                    if first.is_some_and(|f| f.starts_with("escape=")) {
                        first = args.next().map(String::as_str);
                    }
                    let text: String = first.into_iter().chain(args.map(String::as_str)).collect();
                    self.log_formats
                        .insert(d.arg(0).to_string(), (text, d.pos.clone()));
                }
                _ => {}
            }
        }
    }

    fn upstream(&mut self, d: &Directive) {
        let id = self.id();
        let mut up = Upstream {
            id,
            pos: d.pos.clone(),
            servers: Vec::new(),
            least_conn: false,
            keepalive: None,
            keepalive_timeout: None,
            tls: false,
            used: false,
        };
        for e in d.block.as_deref().unwrap_or(&[]) {
            match e.name.as_str() {
                "server" => {
                    let mut s = UpServer {
                        address: e.arg(0).to_string(),
                        weight: 1,
                        max_fails: 1,
                        fail_timeout: "10s".into(),
                        backup: false,
                        max_conns: None,
                        pos: e.pos.clone(),
                    };
                    if s.address.starts_with("unix:") {
                        self.not_carried(Place::Upstream(id), e, "unix sockets are not supported upstream");
                        continue;
                    }
                    if !s.address.contains(':') || s.address.ends_with(']') {
                        s.address.push_str(":80");
                    }
                    if !valid_address(&s.address) {
                        self.not_carried(Place::Upstream(id), e, format!("{:?} is not an address Switchyard can use", s.address));
                        continue;
                    }
                    let mut down = false;
                    for arg in e.args.get(1..).unwrap_or(&[]) {
                        let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
                        match k {
                            "weight" => s.weight = v.parse().unwrap_or(1).max(1),
                            "max_fails" => s.max_fails = v.parse().unwrap_or(1),
                            "fail_timeout" => s.fail_timeout = values::duration(v).unwrap_or_else(|| "10s".into()),
                            "backup" => s.backup = true,
                            "down" => down = true,
                            "max_conns" => s.max_conns = v.parse().ok().filter(|n| *n > 0),
                            "resolve" => {}
                            _ => self.note(Place::Upstream(id), &e.pos, "server", format!("{arg} is not carried over")),
                        }
                    }
                    if up.servers.iter().any(|x| same_server(&x.address, &s.address)) {
                        self.note(Place::Upstream(id), &e.pos, "server", format!("{} is listed twice: once is kept", s.address));
                        continue;
                    }
                    if down {
                        self.note(Place::Upstream(id), &e.pos, "server", "marked down: left out");
                    } else {
                        up.servers.push(s);
                    }
                }
                "least_conn" => up.least_conn = true,
                "keepalive" => up.keepalive = e.arg(0).parse().ok(),
                "keepalive_timeout" => up.keepalive_timeout = values::duration(e.arg(0)),
                "keepalive_requests" | "zone" | "keepalive_time" => {}
                "ip_hash" | "hash" => self.not_carried(Place::Upstream(id), e, "Switchyard keeps a client on a server with a cookie ([services.NAME.affinity]), not by a hash: requests are balanced"),
                _ => self.not_carried(Place::Upstream(id), e, "Switchyard has no equivalent"),
            }
        }
        if up.servers.is_empty() {
            self.not_carried(Place::Upstream(id), d, "no usable server");
            return;
        }
        self.upstreams.insert(d.arg(0).to_string(), up);
    }

    fn server(&mut self, d: &Directive, http: &Ctx) {
        let id = self.id();
        let place = Place::Server(id);
        let list = d.block.as_deref().unwrap_or(&[]);
        let mut ctx = http.clone();
        ctx.fresh_arrays(list);
        let mut srv = Server {
            id,
            pos: d.pos.clone(),
            names: Vec::new(),
            listens: Vec::new(),
            ctx: Ctx::default(),
            locs: Vec::new(),
            ret: None,
            https_if: None,
        };
        let mut locations = Vec::new();
        for e in list {
            match e.name.as_str() {
                "listen" => self.listen(e, &mut srv, place),
                "server_name" => srv
                    .names
                    .extend(e.args.iter().map(|n| (n.to_lowercase(), e.pos.clone()))),
                "location" => locations.push(e),
                "return" => srv.ret = self.ret(e, place),
                "ssl" if e.arg(0) == "on" => {
                    for l in &mut srv.listens {
                        l.tls = true;
                    }
                }
                "if" => {
                    let cond = e.args.join(" ");
                    let inner = e.block.as_deref().unwrap_or(&[]);
                    let ret = inner.first().filter(|_| inner.len() == 1).and_then(|r| {
                        if r.name == "return" {
                            self.ret(r, place)
                        } else {
                            None
                        }
                    });
                    match ret {
                        Some(r)
                            if (cond.contains("$scheme")
                                && cond.contains("http")
                                && !cond.contains("https"))
                                || cond.contains("$scheme != \"https\"")
                                || cond.contains("$scheme != https") =>
                        {
                            if !HTTPS_CODES.contains(&r.code) {
                                self.not_carried(place, e, format!("a {} redirect to https is not carried over: the listener's redirect uses 301, 302, 307 or 308", r.code));
                            } else if r.url.as_deref().is_some_and(is_https_redirect) {
                                srv.https_if = Some(r.code);
                            } else {
                                self.not_carried(place, e, "only the redirect to https://$host$request_uri is carried over");
                            }
                        }
                        _ => self.not_carried(
                            place,
                            e,
                            "`if` is not carried over: Switchyard routes on host and path prefix",
                        ),
                    }
                }
                _ if self.apply(&mut ctx, e, place) => {}
                "rewrite"
                | "error_page"
                | "proxy_pass"
                | "proxy_redirect"
                | "proxy_cache"
                | "proxy_cache_valid"
                | "proxy_intercept_errors"
                | "sub_filter"
                | "set"
                | "limit_rate" => self.not_carried(place, e, "Switchyard has no equivalent"),
                _ => self.shared(e, place),
            }
        }
        if srv.listens.is_empty() {
            srv.listens.push(Listen {
                address: "0.0.0.0:80".into(),
                tls: false,
                h2: false,
                default: false,
                proxy_protocol: false,
            });
        }
        if ctx.http2 == Some(true) {
            for l in &mut srv.listens {
                l.h2 = true;
            }
        }
        for loc in locations {
            self.location(loc, &ctx, &mut srv, None);
        }
        srv.ctx = ctx;
        self.servers.push(srv);
    }

    fn listen(&mut self, e: &Directive, srv: &mut Server, place: Place) {
        let raw = e.arg(0);
        if raw.starts_with("unix:") {
            self.not_carried(place, e, "unix sockets are not listened on");
            return;
        }
        let address = if raw.bytes().all(|b| b.is_ascii_digit()) {
            format!("0.0.0.0:{raw}")
        } else if let Some(port) = raw.strip_prefix("*:") {
            format!("0.0.0.0:{port}")
        } else if let Some(host) = raw.strip_prefix("localhost:") {
            format!("127.0.0.1:{host}")
        } else if raw.contains(':') && (raw.starts_with('[') || raw.matches(':').count() == 1) {
            raw.to_string()
        } else {
            format!("{raw}:80")
        };
        // Read as the config loader reads it (a `SocketAddr`) and written back in its form, so
        // that two spellings of one socket (`listen 080`, `listen 80`) are one listener here.
        let socket = address.parse::<std::net::SocketAddr>().ok();
        let Some(socket) = socket.filter(|s| s.port() > 0) else {
            self.not_carried(
                place,
                e,
                format!(
                    "{raw:?} is not an address Switchyard can listen on (an IP address and a port)"
                ),
            );
            return;
        };
        let mut l = Listen {
            address: socket.to_string(),
            tls: false,
            h2: false,
            default: false,
            proxy_protocol: false,
        };
        for arg in e.args.get(1..).unwrap_or(&[]) {
            match arg.split('=').next().unwrap_or("") {
                "ssl" => l.tls = true,
                "http2" => l.h2 = true,
                "default_server" | "default" => l.default = true,
                "proxy_protocol" => l.proxy_protocol = true,
                "reuseport" | "backlog" | "ipv6only" | "so_keepalive" | "deferred" | "fastopen"
                | "rcvbuf" | "sndbuf" | "bind" => {}
                other => self.note(
                    place,
                    &e.pos,
                    "listen",
                    format!("{other} is not carried over"),
                ),
            }
        }
        srv.listens.push(l);
    }

    fn ret(&mut self, e: &Directive, place: Place) -> Option<Return> {
        let (code, url) = match e.args.len() {
            1 if e.arg(0).contains("://") || e.arg(0).starts_with('$') => {
                (302, Some(e.arg(0).to_string()))
            }
            1 => (e.arg(0).parse().unwrap_or(0), None),
            _ => (e.arg(0).parse().unwrap_or(0), Some(e.arg(1).to_string())),
        };
        if matches!(code, 301 | 302 | 303 | 307 | 308) && url.is_some() {
            return Some(Return {
                code,
                url,
                pos: e.pos.clone(),
            });
        }
        self.not_carried(place, e, format!("only redirects (301, 302, 303, 307, 308) are carried over; `return {}` answers from the edge", e.args.join(" ")));
        None
    }

    fn location(&mut self, d: &Directive, outer: &Ctx, srv: &mut Server, parent: Option<&Loc>) {
        let id = self.id();
        self.loc_server.insert(id, srv.id);
        let place = Place::Location(id);
        let (modifier, arg) = match d.args.len() {
            1 => ("", d.arg(0)),
            _ => (d.arg(0), d.arg(1)),
        };
        let how = match modifier {
            "" if arg.starts_with('@') => {
                self.not_carried(place, d, "named locations are not carried over");
                return;
            }
            "" => Match::Prefix,
            "=" => Match::Exact,
            "^~" => Match::NoRegex,
            "~" | "~*" => match values::reduce_regex(arg) {
                Some(RegexLocation::Prefix(p)) => {
                    let path = p.trim_end_matches('/').to_string();
                    return self.location_as(
                        d,
                        outer,
                        srv,
                        parent,
                        id,
                        if path.is_empty() { "/".into() } else { path },
                        Match::Prefix,
                    );
                }
                Some(RegexLocation::Exact(p)) => {
                    return self.location_as(d, outer, srv, parent, id, p, Match::Exact)
                }
                Some(RegexLocation::Extensions(x)) => Match::Extensions(x),
                None => {
                    self.not_carried(
                        place,
                        d,
                        format!("the regex {arg:?} is neither a prefix nor a set of extensions"),
                    );
                    return;
                }
            },
            other => {
                self.not_carried(place, d, format!("unknown location modifier {other:?}"));
                return;
            }
        };
        let path = match &how {
            Match::Extensions(_) => parent.map(|p| p.path.clone()).unwrap_or_else(|| "/".into()),
            _ => arg.to_string(),
        };
        self.location_as(d, outer, srv, parent, id, path, how)
    }

    #[allow(clippy::too_many_arguments)]
    fn location_as(
        &mut self,
        d: &Directive,
        outer: &Ctx,
        srv: &mut Server,
        _parent: Option<&Loc>,
        id: usize,
        path: String,
        how: Match,
    ) {
        let place = Place::Location(id);
        let list = d.block.as_deref().unwrap_or(&[]);
        let mut ctx = outer.clone();
        ctx.fresh_arrays(list);
        let mut loc = Loc {
            id,
            pos: d.pos.clone(),
            path,
            how,
            ctx: Ctx::default(),
            proxy_pass: None,
            ret: None,
            cache: Vec::new(),
        };
        let mut nested = Vec::new();
        for e in list {
            match e.name.as_str() {
                "location" => nested.push(e),
                "proxy_pass" => loc.proxy_pass = Some((e.arg(0).to_string(), e.pos.clone())),
                "return" => loc.ret = self.ret(e, place),
                "alias" => {
                    ctx.root = Some((e.arg(0).to_string(), e.pos.clone()));
                    self.not_carried(place, e, "alias: serve the directory with a route of its own (static root with strip_prefix)");
                }
                _ if self.apply(&mut ctx, e, place) => {}
                "access_log" => self.note(place, &e.pos, "access_log", "Switchyard writes one access log ([server] access_log); this location's requests go to it"),
                _ if self.built_in(e, place) => {}
                _ => self.not_carried(place, e, "Switchyard has no equivalent here"),
            }
        }
        loc.ctx = ctx.clone();
        if let Match::Extensions(exts) = &loc.how {
            // Inside a static site: cache rules. Elsewhere: not a route.
            let control = cache_control(&loc.ctx);
            let only_cache = loc.proxy_pass.is_none() && loc.ret.is_none();
            let own_headers = list.iter().any(|e| e.name == "add_header");
            if only_cache
                && own_headers
                && outer
                    .add_headers
                    .iter()
                    .flatten()
                    .any(|h| !h.name.eq_ignore_ascii_case("cache-control"))
            {
                self.note(place, &d.pos, "add_header", "nginx sends none of the server's add_header on these files (the location has its own); Switchyard sends the route's headers with them");
            }
            if only_cache {
                if let Some(c) = control {
                    loc.cache.push((exts.clone(), c, d.pos.clone()));
                }
                // Only the cache rule survives: a log switch of its own cannot.
                let outer_off = outer.access_log_off.as_ref().is_some_and(|(off, _)| *off);
                if let Some((true, p)) = &loc.ctx.access_log_off {
                    if !outer_off {
                        self.not_carried_pos(place, p, "access_log", "Switchyard cannot turn the access log off for some file extensions only (a route's `access_log = false` covers its whole path)");
                    }
                }
            } else {
                self.not_carried(place, d, "a location for file extensions that proxies or redirects: Switchyard routes by path prefix");
                return;
            }
        }
        for n in nested {
            let snapshot = loc.clone();
            self.location(n, &ctx, srv, Some(&snapshot));
        }
        srv.locs.push(loc);
    }

    fn listen_default_of(&self, address: &str) -> Option<usize> {
        let on: Vec<&Server> = self
            .servers
            .iter()
            .filter(|s| s.listens.iter().any(|l| l.address == address))
            .collect();
        on.iter()
            .find(|s| s.listens.iter().any(|l| l.address == address && l.default))
            .or(on.first())
            .map(|s| s.id)
    }
}

/// An nginx `rate=` value (`Nr/s` or `Nr/m`, N digits) as the config loader reads it
/// ([`Rate::parse`](crate::limits::Rate::parse): at least 1, within `u32`), N written without
/// leading zeros; `None` for anything else.
fn nginx_rate(r: &str) -> Option<String> {
    let (n, unit) = r.split_once("r/")?;
    if !matches!(unit, "s" | "m") || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rate = crate::limits::Rate::parse(r).ok()?;
    Some(format!("{}r/{unit}", rate.requests))
}

/// `host:port` or `[v6]:port` that Switchyard can take as a server or listener address.
fn valid_address(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// A route path Switchyard takes: normalised, starting with `/`.
fn normal_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains("//")
        && !p.bytes().any(|b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(b, b'?' | b'#' | b'%' | b'\\')
        })
        && !p.split('/').any(|seg| seg == "." || seg == "..")
}

fn is_https_redirect(url: &str) -> bool {
    https_redirect_port(url).is_some()
}

/// `https://$host$request_uri` (or `$server_name`, `$http_host`, with a port): the port.
fn https_redirect_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("https://")?;
    let rest = rest
        .strip_prefix("$host")
        .or_else(|| rest.strip_prefix("$server_name"))
        .or_else(|| rest.strip_prefix("${host}"))?;
    let (port, rest) = match rest.strip_prefix(':') {
        Some(p) => {
            let n = p.bytes().take_while(u8::is_ascii_digit).count();
            (p[..n].parse().ok()?, &p[n..])
        }
        None => (443, rest),
    };
    matches!(rest, "$request_uri" | "${request_uri}").then_some(port)
}

/// The Cache-Control an `expires` (and an `add_header Cache-Control`) give.
/// The `match` pattern of a static cache rule for file extensions: `*.js`, `*.{js,css}`.
fn ext_pattern(exts: &[String]) -> String {
    match exts {
        [] => "*".to_string(),
        [one] => format!("*.{one}"),
        _ => format!("*.{{{}}}", exts.join(",")),
    }
}

fn cache_control(ctx: &Ctx) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((e, _)) = &ctx.expires {
        match e.as_str() {
            "off" => {}
            "epoch" => parts.push("no-cache".to_string()),
            "max" => parts.push("max-age=315360000".to_string()),
            v => {
                if let Some(ms) = values::duration_ms(v.trim_start_matches(['+', '@'])) {
                    parts.push(format!("max-age={}", ms / 1000));
                }
            }
        }
    }
    for h in ctx.add_headers.iter().flatten() {
        if h.name.eq_ignore_ascii_case("cache-control") {
            parts.push(h.value.clone());
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A name usable as a TOML key and a Switchyard name.
fn ident(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "x".into()
    } else {
        out
    }
}

/// A route in the making: path, settings, target, place, origin, websocket, position.
type Spec = (String, Ctx, Option<Target>, Place, String, bool, Pos);

/// What a route does.
enum Target {
    Service {
        name: String,
        host_header: String,
        strip: bool,
    },
    Static {
        root: PathBuf,
        index: Option<String>,
        fallback: Option<String>,
        /// (`match` pattern, `Cache-Control` value), first match wins.
        cache: Vec<(String, String)>,
    },
    Redirect {
        to: String,
        code: u16,
    },
}

struct RouteSpec {
    host: String,
    path: String,
    target: Target,
    ctx: Ctx,
    websocket: bool,
    redirect_https: bool,
    place: Place,
    server_place: Place,
    origin: String,
    origin_pos: Pos,
}

pub fn convert(top: &[Directive], prefix: &Path, out: &Path) -> Result<Outcome, ImportError> {
    let mut c = Conv {
        prefix: prefix.to_path_buf(),
        report: Report::default(),
        placed: Vec::new(),
        next_id: 0,
        server_lines: Vec::new(),
        tls_lines: Vec::new(),
        limits_lines: Vec::new(),
        trusted: Vec::new(),
        real_ip_header: None,
        upstreams: BTreeMap::new(),
        req_zones: BTreeMap::new(),
        conn_zones: BTreeMap::new(),
        maps: BTreeMap::new(),
        log_formats: BTreeMap::new(),
        servers: Vec::new(),
        catch_all: None,
        http: Ctx::default(),
        access_log_done: false,
        tls_done: BTreeSet::new(),
        zone_names: BTreeMap::new(),
        loc_server: BTreeMap::new(),
    };
    let fragment = !top.iter().any(|d| d.name == "http");
    let mut http_list: Vec<&Directive> = Vec::new();
    for d in top {
        match d.name.as_str() {
            "http" => http_list.extend(d.block.as_deref().unwrap_or(&[])),
            _ if fragment
                && matches!(
                    d.name.as_str(),
                    "server"
                        | "upstream"
                        | "map"
                        | "limit_req_zone"
                        | "limit_conn_zone"
                        | "log_format"
                ) =>
            {
                http_list.push(d)
            }
            "events" => {
                let dir = d.clone();
                c.shared(&dir, Place::Top);
            }
            "stream" | "mail" => c.not_carried(Place::Top, d, "Switchyard proxies HTTP only"),
            _ if fragment => http_list.push(d),
            _ => c.shared(d, Place::Top),
        }
    }
    let owned: Vec<Directive> = http_list.into_iter().cloned().collect();
    c.definitions(&owned);
    let mut http = Ctx::default();
    http.fresh_arrays(&owned);
    for d in &owned {
        c.http_level(d, &mut http);
    }
    c.http = http.clone();
    for d in owned.iter().filter(|d| d.name == "server") {
        c.server(d, &http);
    }
    if c.servers.is_empty() {
        return Err(ImportError::Usage(format!(
            "{}: no server {{}} block: nothing to convert",
            top.first()
                .map(|d| d.pos.file.to_string())
                .unwrap_or_else(|| "the config".into())
        )));
    }
    let doc = c.emit();
    finish(doc, c.report, out)
}

impl Conv {
    fn emit(&mut self) -> Doc {
        let mut doc = Doc::default();
        let mut top = Block::default();
        top.comment("Switchyard config converted from nginx by `switchyard import nginx`.\nEach line says where it came from (nginx file:line); `import:` comments say what was not\ncarried over. Check it with `switchyard check --config FILE`; see docs/migrating-from-nginx.md.");
        doc.push(top);

        // Listeners.
        let mut listeners: BTreeMap<String, Listen> = BTreeMap::new();
        for s in &self.servers {
            for l in &s.listens {
                let e = listeners
                    .entry(l.address.clone())
                    .or_insert_with(|| Listen {
                        default: false,
                        ..l.clone()
                    });
                e.tls |= l.tls;
                e.h2 |= l.h2;
                e.proxy_protocol |= l.proxy_protocol;
            }
        }
        // Servers that only redirect to HTTPS, and listeners where every server does.
        let redirect_of = |s: &Server| -> Option<(u16, u16)> {
            if s.listens
                .iter()
                .any(|l| listeners.get(&l.address).is_some_and(|x| x.tls))
            {
                return None;
            }
            let r = s.ret.as_ref().or_else(|| {
                let only_root =
                    s.locs.len() == 1 && s.locs[0].path == "/" && s.locs[0].how == Match::Prefix;
                if only_root {
                    s.locs[0].ret.as_ref()
                } else {
                    None
                }
            })?;
            let port = https_redirect_port(r.url.as_deref()?)?;
            // A listener redirects with these only; any other (303) stays a route's redirect.
            HTTPS_CODES.contains(&r.code).then_some((r.code, port))
        };
        let mut listener_redirect: BTreeMap<String, (u16, u16)> = BTreeMap::new();
        for (addr, l) in &listeners {
            if l.tls {
                continue;
            }
            let on: Vec<&Server> = self
                .servers
                .iter()
                .filter(|s| s.listens.iter().any(|x| &x.address == addr))
                .collect();
            let reds: Vec<(u16, u16)> = on.iter().filter_map(|s| redirect_of(s)).collect();
            if !on.is_empty() && reds.len() == on.len() && reds.iter().all(|r| *r == reds[0]) {
                listener_redirect.insert(addr.clone(), reds[0]);
            }
        }
        let mut redirect_hosts: BTreeMap<String, u16> = BTreeMap::new();
        let mut skip_servers: BTreeSet<usize> = BTreeSet::new();
        for s in &self.servers {
            if let Some((code, _)) = redirect_of(s) {
                if s.listens
                    .iter()
                    .all(|l| listener_redirect.contains_key(&l.address))
                {
                    skip_servers.insert(s.id);
                } else {
                    for h in self.hosts(s) {
                        redirect_hosts.insert(h, code);
                    }
                    skip_servers.insert(s.id);
                }
            }
        }

        // One catch-all: the default servers (marked, else the first on their address) that
        // make routes; a marked one first, then the first in the file.
        let defaults: Vec<(usize, bool, Pos)> = self
            .servers
            .iter()
            .filter(|s| !skip_servers.contains(&s.id))
            .filter_map(|s| {
                let marked = s.listens.iter().any(|l| l.default);
                let first = s
                    .listens
                    .iter()
                    .any(|l| self.listen_default_of(&l.address) == Some(s.id));
                (marked || first).then(|| (s.id, marked, s.pos.clone()))
            })
            .collect();
        let chosen = defaults
            .iter()
            .find(|(_, marked, _)| *marked)
            .or(defaults.first())
            .map(|(id, ..)| *id);
        for (id, _, pos) in &defaults {
            if Some(*id) != chosen {
                self.note(
                    Place::Server(*id),
                    pos,
                    "server",
                    "a default server of its address, but Switchyard has one catch-all (`*`) for every listener: unknown hosts go to the other default server's routes",
                );
            }
        }
        self.catch_all = chosen;

        // Routes.
        let mut routes: Vec<RouteSpec> = Vec::new();
        let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
        let servers = self.servers.clone();
        for s in &servers {
            if skip_servers.contains(&s.id) {
                continue;
            }
            let hosts = self.hosts(s);
            if hosts.is_empty() {
                self.note(
                    Place::Server(s.id),
                    &s.pos,
                    "server",
                    "no server_name Switchyard can route on, and not a default server: left out",
                );
                continue;
            }
            let origin = format!("server at {}", s.pos);
            let mut specs: Vec<Spec> = Vec::new();
            if let Some(r) = &s.ret {
                let to = self.redirect_to(r, s, Place::Server(s.id));
                if let Some(to) = to {
                    specs.push((
                        "/".into(),
                        s.ctx.clone(),
                        Some(Target::Redirect { to, code: r.code }),
                        Place::Server(s.id),
                        format!("return at {}", r.pos),
                        false,
                        r.pos.clone(),
                    ));
                }
            } else {
                let has_root = s
                    .locs
                    .iter()
                    .any(|l| l.path == "/" && !matches!(l.how, Match::Extensions(_)));
                if !has_root && s.ctx.root.is_some() {
                    let fake = Loc {
                        id: s.id,
                        pos: s.pos.clone(),
                        path: "/".into(),
                        how: Match::Prefix,
                        ctx: s.ctx.clone(),
                        proxy_pass: None,
                        ret: None,
                        cache: Vec::new(),
                    };
                    let t = self.target(&fake, s);
                    specs.push((
                        "/".into(),
                        s.ctx.clone(),
                        t,
                        Place::Server(s.id),
                        "server root".into(),
                        false,
                        s.pos.clone(),
                    ));
                }
                for l in &s.locs {
                    if matches!(l.how, Match::Extensions(_)) {
                        if !s.locs.iter().any(|o| {
                            o.path == l.path
                                && !matches!(o.how, Match::Extensions(_))
                                && o.proxy_pass.is_none()
                        }) {
                            self.not_carried_pos(Place::Location(l.id), &l.pos, "location", "a location for file extensions outside a static site: Switchyard routes by path prefix");
                        }
                        continue;
                    }
                    if l.how == Match::Exact {
                        self.note(
                            Place::Location(l.id),
                            &l.pos,
                            "location",
                            format!(
                                "`= {}` becomes a path prefix: the route also serves {}/...",
                                l.path,
                                l.path.trim_end_matches('/')
                            ),
                        );
                        if l.path == "/" {
                            self.not_carried_pos(Place::Location(l.id), &l.pos, "location", "`location = /` cannot be told apart from the whole site in Switchyard");
                            continue;
                        }
                    }
                    if !normal_path(&l.path) {
                        self.not_carried_pos(Place::Location(l.id), &l.pos, "location", format!("{:?} is not a path Switchyard routes on (it wants a normalised path starting with /)", l.path));
                        continue;
                    }
                    let t = self.target(l, s);
                    let ws = self.websocket(&l.ctx);
                    specs.push((
                        l.path.clone(),
                        l.ctx.clone(),
                        t,
                        Place::Location(l.id),
                        format!("location {} at {}", l.path, l.pos),
                        ws,
                        l.pos.clone(),
                    ));
                }
            }
            for (path, ctx, target, place, from, ws, opos) in specs {
                let Some(target) = target else { continue };
                let norm = if path.len() > 1 {
                    path.trim_end_matches('/').to_string()
                } else {
                    path.clone()
                };
                let mut target = Some(target);
                for h in &hosts {
                    let key = (h.clone(), norm.clone());
                    if let Some(prev) = seen.get(&key) {
                        let prev = prev.clone();
                        self.note(place, &s.pos, "server_name", format!("{h} {norm} is served by the {prev} already (nginx uses the first one too, or serves it on another port: Switchyard routes serve every listener)"));
                        continue;
                    }
                    seen.insert(key, from.clone());
                    let t = match target.take() {
                        Some(t) => t,
                        None => self.target_again(&routes, &norm),
                    };
                    routes.push(RouteSpec {
                        host: h.clone(),
                        path: norm.clone(),
                        redirect_https: redirect_hosts.contains_key(h) || s.https_if.is_some(),
                        target: t,
                        ctx: ctx.clone(),
                        websocket: ws,
                        place,
                        server_place: Place::Server(s.id),
                        origin: format!("{origin}, {from}"),
                        origin_pos: opos.clone(),
                    });
                }
            }
        }
        // Hosts that only redirect to HTTPS and are served nowhere else.
        for (h, code) in &redirect_hosts {
            if !routes.iter().any(|r| &r.host == h) {
                routes.push(RouteSpec {
                    host: h.clone(),
                    path: "/".into(),
                    target: Target::Redirect {
                        to: "https://$host$request_uri".into(),
                        code: *code,
                    },
                    ctx: self.http.clone(),
                    websocket: false,
                    redirect_https: false,
                    place: Place::Defaults,
                    server_place: Place::Defaults,
                    origin: "a server that redirects to HTTPS".into(),
                    origin_pos: self.servers.first().map(|s| s.pos.clone()).unwrap_or(Pos {
                        file: "nginx".into(),
                        line: 1,
                        col: 1,
                    }),
                });
            }
        }
        let redirect_code = redirect_hosts
            .values()
            .next()
            .copied()
            .or_else(|| self.servers.iter().find_map(|s| s.https_if));

        // [server]
        let mut server = Block::new("[server]");
        for l in std::mem::take(&mut self.server_lines) {
            server.kv(l);
        }
        if !self.access_log_done {
            server.kv(Line::new("access_log", string("stdout"))
                .from("nginx's default access log (logs/access.log) as combined lines on stdout"));
            server.kv(Line::new("access_log_format", string("combined")));
        }
        self.comments(&mut server, Place::Top);
        doc.push(server);

        // Listeners.
        for (addr, l) in &listeners {
            let mut b = Block::new("[[listeners]]");
            let port = addr.rsplit(':').next().unwrap_or("");
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
            let at = match host {
                "0.0.0.0" => String::new(),
                "[::]" => "_v6".to_string(),
                h => format!(
                    "_{}",
                    ident(h.trim_start_matches('[').trim_end_matches(']'))
                ),
            };
            let kind = if l.tls { "https" } else { "http" };
            b.kv(Line::new("name", string(&format!("{kind}_{port}{at}"))));
            b.kv(Line::new("address", string(addr)).from(format!(
                "listen {}",
                self.servers
                    .iter()
                    .find(|s| s.listens.iter().any(|x| &x.address == addr))
                    .map(|s| s.pos.to_string())
                    .unwrap_or_default()
            )));
            if l.tls {
                b.kv(Line::new("tls", "true".into()));
                b.kv(Line::new("h2", l.h2.to_string()).from(if l.h2 {
                    "listen ... http2"
                } else {
                    "nginx offers HTTP/2 only with http2"
                }));
            } else if l.h2 {
                b.kv(Line::new("h2c", "true".into()).from("listen ... http2 without ssl"));
            }
            if let Some((code, port)) = listener_redirect.get(addr) {
                b.kv(Line::new("redirect_https", "true".into()).from(
                    "every server on this address answers return ... https://$host$request_uri",
                ));
                b.kv(Line::new("redirect_code", code.to_string()));
                if *port != 443 {
                    b.kv(Line::new("https_port", port.to_string()));
                }
            } else if !l.tls {
                if let Some(code) = redirect_code {
                    b.kv(Line::new("redirect_code", code.to_string())
                        .from("the status of the HTTPS redirects of routes"));
                }
            }
            if l.proxy_protocol {
                b.kv(Line::new("proxy_protocol", "true".into()).from("listen ... proxy_protocol"));
            }
            doc.push(b);
        }

        // Certificates.
        self.certificates(&mut doc, &listeners);

        // [tls]
        if !self.tls_lines.is_empty() && listeners.values().any(|l| l.tls) {
            let mut b = Block::new("[tls]");
            if !self.tls_done.contains("ocsp_stapling") {
                b.kv(Line::new("ocsp_stapling", "false".into())
                    .from("nginx staples only with ssl_stapling on"));
            }
            for l in std::mem::take(&mut self.tls_lines) {
                b.kv(l);
            }
            doc.push(b);
        }

        // [limits]
        let zones = self.zones(&routes);
        let mut limits = Block::new("[limits]");
        if !self.trusted.is_empty() {
            let list: Vec<String> = self.trusted.iter().map(|(t, _)| t.clone()).collect();
            let pos = self.trusted[0].1.clone();
            limits.kv(Line::new("trusted_proxies", strings(&list))
                .from(format!("set_real_ip_from {pos}"))
                .droppable(Self::drop_as(&pos, "set_real_ip_from")));
            match &self.real_ip_header {
                Some((h, _))
                    if h.eq_ignore_ascii_case("x-forwarded-for") || h == "proxy_protocol" => {}
                Some((h, p)) => {
                    let p = p.clone();
                    let h = h.clone();
                    self.not_carried_pos(Place::Defaults, &p, "real_ip_header", format!("Switchyard reads the client address from X-Forwarded-For (or the PROXY protocol), not {h}"));
                }
                None => {
                    let p = pos.clone();
                    self.note(Place::Defaults, &p, "set_real_ip_from", "without real_ip_header nginx reads X-Real-IP; Switchyard reads X-Forwarded-For");
                }
            }
        }
        for l in std::mem::take(&mut self.limits_lines) {
            limits.kv(l);
        }
        if !limits.is_empty() {
            doc.push(limits);
        }
        for (name, lines) in &zones {
            let mut b = Block::new(format!("[limits.zones.{}]", toml_out::key(name)));
            for l in lines {
                b.kv(l.clone());
            }
            doc.push(b);
        }

        // [defaults]
        let defaults = self.defaults();
        let mut d = Block::new("[defaults]");
        d.comment("nginx's defaults where they differ from Switchyard's, then the http {} level");
        for (k, (v, from)) in &defaults {
            d.kv(Line::new(k, v.clone()).from(from.clone()));
        }
        self.comments(&mut d, Place::Defaults);
        doc.push(d);

        // Routes.
        let defaults_block = doc.blocks.len() - 1;
        let mut commented: BTreeSet<Place> = BTreeSet::new();
        let mut first_route: BTreeMap<Place, usize> = BTreeMap::new();
        for r in &routes {
            first_route
                .entry(r.server_place)
                .or_insert(doc.blocks.len());
            let b = self.route(r, &defaults, &zones, &mut commented);
            for block in b {
                doc.push(block);
            }
        }
        // Findings of locations and servers that became no route: at their server's first route.
        let mut seen = BTreeSet::new();
        for (place, f) in self.placed.clone() {
            let server = match place {
                Place::Location(id) => self.loc_server.get(&id).map(|s| Place::Server(*s)),
                Place::Server(_) => Some(place),
                _ => None,
            };
            let Some(server) = server else { continue };
            if commented.contains(&place) || !seen.insert(f.comment()) {
                continue;
            }
            let at = first_route.get(&server).copied().unwrap_or(defaults_block);
            doc.blocks[at].comment(f.comment());
        }

        // Services.
        let ups = self.upstreams.clone();
        for (name, up) in &ups {
            if !up.used {
                self.placed.push((
                    Place::Upstream(up.id),
                    Finding {
                        file: up.pos.file.to_string(),
                        line: up.pos.line,
                        directive: "upstream".into(),
                        message: format!("{name} is used by no proxy_pass: left out"),
                        severity: Severity::Note,
                    },
                ));
                continue;
            }
            let svc = ident(name);
            let mut b = Block::new(format!("[services.{svc}]"));
            b.comment(format!("upstream {name} at {}", up.pos));
            if up.least_conn {
                b.kv(Line::new("balance", string("least_conn")).from("least_conn"));
            }
            let first = &up.servers[0];
            b.kv(Line::new(
                "passive",
                inline([
                    ("max_fails".into(), first.max_fails.to_string()),
                    ("fail_timeout".into(), string(&first.fail_timeout)),
                ]),
            )
            .from(format!(
                "max_fails/fail_timeout of {} (nginx's defaults: 1 and 10s)",
                first.pos
            )));
            if up
                .servers
                .iter()
                .any(|s| s.max_fails != first.max_fails || s.fail_timeout != first.fail_timeout)
            {
                self.note(Place::Upstream(up.id), &up.pos, "server", "servers with different max_fails/fail_timeout: Switchyard has one setting per service, the first server's is kept");
            }
            let mut upstream = Vec::new();
            // nginx closes an idle connection at once after `keepalive_timeout 0`: no reuse,
            // which Switchyard writes as keepalive = 0 (it takes no zero idle time).
            let no_idle = up
                .keepalive_timeout
                .as_deref()
                .and_then(values::duration_ms)
                == Some(0);
            if no_idle {
                self.note(
                    Place::Upstream(up.id),
                    &up.pos,
                    "keepalive_timeout",
                    "0 keeps no idle connection: written as keepalive = 0 (no reuse)",
                );
                upstream.push(("keepalive".to_string(), "0".to_string()));
            } else {
                if let Some(k) = up.keepalive {
                    upstream.push(("keepalive".to_string(), k.to_string()));
                }
                if let Some(t) = &up.keepalive_timeout {
                    upstream.push(("keepalive_timeout".to_string(), string(t)));
                }
            }
            if let Some(m) = up.servers.iter().find_map(|s| s.max_conns) {
                upstream.push(("max_conns".to_string(), m.to_string()));
            }
            if !upstream.is_empty() {
                b.kv(Line::new("upstream", inline(upstream)).from("keepalive / max_conns"));
            }
            self.comments(&mut b, Place::Upstream(up.id));
            doc.push(b);
            let mut p = Block::new(format!("[services.{svc}.pools.main]"));
            if up.tls {
                p.kv(Line::new("tls", "true".into()).from("proxy_pass https://"));
            }
            let servers: Vec<String> = up
                .servers
                .iter()
                .map(|s| {
                    if s.weight == 1 && !s.backup {
                        string(&s.address)
                    } else {
                        let mut t = vec![("address".to_string(), string(&s.address))];
                        if s.weight != 1 {
                            t.push(("weight".into(), s.weight.to_string()));
                        }
                        if s.backup {
                            t.push(("backup".into(), "true".into()));
                        }
                        inline(t)
                    }
                })
                .collect();
            p.kv(Line::new("servers", toml_out::array(servers))
                .from(format!("server lines of {}", up.pos)));
            doc.push(p);
        }
        doc
    }

    fn not_carried_pos(
        &mut self,
        place: Place,
        pos: &Pos,
        directive: &str,
        why: impl Into<String>,
    ) {
        self.find(place, pos, directive, why, Severity::NotCarried);
    }

    fn comments(&mut self, b: &mut Block, place: Place) {
        let mut seen = BTreeSet::new();
        for (p, f) in &self.placed {
            if *p == place && seen.insert(f.comment()) {
                b.comment(f.comment());
            }
        }
    }

    /// The Switchyard hosts of a server: its names, and `*` when it is a default server.
    fn hosts(&self, s: &Server) -> Vec<String> {
        let mut out = Vec::new();
        for (n, _) in &s.names {
            let plain = n.trim_start_matches("*.").trim_start_matches('.');
            if plain.is_empty()
                || n == "_"
                || !plain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                || plain.starts_with('.')
                || plain.ends_with('.')
                || plain.contains("..")
            {
                continue;
            }
            if let Some(apex) = n.strip_prefix('.') {
                out.push(apex.to_string());
                out.push(format!("*.{apex}"));
            } else {
                out.push(n.clone());
            }
        }
        // nginx's default server of an address (marked, else the first there) answers the hosts
        // no server names; once the routes are made, only the one catch-all server.
        let default = match self.catch_all {
            Some(id) => id == s.id,
            None => s
                .listens
                .iter()
                .any(|l| l.default || self.listen_default_of(&l.address) == Some(s.id)),
        };
        if default {
            out.push("*".into());
        }
        out.dedup();
        out
    }

    fn redirect_to(&mut self, r: &Return, s: &Server, place: Place) -> Option<String> {
        let url = r.url.as_deref()?;
        let first = s
            .names
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| !n.is_empty() && *n != "_" && !n.starts_with('~') && !n.contains('*'));
        match values::template(url, first) {
            Ok(t) => Some(t),
            Err(v) => {
                self.not_carried_pos(
                    place,
                    &r.pos,
                    "return",
                    format!("the variable {v} has no equivalent in a Switchyard redirect"),
                );
                None
            }
        }
    }

    fn websocket(&self, ctx: &Ctx) -> bool {
        ctx.proxy_headers.iter().flatten().any(|(n, v, _)| {
            n.eq_ignore_ascii_case("upgrade") && v == "$http_upgrade"
                || n.eq_ignore_ascii_case("connection")
                    && (v.eq_ignore_ascii_case("upgrade")
                        || matches!(
                            self.maps.get(v.trim_start_matches('$')),
                            Some(MapKind::Websocket)
                        ))
        })
    }

    /// What a location does: proxy, redirect or static files.
    fn target(&mut self, l: &Loc, s: &Server) -> Option<Target> {
        let place = Place::Location(l.id);
        if let Some(r) = &l.ret {
            let to = self.redirect_to(r, s, place)?;
            return Some(Target::Redirect { to, code: r.code });
        }
        if let Some((url, pos)) = &l.proxy_pass {
            let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
                ("http", r)
            } else if let Some(r) = url.strip_prefix("https://") {
                ("https", r)
            } else {
                self.not_carried_pos(
                    place,
                    pos,
                    "proxy_pass",
                    format!("{url}: only http:// and https:// upstreams"),
                );
                return None;
            };
            if rest.contains('$') {
                self.not_carried_pos(
                    place,
                    pos,
                    "proxy_pass",
                    "an upstream chosen by variables has no equivalent",
                );
                return None;
            }
            let (authority, uri) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let strip = match uri {
                "" => false,
                "/" => true,
                u if u.trim_end_matches('/') == l.path.trim_end_matches('/') => false,
                u => {
                    self.not_carried_pos(place, pos, "proxy_pass", format!("the URI part {u} would replace {}: Switchyard can strip the route's path (proxy_pass with `/`) but not put another in its place", l.path));
                    return None;
                }
            };
            if strip && l.path.ends_with('/') != uri.ends_with('/') {
                self.note(
                    place,
                    pos,
                    "proxy_pass",
                    "strip_prefix keeps the slash after the prefix",
                );
            }
            let host_name = authority.split(':').next().unwrap_or(authority);
            let name = if self.upstreams.contains_key(authority) {
                authority.to_string()
            } else {
                let address = if authority.contains(':') && !authority.ends_with(']') {
                    authority.to_string()
                } else {
                    format!("{authority}:{}", if scheme == "https" { 443 } else { 80 })
                };
                if !valid_address(&address) {
                    self.not_carried_pos(
                        place,
                        pos,
                        "proxy_pass",
                        format!("{address:?} is not an address Switchyard can use"),
                    );
                    return None;
                }
                let name = ident(&address.replace(['.', ':'], "_"));
                let id = self.id();
                self.upstreams.entry(name.clone()).or_insert(Upstream {
                    id,
                    pos: pos.clone(),
                    servers: vec![UpServer {
                        address,
                        weight: 1,
                        max_fails: 1,
                        fail_timeout: "10s".into(),
                        backup: false,
                        max_conns: None,
                        pos: pos.clone(),
                    }],
                    least_conn: false,
                    keepalive: None,
                    keepalive_timeout: None,
                    tls: false,
                    used: false,
                });
                name
            };
            if let Some(up) = self.upstreams.get_mut(&name) {
                up.used = true;
                up.tls |= scheme == "https";
            }
            if scheme == "https" {
                self.note(place, pos, "proxy_pass", "nginx does not verify the upstream's certificate unless proxy_ssl_verify on; Switchyard does (give the pool a `ca`, or `verify = false`)");
            }
            let _ = host_name;
            return Some(Target::Service {
                name: ident(&name),
                host_header: authority.to_string(),
                strip,
            });
        }
        // Static files.
        let Some((root, rpos)) = &l.ctx.root else {
            self.not_carried_pos(
                place,
                &l.pos,
                "location",
                "no proxy_pass, return or root: nginx would serve its default html directory",
            );
            return None;
        };
        let _ = rpos;
        let mut fallback = None;
        if let Some((args, tpos)) = &l.ctx.try_files {
            let last = args.last().map(String::as_str).unwrap_or("");
            let firsts_ok = args[..args.len().saturating_sub(1)]
                .iter()
                .all(|a| a == "$uri" || a == "$uri/");
            if !firsts_ok || last.starts_with('@') {
                self.not_carried_pos(
                    place,
                    tpos,
                    "try_files",
                    format!(
                        "only `try_files $uri $uri/ /file` and `=404` are carried over, not {:?}",
                        args.join(" ")
                    ),
                );
            } else if last.starts_with('/') {
                fallback = Some(last.to_string());
            } else if last != "=404" {
                self.not_carried_pos(
                    place,
                    tpos,
                    "try_files",
                    format!("the last argument {last} has no equivalent"),
                );
            }
        }
        let index = l
            .ctx
            .index
            .as_ref()
            .map(|(i, _)| i.clone())
            .filter(|i| i != "index.html");
        // The extension locations beside this one (or inside it) are its cache rules.
        // An exact location for the fallback file (`location = /index.html` beside
        // `try_files ... /index.html`) that only sets headers: nginx's internal redirect lands
        // there, so its Cache-Control is the fallback's, a rule on the file's name.
        let mut cache: Vec<(String, String)> = fallback
            .as_deref()
            .and_then(|f| {
                let exact = s.locs.iter().find(|o| {
                    matches!(o.how, Match::Exact)
                        && o.path == f
                        && o.proxy_pass.is_none()
                        && o.ret.is_none()
                })?;
                let name = f.rsplit('/').next().filter(|n| !n.is_empty())?;
                Some((name.to_string(), cache_control(&exact.ctx)?))
            })
            .into_iter()
            .collect();
        // The extension locations beside this one (or inside it) are its cache rules.
        cache.extend(
            s.locs
                .iter()
                .filter(|o| o.path == l.path && matches!(o.how, Match::Extensions(_)))
                .flat_map(|o| o.cache.iter().map(|(e, c, _)| (ext_pattern(e), c.clone()))),
        );
        if let Some(c) = cache_control(&l.ctx) {
            cache.push(("*".to_string(), c));
        }
        Some(Target::Static {
            root: self.path(root),
            index,
            fallback,
            cache,
        })
    }

    fn target_again(&self, routes: &[RouteSpec], path: &str) -> Target {
        let prev = routes
            .iter()
            .rev()
            .find(|r| r.path == path)
            .map(|r| &r.target);
        match prev {
            Some(Target::Service {
                name,
                host_header,
                strip,
            }) => Target::Service {
                name: name.clone(),
                host_header: host_header.clone(),
                strip: *strip,
            },
            Some(Target::Static {
                root,
                index,
                fallback,
                cache,
            }) => Target::Static {
                root: root.clone(),
                index: index.clone(),
                fallback: fallback.clone(),
                cache: cache.clone(),
            },
            Some(Target::Redirect { to, code }) => Target::Redirect {
                to: to.clone(),
                code: *code,
            },
            None => Target::Redirect {
                to: "/".into(),
                code: 302,
            },
        }
    }

    /// nginx's defaults that differ from Switchyard's, overridden by the http level.
    fn defaults(&mut self) -> BTreeMap<String, (String, String)> {
        let h = self.http.clone();
        let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
        let dur = |v: &At<String>, default: &str, what: &str| -> (String, String) {
            match v {
                Some((d, p)) => (string(d), p.to_string()),
                None => (string(default), format!("nginx's default {what}")),
            }
        };
        out.insert(
            "connect_timeout".into(),
            dur(&h.connect_timeout, "60s", "proxy_connect_timeout"),
        );
        out.insert(
            "read_timeout".into(),
            dur(&h.read_timeout, "60s", "proxy_read_timeout"),
        );
        out.insert(
            "send_timeout".into(),
            dur(&h.send_timeout, "60s", "proxy_send_timeout"),
        );
        for (k, v) in [
            ("client_header_timeout", &h.client_header_timeout),
            ("client_body_timeout", &h.client_body_timeout),
            ("keepalive_timeout", &h.keepalive_timeout),
        ] {
            if let Some((d, p)) = v {
                out.insert(k.into(), (string(d), p.to_string()));
            }
        }
        out.insert(
            "max_body_size".into(),
            match &h.max_body {
                Some((n, p)) => (string(&values::size(*n)), p.to_string()),
                None => (string("1MB"), "nginx's default client_max_body_size".into()),
            },
        );
        out.insert(
            "websocket".into(),
            (
                "false".into(),
                "nginx forwards Upgrade only where proxy_set_header says so".into(),
            ),
        );
        out.insert("compression".into(), self.compression(&h, Place::Defaults));
        out.insert("retry".into(), self.retry(&h));
        out
    }

    fn compression(&mut self, ctx: &Ctx, place: Place) -> (String, String) {
        let on = ctx.gzip.as_ref().is_some_and(|(g, _)| *g);
        if !on {
            return ("false".into(), "nginx compresses only with gzip on".into());
        }
        let mut types = vec!["text/html".to_string()];
        if let Some((list, pos)) = &ctx.gzip_types {
            for t in list {
                let t = t.to_lowercase();
                if t == "*" {
                    types = Vec::new();
                    break;
                }
                let listable = t.starts_with("text/")
                    || t.starts_with("application/")
                    || t.starts_with("font/")
                    || t == "image/svg+xml";
                let token = |x: &str| {
                    !x.is_empty()
                        && x.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.' | b'_')
                        })
                };
                let well_formed = t
                    .split_once('/')
                    .is_some_and(|(a, b)| token(a) && (token(b) || b == "*"));
                if !well_formed {
                    let pos = pos.clone();
                    self.note(
                        place,
                        &pos,
                        "gzip_types",
                        format!("{t:?} is not a media type: left out"),
                    );
                    continue;
                }
                if !listable || crate::config::compression::never_compressed(&t) {
                    let pos = pos.clone();
                    self.note(
                        place,
                        &pos,
                        "gzip_types",
                        format!("{t}: Switchyard never compresses this type"),
                    );
                    continue;
                }
                if !types.contains(&t) {
                    types.push(t);
                }
            }
        }
        let mut table = Vec::new();
        if !types.is_empty() {
            table.push(("types".to_string(), strings(&types)));
        }
        table.push((
            "min_length".to_string(),
            ctx.gzip_min_length
                .as_ref()
                .map(|(n, _)| *n)
                .unwrap_or(20)
                .to_string(),
        ));
        table.push((
            "level".to_string(),
            ctx.gzip_level
                .as_ref()
                .map(|(n, _)| *n)
                .unwrap_or(1)
                .to_string(),
        ));
        let from = ctx
            .gzip
            .as_ref()
            .map(|(_, p)| format!("gzip on at {p}"))
            .unwrap_or_default();
        (inline(table), from)
    }

    fn retry(&self, ctx: &Ctx) -> (String, String) {
        let on = ctx
            .retry_on
            .as_ref()
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| vec!["error".into(), "timeout".into()]);
        let mut t = vec![("on".to_string(), strings(&on))];
        if let Some((n, _)) = &ctx.retry_tries {
            t.push(("tries".into(), n.to_string()));
        }
        if let Some((d, _)) = &ctx.retry_timeout {
            t.push(("timeout".into(), string(d)));
        }
        let from = ctx
            .retry_on
            .as_ref()
            .map(|(_, p)| format!("proxy_next_upstream at {p}"))
            .unwrap_or_else(|| "nginx's default proxy_next_upstream error timeout".into());
        (inline(t), from)
    }

    /// Zones by usage: one Switchyard zone per nginx zone and burst (burst is the zone's in Switchyard).
    fn zones(&mut self, routes: &[RouteSpec]) -> BTreeMap<String, Vec<Line>> {
        let mut out: BTreeMap<String, Vec<Line>> = BTreeMap::new();
        let mut names: BTreeMap<(String, u32, u16), String> = BTreeMap::new();
        for r in routes {
            for lr in r.ctx.limit_req.iter().flatten() {
                let status = r.ctx.req_status.unwrap_or(503);
                self.zone_name(
                    &mut out, &mut names, &lr.zone, lr.burst, status, &lr.pos, r.place, true,
                    lr.nodelay,
                );
            }
            for (z, n, pos) in r.ctx.limit_conn.iter().flatten() {
                let status = r.ctx.conn_status.unwrap_or(503);
                self.zone_name(
                    &mut out, &mut names, z, *n, status, pos, r.place, false, true,
                );
            }
        }
        self.zone_names = names;
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn zone_name(
        &mut self,
        out: &mut BTreeMap<String, Vec<Line>>,
        names: &mut BTreeMap<(String, u32, u16), String>,
        zone: &str,
        n: u32,
        status: u16,
        pos: &Pos,
        place: Place,
        req: bool,
        nodelay: bool,
    ) {
        let key = (
            format!("{}{zone}", if req { "req:" } else { "conn:" }),
            n,
            status,
        );
        if names.contains_key(&key) {
            return;
        }
        let def = if req {
            self.req_zones.get(zone)
        } else {
            self.conn_zones.get(zone)
        }
        .cloned();
        let Some(def) = def else {
            self.not_carried_pos(
                place,
                pos,
                if req { "limit_req" } else { "limit_conn" },
                format!("no zone {zone:?} defined"),
            );
            return;
        };
        let base = ident(zone);
        let taken = |s: &str| out.contains_key(s);
        let name = if !taken(&base) {
            base.clone()
        } else {
            let mut i = 2;
            loop {
                let cand = format!("{base}_{}{n}", if req { "burst" } else { "max" });
                let cand = if taken(&cand) {
                    format!("{cand}_{i}")
                } else {
                    cand
                };
                if !taken(&cand) {
                    break cand;
                }
                i += 1;
            }
        };
        if name != base {
            self.note(place, pos, if req { "limit_req" } else { "limit_conn" }, format!("zone {zone} used with another burst or status: Switchyard zone {name} of its own (its counters are not shared with {base})"));
        }
        if req && !nodelay {
            self.note(place, pos, "limit_req", "without nodelay nginx delays requests above the rate (up to the burst); Switchyard answers them at once and refuses past the burst");
        }
        let mut lines = Vec::new();
        if req {
            lines.push(
                Line::new("key", string(&def.key)).from(format!("limit_req_zone {}", def.pos)),
            );
            lines.push(
                Line::new("rate", string(def.rate.as_deref().unwrap_or("1r/s")))
                    .from(def.pos.to_string()),
            );
            lines.push(Line::new("burst", n.to_string()).from(format!("limit_req {pos}")));
        } else {
            lines.push(
                Line::new("kind", string("concurrency"))
                    .from(format!("limit_conn_zone {}", def.pos)),
            );
            lines.push(Line::new("key", string(&def.key)));
            lines.push(Line::new("max", n.max(1).to_string()).from(format!("limit_conn {pos}")));
        }
        lines.push(Line::new("status", status.to_string()).from(if req {
            "limit_req_status (nginx's default 503)"
        } else {
            "limit_conn_status (nginx's default 503)"
        }));
        out.insert(name.clone(), lines);
        names.insert(key, name);
    }
}

impl Conv {
    fn certificates(&mut self, doc: &mut Doc, listeners: &BTreeMap<String, Listen>) {
        let mut by_cert: Vec<(String, String, Pos, Vec<String>, bool)> = Vec::new();
        let mut named: BTreeSet<String> = BTreeSet::new();
        let mut fallback_done = false;
        let servers = self.servers.clone();
        for s in &servers {
            let tls_listens: Vec<&Listen> = s
                .listens
                .iter()
                .filter(|l| listeners.get(&l.address).is_some_and(|x| x.tls))
                .collect();
            if tls_listens.is_empty() {
                continue;
            }
            let certs = s.ctx.ssl_certs.clone().unwrap_or_default();
            let keys = s.ctx.ssl_keys.clone().unwrap_or_default();
            let Some((cert, cpos)) = certs.first() else {
                self.note(Place::Server(s.id), &s.pos, "ssl_certificate", "a TLS server without ssl_certificate: Switchyard's fallback certificate answers for it");
                continue;
            };
            if cert.contains('$') {
                self.not_carried_pos(
                    Place::Server(s.id),
                    cpos,
                    "ssl_certificate",
                    "a certificate chosen by variables has no equivalent",
                );
                continue;
            }
            for (extra, p) in certs.iter().skip(1) {
                self.not_carried_pos(Place::Server(s.id), p, "ssl_certificate", format!("{extra}: Switchyard serves one certificate per name (the first one is kept)"));
            }
            let key = keys
                .first()
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| cert.clone());
            let hosts = self.hosts(s);
            let default = hosts.iter().any(|h| h == "*")
                || tls_listens
                    .iter()
                    .any(|l| self.listen_default_of(&l.address) == Some(s.id));
            let mut names: Vec<String> = Vec::new();
            for h in hosts.into_iter().filter(|h| h != "*") {
                if named.insert(h.clone()) {
                    names.push(h);
                }
            }
            match by_cert.iter_mut().find(|(c, ..)| c == cert) {
                Some(e) => {
                    e.3.extend(names);
                    e.4 |= default && !fallback_done;
                }
                None => by_cert.push((
                    cert.clone(),
                    key,
                    cpos.clone(),
                    names,
                    default && !fallback_done,
                )),
            }
            fallback_done |= default;
        }
        for (cert, key, pos, names, fallback) in by_cert {
            if names.is_empty() && !fallback {
                continue;
            }
            let mut b = Block::new("[[certificates]]");
            b.drop_as = Some(Self::drop_as(&pos, "ssl_certificate"));
            let cert_path = self.path(&cert);
            let key_path = self.path(&key);
            let mut line = Line::new("cert", string(&cert_path.display().to_string()))
                .from(format!("ssl_certificate {pos}"));
            if !cert_path.is_file() {
                line.missing_file = Some(cert_path.clone());
                self.note(
                    Place::Defaults,
                    &pos,
                    "ssl_certificate",
                    format!(
                        "{} is not on this machine: `switchyard check` needs it",
                        cert_path.display()
                    ),
                );
            }
            b.kv(line);
            let mut line = Line::new("key", string(&key_path.display().to_string()))
                .from("ssl_certificate_key");
            if !key_path.is_file() {
                line.missing_file = Some(key_path.clone());
            }
            b.kv(line);
            if !names.is_empty() {
                b.kv(Line::new("names", strings(&names))
                    .from("the server_name of the servers that use it, as nginx picks it"));
            }
            if fallback {
                b.kv(Line::new("fallback", "true".into())
                    .from("the default server's certificate answers unknown names"));
            }
            doc.push(b);
        }
    }

    fn route(
        &mut self,
        r: &RouteSpec,
        defaults: &BTreeMap<String, (String, String)>,
        _zones: &BTreeMap<String, Vec<Line>>,
        commented: &mut BTreeSet<Place>,
    ) -> Vec<Block> {
        let mut b = Block::new("[[routes]]");
        let group = self.id();
        b.group = Some(group);
        b.drop_as = Some(Finding {
            message: format!("the route {} {}", r.host, r.path),
            ..Self::drop_as(&r.origin_pos, "location")
        });
        b.comment(r.origin.clone());
        b.kv(Line::new("host", string(&r.host)));
        b.kv(Line::new("path", string(&r.path)));
        let ctx = r.ctx.clone();
        let place = r.place;
        let mut host_header = None;
        match &r.target {
            Target::Service {
                name,
                host_header: hh,
                strip,
            } => {
                if *strip {
                    b.kv(Line::new("strip_prefix", "true".into())
                        .from("proxy_pass with a URI part `/`"));
                }
                b.kv(Line::new("service", string(name)).from("proxy_pass"));
                host_header = Some(hh.clone());
            }
            Target::Static {
                root,
                index,
                fallback,
                cache,
            } => {
                let mut t = vec![("root".to_string(), string(&root.display().to_string()))];
                if let Some(i) = index {
                    t.push(("index".into(), string(i)));
                }
                if let Some(f) = fallback {
                    t.push(("fallback".into(), string(f)));
                }
                if !cache.is_empty() {
                    let rules: Vec<String> = cache
                        .iter()
                        .map(|(m, control)| {
                            inline([
                                ("match".to_string(), string(m)),
                                ("control".to_string(), string(control)),
                            ])
                        })
                        .collect();
                    t.push(("cache".into(), toml_out::array(rules)));
                }
                let mut line =
                    Line::new("static", inline(t)).from("root / index / try_files / expires");
                if !root.is_dir() {
                    line.missing_file = Some(root.clone());
                    let pos = ctx.root.as_ref().map(|(_, p)| p.clone());
                    if let Some(p) = pos {
                        self.note(place, &p, "root", format!("{} is not a directory on this machine: `switchyard check` needs it", root.display()));
                    }
                }
                b.kv(line);
            }
            Target::Redirect { to, code } => {
                b.kv(Line::new(
                    "redirect",
                    inline([
                        ("to".to_string(), literal(to)),
                        ("code".to_string(), code.to_string()),
                    ]),
                )
                .from("return"));
            }
        }
        let proxied = matches!(r.target, Target::Service { .. });
        // Options that differ from [defaults].
        let opt = |b: &mut Block, key: &str, v: String, from: String, drop: Option<Finding>| {
            if defaults.get(key).map(|(d, _)| d) != Some(&v) {
                let mut l = Line::new(key, v).from(from);
                if let Some(f) = drop {
                    l = l.droppable(f);
                }
                b.kv(l);
            }
        };
        for (key, v) in [
            ("connect_timeout", &ctx.connect_timeout),
            ("read_timeout", &ctx.read_timeout),
            ("send_timeout", &ctx.send_timeout),
            ("client_header_timeout", &ctx.client_header_timeout),
            ("client_body_timeout", &ctx.client_body_timeout),
            ("keepalive_timeout", &ctx.keepalive_timeout),
        ] {
            if let Some((d, p)) = v {
                opt(&mut b, key, string(d), p.to_string(), None);
            }
        }
        if let Some((n, p)) = &ctx.max_body {
            opt(
                &mut b,
                "max_body_size",
                string(&values::size(*n)),
                format!("client_max_body_size {p}"),
                None,
            );
        }
        let (comp, from) = self.compression(&ctx, place);
        opt(&mut b, "compression", comp, from, None);
        let (retry, from) = self.retry(&ctx);
        opt(&mut b, "retry", retry, from, None);
        if r.websocket {
            b.kv(Line::new("websocket", "true".into()).from("proxy_set_header Upgrade/Connection"));
        }
        if r.redirect_https {
            b.kv(Line::new("redirect_https", "true".into())
                .from("a plain-HTTP server redirects this host to https://$host$request_uri"));
        }
        if let Some((true, p)) = &ctx.access_log_off {
            b.kv(Line::new("access_log", "false".into()).from(format!("access_log off {p}")));
        }
        let mut zones = Vec::new();
        for lr in ctx.limit_req.iter().flatten() {
            let key = (
                format!("req:{}", lr.zone),
                lr.burst,
                ctx.req_status.unwrap_or(503),
            );
            if let Some(n) = self.zone_names.get(&key) {
                zones.push((n.clone(), lr.pos.clone()));
            }
        }
        for (z, n, pos) in ctx.limit_conn.iter().flatten() {
            let key = (format!("conn:{z}"), *n, ctx.conn_status.unwrap_or(503));
            if let Some(name) = self.zone_names.get(&key) {
                zones.push((name.clone(), pos.clone()));
            }
        }
        if !zones.is_empty() {
            let from: Vec<String> = zones.iter().map(|(_, p)| p.to_string()).collect();
            b.kv(Line::new("limits", strings(zones.iter().map(|(n, _)| n)))
                .from(format!("limit_req / limit_conn {}", from.join(", "))));
        }
        if let Some(rules) = ctx.access.as_ref().filter(|r| !r.is_empty()) {
            let list: Vec<String> = rules.iter().map(|(r, _)| r.clone()).collect();
            let pos = rules[0].1.clone();
            b.kv(Line::new("access", strings(&list))
                .from(format!("allow / deny {pos}"))
                .droppable(Self::drop_as(&pos, "allow/deny")));
        }
        if let Some((Some(realm), pos)) = &ctx.auth_basic {
            match &ctx.auth_file {
                Some((file, fpos)) => {
                    let path = self.path(file);
                    let mut line = Line::new(
                        "basic_auth",
                        inline([
                            ("realm".to_string(), literal(realm)),
                            ("file".to_string(), string(&path.display().to_string())),
                        ]),
                    )
                    .from(format!("auth_basic {pos}, auth_basic_user_file {fpos}"))
                    .droppable(Self::drop_as(pos, "auth_basic"));
                    if !path.is_file() {
                        line.missing_file = Some(path.clone());
                        line.drop_as = None;
                        self.note(
                            place,
                            fpos,
                            "auth_basic_user_file",
                            format!(
                                "{} is not on this machine: `switchyard check` needs it",
                                path.display()
                            ),
                        );
                    }
                    b.kv(line);
                }
                None => self.not_carried_pos(place, pos, "auth_basic", "no auth_basic_user_file"),
            }
        }
        for p in [r.server_place, r.place] {
            if commented.insert(p) {
                self.comments(&mut b, p);
            }
        }
        let mut blocks = vec![b];
        let grouped = |mut x: Block| {
            x.group = Some(group);
            x
        };
        // Response headers.
        let static_site = matches!(r.target, Target::Static { .. });
        let mut rh = Block::new("[routes.response_headers]");
        let first_name = None;
        for h in ctx.add_headers.iter().flatten() {
            if static_site && h.name.eq_ignore_ascii_case("cache-control") {
                continue;
            }
            match values::template(&h.value, first_name) {
                Ok(v) => {
                    rh.kv(Line::new(&h.name, literal(&v))
                        .from(format!(
                            "add_header {}{}",
                            h.pos,
                            if h.always { " always" } else { "" }
                        ))
                        .droppable(Self::drop_as(&h.pos, "add_header")));
                    if !h.always && commented.insert(Place::Top) {
                        // Said once: the difference is the same everywhere.
                        self.note(place, &h.pos, "add_header", "without `always` nginx adds the header to 2xx and 3xx answers only; Switchyard sets it on every answer");
                    }
                }
                Err(var) => self.not_carried_pos(
                    place,
                    &h.pos,
                    "add_header",
                    format!("{}: the variable {var} has no equivalent", h.name),
                ),
            }
        }
        if !rh.is_empty() {
            blocks.push(grouped(rh));
        }
        if let Some(hide) = ctx.hide_headers.as_ref().filter(|h| !h.is_empty()) {
            let names: Vec<String> = hide.iter().map(|(n, _)| n.clone()).collect();
            blocks[0].kv(Line::new("response_headers_remove", strings(&names))
                .from(format!("proxy_hide_header {}", hide[0].1))
                .droppable(Self::drop_as(&hide[0].1, "proxy_hide_header")));
        }
        if proxied {
            let mut set = Block::new("[routes.request_headers.set]");
            let mut remove = Vec::new();
            let mut host_set = false;
            for (name, value, pos) in ctx.proxy_headers.iter().flatten() {
                let lname = name.to_ascii_lowercase();
                let builtin = matches!(
                    (lname.as_str(), value.as_str()),
                    ("x-forwarded-for", "$proxy_add_x_forwarded_for")
                        | ("x-real-ip", "$remote_addr")
                        | ("x-forwarded-proto", "$scheme")
                        | ("x-forwarded-host", "$host")
                        | ("host", "$http_host")
                        | ("upgrade", "$http_upgrade")
                        | ("connection", "")
                ) || lname == "connection"
                    && self.websocket(&Ctx {
                        proxy_headers: Some(vec![(name.clone(), value.clone(), pos.clone())]),
                        ..Ctx::default()
                    });
                if lname == "host" {
                    host_set = true;
                }
                if builtin {
                    continue;
                }
                if value.is_empty() {
                    remove.push((name.clone(), pos.clone()));
                    continue;
                }
                let value = match self.maps.get(value.trim_start_matches('$')) {
                    Some(MapKind::Constant(c)) if value.starts_with('$') => c.clone(),
                    _ => value.clone(),
                };
                match values::template(&value, None) {
                    Ok(v) => set.kv(Line::new(name, literal(&v))
                        .from(format!("proxy_set_header {pos}"))
                        .droppable(Self::drop_as(pos, "proxy_set_header"))),
                    Err(var) => self.not_carried_pos(
                        place,
                        pos,
                        "proxy_set_header",
                        format!("{name}: the variable {var} has no equivalent"),
                    ),
                }
            }
            if !host_set {
                if let Some(h) = host_header {
                    let h = h.strip_suffix(":80").unwrap_or(&h).to_string();
                    set.kv(Line::new("Host", literal(&h)).from("nginx sends the proxy_pass host ($proxy_host) unless proxy_set_header Host"));
                }
            }
            if !remove.is_empty() {
                let mut rb = Block::new("[routes.request_headers]");
                rb.kv(Line::new("remove", strings(remove.iter().map(|(n, _)| n)))
                    .from("proxy_set_header NAME \"\"")
                    .droppable(Self::drop_as(&remove[0].1, "proxy_set_header")));
                blocks.push(grouped(rb));
            }
            if !set.is_empty() {
                blocks.push(grouped(set));
            }
        }
        blocks
    }
}

/// Whether two `server` addresses name the same server as validation counts it: the scheme apart,
/// a DNS name compared without its case (`Backend:80` and `backend:80` are one server).
fn same_server(a: &str, b: &str) -> bool {
    use crate::config::{transport::split_scheme, ServerAddress};
    let (scheme_a, rest_a) = split_scheme(a);
    let (scheme_b, rest_b) = split_scheme(b);
    match (ServerAddress::parse(&rest_a), ServerAddress::parse(&rest_b)) {
        (Ok(x), Ok(y)) => scheme_a == scheme_b && x == y,
        _ => a == b,
    }
}
