//! `switchyard ctl`: a small blocking client of the admin API for deploy scripts, with exit codes they can trust.
//
// Exit codes: 0 success; 1 the API refused or failed, or could not be reached (the reason goes to
// stderr); 2 usage errors (clap's own, an argument not in pool=N form, an unusable --admin URL).
// The client speaks plain HTTP/1.1 over one `TcpStream` per request with `Connection: close`: the
// admin API listens on loopback or a private address, and no TLS stack is pulled in for it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::backend::ChunkedDecoder;
use crate::config::values;

/// Where the admin API is unless --admin or SWITCHYARD_ADMIN say otherwise.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9900";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a reload of a large config.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `switch --wait-healthy` looks at the target pool.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Largest response accepted from the admin API.
const MAX_RESPONSE: u64 = 16 << 20;

/// Talk to a running Switchyard through its admin API: read services, set weights, switch
/// blue/green, reload.
///
/// Speaks plain HTTP only (no https://): point it at the admin listener on loopback or a private
/// network. Exit codes: 0 success; 1 refused or failed (the reason on stderr), including an
/// unreachable admin API; 2 usage errors.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of the admin API (plain http:// only).
    #[arg(long, global = true, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN_URL)]
    pub admin: String,
    /// Bearer token of the admin API.
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON response instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show services: each pool's weight, whether it is a runtime override or the config's
    /// weight, healthy servers out of all, and each server's health and requests in flight.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Set pool weights of a service, e.g. `weights api blue=90 green=10`. Pools not named keep
    /// their weight. The weights are runtime overrides: they win over the config file and
    /// survive restarts and reloads until `clear-weights`.
    Weights {
        /// The service, as named in the config.
        service: String,
        /// POOL=WEIGHT pairs; weights are integers from 0 to 1000000.
        #[arg(required = true, value_name = "POOL=WEIGHT", value_parser = parse_pool_weight)]
        weights: Vec<(String, u32)>,
        /// Only apply if the config generation is still N (as `status` shows); exit 1 if not.
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
    },
    /// Blue/green flip: POOL gets weight 100, every other pool of the service 0. Refused (exit 1)
    /// when POOL has no healthy server. Requests in flight on the old pool finish.
    Switch {
        /// The service, as named in the config.
        service: String,
        /// The pool to send all traffic to.
        pool: String,
        /// First wait up to this long (e.g. 60s, 2m) for POOL to have a healthy server, checking
        /// every 500ms; exit 1 if it never does.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait_healthy: Option<Duration>,
    },
    /// Re-read the config file, like SIGHUP. A rejected config keeps the old one serving; its
    /// errors are printed as file:line:col: reason (exit 1).
    Reload,
    /// Drop a service's runtime weight overrides: the config file's weights apply again.
    ClearWeights {
        /// The service, as named in the config.
        service: String,
    },
    /// List the ACME certificates: names, status (pending, valid, renewing, failing, expired),
    /// challenge, expiry, next order and issuer. With --renew NAME, order a new certificate for
    /// the one covering NAME now instead.
    Certs {
        /// Force the renewal of the certificate that covers this name.
        #[arg(long, value_name = "NAME")]
        renew: Option<String>,
    },
}

/// Why a ctl command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid admin URL \"{url}\": {reason}")]
    Url { url: String, reason: String },
    #[error("the token contains a line break or control character")]
    Token,
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("unexpected answer from the admin API at {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The API answered with an error: its message, and each config error of a rejected reload.
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        errors: Vec<String>,
    },
    #[error("{0}")]
    Refused(String),
}

impl CtlError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Url { .. } | CtlError::Token => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs one ctl command; prints the result on stdout, or the reason on stderr.
pub fn run(args: &CtlArgs) -> ExitCode {
    let result =
        Client::new(&args.admin, args.token.as_deref()).and_then(|client| execute(&client, args));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard ctl: {e}");
            if let CtlError::Api { errors, .. } = &e {
                for line in errors {
                    eprintln!("{line}");
                }
            }
            e.exit_code()
        }
    }
}

/// Carries out the command; returns what to print on success.
fn execute(client: &Client, args: &CtlArgs) -> Result<String, CtlError> {
    let (reply, summary) = match &args.command {
        CtlCommand::Status { service } => {
            let path = match service {
                Some(s) => service_path(s, ""),
                None => "/v1/services".to_string(),
            };
            let reply = client.call("GET", &path, None, None)?;
            let summary = status_table(&reply.value);
            (reply, summary)
        }
        CtlCommand::Weights {
            service,
            weights,
            if_match,
        } => {
            let map: BTreeMap<&str, u32> = weights.iter().map(|(p, w)| (p.as_str(), *w)).collect();
            let path = service_path(service, "/weights");
            let reply = client.call("PUT", &path, Some(&json!(map)), *if_match)?;
            let summary = format!("weights set: {}\n", weights_line(&reply.value));
            (reply, summary)
        }
        CtlCommand::Switch {
            service,
            pool,
            wait_healthy,
        } => {
            if let Some(limit) = wait_healthy {
                wait_healthy_pool(client, service, pool, *limit)?;
            }
            let path = service_path(service, "/switch");
            let reply = client.call("POST", &path, Some(&json!({ "to": pool })), None)?;
            let summary = format!("switched to \"{pool}\": {}\n", weights_line(&reply.value));
            (reply, summary)
        }
        CtlCommand::Reload => {
            let reply = client.call("POST", "/v1/reload", None, None)?;
            let summary = format!("reloaded (generation {})\n", reply.value["generation"]);
            (reply, summary)
        }
        CtlCommand::ClearWeights { service } => {
            let path = service_path(service, "/weights");
            let reply = client.call("DELETE", &path, None, None)?;
            let summary = format!(
                "overrides cleared, the config's weights apply: {}\n",
                weights_line(&reply.value)
            );
            (reply, summary)
        }
        CtlCommand::Certs { renew: Some(name) } => {
            let path = format!("/v1/certs/{}/renew", encode_segment(name));
            let reply = client.call("POST", &path, None, None)?;
            let summary = format!(
                "renewal of certificate \"{}\" requested; `switchyard ctl certs` shows its progress\n",
                str_of(&reply.value["certificate"])
            );
            (reply, summary)
        }
        CtlCommand::Certs { renew: None } => {
            let reply = client.call("GET", "/v1/certs", None, None)?;
            let summary = crate::acme::view::table(&reply.value);
            (reply, summary)
        }
    };
    if args.json {
        let mut text = String::from_utf8_lossy(&reply.body).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(text)
    } else {
        Ok(summary)
    }
}

/// Polls the service until `pool` has an available server, or `limit` passes.
fn wait_healthy_pool(
    client: &Client,
    service: &str,
    pool: &str,
    limit: Duration,
) -> Result<(), CtlError> {
    let deadline = Instant::now() + limit;
    let path = service_path(service, "");
    let mut announced = false;
    loop {
        let view = client.call("GET", &path, None, None)?.value;
        let found = view["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == pool));
        let Some(p) = found else {
            return Err(CtlError::Refused(format!(
                "service \"{service}\" has no pool \"{pool}\""
            )));
        };
        if p["healthy_servers"].as_u64().unwrap_or(0) > 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CtlError::Refused(format!(
                "pool \"{pool}\" of service \"{service}\" has no healthy server after waiting {}; not switched",
                humantime::format_duration(limit)
            )));
        }
        if !announced {
            eprintln!(
                "waiting up to {} for pool \"{pool}\" of service \"{service}\" to have a healthy server...",
                humantime::format_duration(limit)
            );
            announced = true;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// `service "api": blue=90 green=10 (generation 7)`
fn weights_line(view: &Value) -> String {
    let pools: Vec<String> = view["pools"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| format!("{}={}", str_of(&p["name"]), p["weight"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "service \"{}\": {} (generation {})",
        str_of(&view["name"]),
        pools.join(" "),
        view["generation"]
    )
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// The human view of `GET /v1/services` or `GET /v1/services/{s}`.
fn status_table(body: &Value) -> String {
    let services: Vec<&Value> = match body["services"].as_array() {
        Some(list) => list.iter().collect(),
        None => vec![body],
    };
    let mut out = String::new();
    for (i, svc) in services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "service \"{}\"  generation {}  balance {}\n",
            str_of(&svc["name"]),
            svc["generation"],
            str_of(&svc["balance"])
        ));
        out.push_str(&format!(
            "  {:<16} {:>7} {:>7} {:>8}\n",
            "POOL", "WEIGHT", "CONFIG", "HEALTHY"
        ));
        for pool in svc["pools"].as_array().into_iter().flatten() {
            let servers = pool["servers"].as_array().map_or(0, Vec::len);
            let overridden = pool["overridden"].as_bool().unwrap_or(false);
            out.push_str(&format!(
                "  {:<16} {:>7} {:>7} {:>8}{}\n",
                str_of(&pool["name"]),
                pool["weight"].to_string(),
                pool["config_weight"].to_string(),
                format!("{}/{servers}", pool["healthy_servers"]),
                if overridden { "  (override)" } else { "" }
            ));
            for s in pool["servers"].as_array().into_iter().flatten() {
                let health = if s["available"].as_bool().unwrap_or(false) {
                    "up"
                } else if s["ejected"].as_bool().unwrap_or(false) {
                    "ejected (passive check)"
                } else {
                    "down (health check)"
                };
                out.push_str(&format!(
                    "    {:<24} {:<24} in flight {}\n",
                    str_of(&s["address"]),
                    health,
                    s["in_flight"]
                ));
            }
        }
    }
    out
}

/// `/v1/services/{service}{suffix}` with the service name percent-encoded.
fn service_path(service: &str, suffix: &str) -> String {
    format!("/v1/services/{}{suffix}", encode_segment(service))
}

/// One path segment, percent-encoded.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// `blue=90` → `("blue", 90)`.
pub fn parse_pool_weight(arg: &str) -> Result<(String, u32), String> {
    let bad =
        || format!("expected POOL=WEIGHT with a whole number, such as blue=90; got \"{arg}\"");
    let (pool, weight) = arg.split_once('=').ok_or_else(bad)?;
    let pool = pool.trim();
    if pool.is_empty() {
        return Err(bad());
    }
    let weight: u32 = weight.trim().parse().map_err(|_| bad())?;
    Ok((pool.to_string(), weight))
}

/// `60s`, `500ms`, `2m`: the config file's duration syntax.
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    values::Duration::parse(arg).map(|d| d.0)
}

/// Where the admin API is: host, port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl AdminUrl {
    /// `http://host[:port][/prefix]`, or `host:port` alone.
    pub fn parse(url: &str) -> Result<AdminUrl, CtlError> {
        let bad = |reason: &str| CtlError::Url {
            url: url.into(),
            reason: reason.into(),
        };
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(bad("ctl speaks plain http only; use http://"));
        } else if url.contains("://") {
            return Err(bad("only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported; use --token"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None => 80,
        };
        if path.contains(['?', '#', ' ']) {
            return Err(bad("the URL may only have a path prefix"));
        }
        Ok(AdminUrl {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A blocking HTTP/1.1 client for the admin API; one connection per request.
struct Client {
    url: AdminUrl,
    /// The URL as given, for messages.
    display: String,
    token: Option<String>,
}

/// A successful answer: the JSON as parsed and the body as sent (for --json).
struct Reply {
    value: Value,
    body: Vec<u8>,
}

/// One response: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    fn new(url: &str, token: Option<&str>) -> Result<Client, CtlError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if token.is_some_and(|t| t.bytes().any(|b| b.is_ascii_control())) {
            return Err(CtlError::Token);
        }
        Ok(Client {
            url: AdminUrl::parse(url)?,
            display: url.to_string(),
            token: token.map(str::to_string),
        })
    }

    /// Sends a request and returns the JSON body of a 2xx answer; anything else is an error with
    /// the API's own message.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Reply, CtlError> {
        let answer = self.send(method, path, body, if_match)?;
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        if (200..300).contains(&answer.status) {
            let value = parsed.ok_or_else(|| self.protocol("the response body is not JSON"))?;
            return Ok(Reply {
                value,
                body: answer.body,
            });
        }
        let Some(err) = parsed.filter(|v| v["error"].is_string()) else {
            let text = String::from_utf8_lossy(&answer.body);
            return Err(CtlError::Api {
                status: answer.status,
                message: format!("the admin API answered {}: {}", answer.status, text.trim()),
                errors: Vec::new(),
            });
        };
        let mut message = str_of(&err["error"]).to_string();
        if answer.status == 401 {
            message.push_str(" (set --token or SWITCHYARD_TOKEN)");
        }
        let errors = err["errors"]
            .as_array()
            .map(|list| list.iter().map(|e| str_of(e).to_string()).collect())
            .unwrap_or_default();
        Err(CtlError::Api {
            status: answer.status,
            message,
            errors,
        })
    }

    fn protocol(&self, reason: &str) -> CtlError {
        CtlError::Protocol {
            url: self.display.clone(),
            reason: reason.into(),
        }
    }

    fn connect(&self) -> Result<TcpStream, CtlError> {
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.display.clone(),
            reason,
        };
        let addrs = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(unreachable(last.map_or_else(
            || "the host name has no address".to_string(),
            |e| e.to_string(),
        )))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Answer, CtlError> {
        let payload = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchyard-ctl/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.url.prefix,
            self.url.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(generation) = if_match {
            request.push_str(&format!("If-Match: \"{generation}\"\r\n"));
        }
        if body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        if method != "GET" {
            request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        }
        request.push_str("\r\n");

        let mut stream = self.connect()?;
        let io = |e: std::io::Error| CtlError::Unreachable {
            url: self.display.clone(),
            reason: e.to_string(),
        };
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut message = request.into_bytes();
        message.extend_from_slice(&payload);
        stream.write_all(&message).map_err(io)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(io)?;
        parse_response(&raw).map_err(|reason| self.protocol(reason))
    }
}

/// Parses a whole HTTP/1.1 response read until the server closed the connection.
fn parse_response(raw: &[u8]) -> Result<Answer, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the connection closed before a complete response")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the response head is not text")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP/1.x status line")?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        decoder
            .decode(rest, &mut body)
            .map_err(|_| "bad chunked body")?;
        if !decoder.is_done() {
            return Err("the chunked body ended early");
        }
        body
    } else if let Some(len) = content_length {
        rest.get(..len).ok_or("the body ended early")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pool_weights() {
        assert_eq!(parse_pool_weight("blue=90"), Ok(("blue".into(), 90)));
        assert_eq!(parse_pool_weight("green = 0"), Ok(("green".into(), 0)));
        for bad in ["blue", "=5", "blue=", "blue=-1", "blue=1.5", "blue=x"] {
            assert!(parse_pool_weight(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_admin_urls() {
        let url = |s: &str| AdminUrl::parse(s).expect(s);
        assert_eq!(
            url("http://127.0.0.1:9900"),
            AdminUrl {
                host: "127.0.0.1".into(),
                port: 9900,
                prefix: String::new()
            }
        );
        assert_eq!(
            url("http://admin.internal/switchyard/").prefix,
            "/switchyard"
        );
        assert_eq!(url("http://admin.internal").port, 80);
        assert_eq!(url("localhost:9901").port, 9901);
        let v6 = url("http://[::1]:9900");
        assert_eq!(
            (v6.host.as_str(), v6.authority()),
            ("::1", "[::1]:9900".into())
        );
        for bad in [
            "https://x:1",
            "ftp://x",
            "http://:9900",
            "http://x:port",
            "http://u@x:1",
        ] {
            assert!(AdminUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_responses() {
        let a =
            parse_response(b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}").expect("ok");
        assert_eq!((a.status, a.body.as_slice()), (409, &b"{}"[..]));
        let a = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(a.body, b"{}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn encodes_service_names() {
        assert_eq!(service_path("api", "/weights"), "/v1/services/api/weights");
        assert_eq!(service_path("a b/c", ""), "/v1/services/a%20b%2Fc");
    }

    #[test]
    fn status_table_marks_overrides() {
        let body = json!({"generation": 3, "services": [{
        "name": "demo", "generation": 3, "balance": "round_robin",
        "pools": [
            {"name": "blue", "weight": 50, "config_weight": 100, "overridden": true,
             "healthy_servers": 1, "servers": [{"address": "127.0.0.1:1", "available": true,
             "healthy": true, "ejected": false, "in_flight": 0, "weight": 1}]},
            {"name": "green", "weight": 0, "config_weight": 0, "overridden": false,
             "healthy_servers": 0, "servers": [{"address": "127.0.0.1:2", "available": false,
             "healthy": true, "ejected": true, "in_flight": 0, "weight": 1}]}
        ]}]});
        let table = status_table(&body);
        let blue = table
            .lines()
            .find(|l| l.contains("blue"))
            .expect("blue row");
        assert!(
            blue.contains("(override)") && blue.contains("1/1"),
            "{table}"
        );
        let green = table
            .lines()
            .find(|l| l.contains("green"))
            .expect("green row");
        assert!(
            !green.contains("(override)") && green.contains("0/1"),
            "{table}"
        );
        assert!(table.contains("ejected"), "{table}");
    }
}
