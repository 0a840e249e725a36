//! Loopback test harness: echo backends, the real `switchyard` binary as a child process, and clients.
//
// Each integration test file does `mod support;` and uses only part of this, hence the allow.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use echo::Backend;

/// Directory with the checked-in test CA and leaf certificates.
pub const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");

/// The proxy binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A `[server]` section for tests: one worker thread, fast shutdown, access log and upgrade socket
/// inside the proxy's temp dir. Put `{server}` in a template to get it.
pub const SERVER: &str = r#"[server]
threads = 1
drain_timeout = "1s"
access_log = "{tmp}/access.log"
upgrade_socket = "{tmp}/upgrade.sock"
state_dir = "{tmp}/state"
"#;

/// A plain `[[listeners]]` entry named "http" on 127.0.0.1:`{http}`. Put `{http_listener}` in a
/// template to get it.
pub const HTTP_LISTENER: &str = r#"[[listeners]]
name = "http"
address = "127.0.0.1:{http}"
"#;

/// A TLS `[[listeners]]` entry named "https" on 127.0.0.1:`{https}` (certificates are up to the
/// template). Put `{https_listener}` in a template to get it.
pub const HTTPS_LISTENER: &str = r#"[[listeners]]
name = "https"
address = "127.0.0.1:{https}"
tls = true
"#;

/// A catch-all route to service "api", whose one pool "blue" (weight 1) is the server `{blue}`.
/// Put `{catch_all_blue}` in a template to get it.
pub const CATCH_ALL_BLUE: &str = r#"[[routes]]
host = "*"
service = "api"

[services.api.pools.blue]
weight = 1
servers = ["{blue}"]
"#;

/// Every host to service "api", whose pools "blue" and "green" are the servers `{blue}` and
/// `{green}` weighted `{blue_weight}` and `{green_weight}`; `{route_extra}` is added to the route.
/// See [`blue_green`].
pub const BLUE_GREEN: &str = r#"
{server}
{http_listener}
[[routes]]
host = "*"
service = "api"
{route_extra}

[services.api.pools.blue]
weight = {blue_weight}
servers = ["{blue}"]

[services.api.pools.green]
weight = {green_weight}
servers = ["{green}"]
"#;

/// [`BLUE_GREEN`] for a proxy on 127.0.0.1:`http` with these backends, `(blue, green)` weights and
/// extra route settings (`""` for none).
pub fn blue_green(
    http: u16,
    blue: &Backend,
    green: &Backend,
    (blue_weight, green_weight): (u32, u32),
    route_extra: &str,
) -> String {
    fill(
        BLUE_GREEN,
        &[
            ("http", &http),
            ("blue", &blue.addr),
            ("green", &green.addr),
            ("blue_weight", &blue_weight),
            ("green_weight", &green_weight),
            ("route_extra", &route_extra),
        ],
    )
}

/// A service `name` whose one pool, "main" (weight 1), is the one server `server`.
pub fn one_server_service(name: &str, server: impl Display) -> String {
    format!("[services.{name}.pools.main]\nweight = 1\nservers = [\"{server}\"]\n")
}

/// How long `Proxy::start` waits for every listener to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `127.0.0.1:PORT` for a port that nothing listens on (bound, then released): a dead server.
pub fn closed_addr() -> String {
    format!("127.0.0.1:{}", closed_port())
}

/// A port nothing listens on, and nothing in the tests can start listening on: taken from the
/// privileged range 600-999 (the OS never hands those out for port 0), a new one per call within
/// this test process so that two dead servers of one config have distinct addresses (and so
/// distinct health state). A port from `free_port()` could be taken by a backend of a test
/// running in parallel.
pub fn closed_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    600 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 400
}

/// Substitutes `{name}` placeholders in a config template.
///
/// `{server}` becomes [`SERVER`], `{http_listener}` [`HTTP_LISTENER`], `{https_listener}`
/// [`HTTPS_LISTENER`], `{catch_all_blue}` [`CATCH_ALL_BLUE`] and `{certs}` the certificate
/// directory; `vars` supplies the rest (`{http}`, `{blue}`, ...). `{tmp}` is left for
/// [`Proxy::start`] / [`check`], which know the temp dir. Any other `{word}` left over is a test
/// bug and panics.
pub fn fill(template: &str, vars: &[(&str, &dyn Display)]) -> String {
    let mut out = template
        .replace("{server}", SERVER)
        .replace("{http_listener}", HTTP_LISTENER)
        .replace("{https_listener}", HTTPS_LISTENER)
        .replace("{catch_all_blue}", CATCH_ALL_BLUE)
        .replace("{certs}", CERTS);
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), &value.to_string());
    }
    if let Some(left) = leftover_placeholder(&out, &["tmp"]) {
        panic!("config template has an unfilled placeholder {{{left}}}:\n{out}");
    }
    out
}

/// The first `{word}` in `text` (word = lowercase letters, digits, `_`) not in `allowed`.
fn leftover_placeholder(text: &str, allowed: &[&str]) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        if let Some(end) = after.find('}') {
            let word = &after[..end];
            let is_word = !word.is_empty()
                && word
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if is_word && !allowed.contains(&word) {
                return Some(word.to_string());
            }
        }
        rest = after;
    }
    None
}

/// Replaces `{tmp}` with the given directory.
fn fill_tmp(config: &str, dir: &Path) -> String {
    let out = config.replace("{tmp}", &dir.display().to_string());
    if let Some(left) = leftover_placeholder(&out, &[]) {
        panic!("config has an unfilled placeholder {{{left}}}:\n{out}");
    }
    out
}

/// The addresses of all `[[listeners]]` in a config, and of `[admin]` when it names one.
fn listener_addrs(config: &str) -> Vec<SocketAddr> {
    let value: toml::Value = toml::from_str(config)
        .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{config}"));
    let listeners = value
        .get("listeners")
        .and_then(|l| l.as_array())
        .unwrap_or_else(|| panic!("test config has no [[listeners]]:\n{config}"));
    let admin = value
        .get("admin")
        .and_then(|a| a.get("address"))
        .and_then(|a| a.as_str());
    listeners
        .iter()
        .map(|l| {
            l.get("address")
                .and_then(|a| a.as_str())
                .expect("listener without address")
        })
        .chain(admin)
        .map(|addr| {
            addr.parse()
                .unwrap_or_else(|e| panic!("listener address {addr:?}: {e}"))
        })
        .collect()
}

/// Sends a signal to a process with the `kill` command.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `switchyard serve` child process; killed on drop.
pub struct Proxy {
    child: Child,
    dir: PathBuf,
    /// The temp dir `dir` is in, removed on drop; `None` when the caller owns the directory.
    _temp: Option<tempfile::TempDir>,
    config_path: PathBuf,
    listeners: Vec<SocketAddr>,
    exit: Option<ExitStatus>,
}

impl Proxy {
    /// Writes `config` (with `{tmp}` filled in) to a temp dir, starts the proxy on it and waits
    /// until every listener (and the admin API, if configured) accepts TCP connections.
    pub fn start(config: &str) -> Proxy {
        let temp = tempfile::tempdir().expect("create temp dir");
        let mut proxy = Proxy::spawn_in(temp.path(), config);
        proxy._temp = Some(temp);
        proxy.wait_listening();
        proxy
    }

    /// Like [`Proxy::start`] in a directory the caller owns, so that a second proxy can start on
    /// the same `{tmp}` (config, state dir) after this one stopped. The logs are overwritten.
    pub fn start_in(dir: &Path, config: &str) -> Proxy {
        let mut proxy = Proxy::spawn_in(dir, config);
        proxy.wait_listening();
        proxy
    }

    fn spawn_in(dir: &Path, config: &str) -> Proxy {
        let config = fill_tmp(config, dir);
        let listeners = listener_addrs(&config);
        let config_path = dir.join("switchyard.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr.log");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir)
            .env_remove("SWITCHYARD_TOKEN")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn switchyard");
        Proxy {
            child,
            dir: dir.to_path_buf(),
            _temp: None,
            config_path,
            listeners,
            exit: None,
        }
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pending = self.listeners.clone();
        while !pending.is_empty() {
            if let Some(status) = self.try_exit() {
                panic!(
                    "switchyard exited during start-up ({status}) with config:\n{}\n--- stderr ---\n{}",
                    self.config(),
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "switchyard did not listen on {pending:?} within {START_TIMEOUT:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            pending.retain(|addr| {
                TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err()
            });
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the config, the logs and the access log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Absolute path of the config file the proxy runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config file's current text.
    pub fn config(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// Everything the proxy wrote to stderr (its process log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir().join("stderr.log")).unwrap_or_default()
    }

    /// Everything the proxy wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir().join("stdout.log")).unwrap_or_default()
    }

    /// Path of `{tmp}/access.log` (where [`SERVER`] points the access log).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir().join("access.log")
    }

    /// The access log's JSON lines so far (a torn last line is skipped).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.access_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until the process log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr().contains(needle))
    }

    /// Rewrites the config file (atomically, `{tmp}` filled in) and sends SIGHUP.
    pub fn reload_with(&mut self, config: &str) {
        let config = fill_tmp(config, &self.dir);
        let staging = self.dir().join("switchyard.toml.new");
        std::fs::write(&staging, config).expect("write new config");
        std::fs::rename(&staging, &self.config_path).expect("replace config");
        self.sighup();
    }

    pub fn sighup(&self) {
        send_signal(self.pid(), "HUP");
    }

    pub fn sigterm(&self) {
        send_signal(self.pid(), "TERM");
    }

    /// Sends any signal by name (`QUIT` hands the sockets to an upgraded process).
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// Starts a second process on the same config with `--upgrade`: it waits for this one's
    /// listening sockets, which this one hands over on SIGQUIT. The caller stops the child.
    pub fn spawn_upgrade(&self) -> Child {
        let stderr = std::fs::File::create(self.dir.join("stderr-upgrade.log"))
            .expect("create stderr-upgrade.log");
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn upgraded switchyard")
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            // The process may exit between the check and the signal; a failed kill is fine then.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            if self.wait_exit(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- switchyard stderr ({}) ---\n{}",
                self.dir().display(),
                self.stderr()
            );
        }
    }
}

/// Runs `switchyard check --config switchyard.toml` in a temp dir holding `config` (with `{tmp}`
/// filled in); errors therefore read `switchyard.toml:<line>:<col>: <reason>`.
/// Returns (exit code, stdout, stderr).
pub fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let config = fill_tmp(config, dir.path());
    std::fs::write(dir.path().join("switchyard.toml"), config).expect("write config");
    let output = Command::new(BIN)
        .args(["check", "--config", "switchyard.toml"])
        .current_dir(dir.path())
        .env_remove("SWITCHYARD_TEST_UNSET")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Resolves every host name to 127.0.0.1 (the port comes from the URL).
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addrs)
        })
    }
}

/// The test CA as a reqwest root certificate.
pub fn test_ca() -> reqwest::Certificate {
    let pem = std::fs::read(format!("{CERTS}/test-ca.crt")).expect("read certs/test-ca.crt");
    reqwest::Certificate::from_pem(&pem).expect("parse certs/test-ca.crt")
}

/// A blocking client: any host name goes to 127.0.0.1, only the test CA is trusted, no proxy from
/// the environment, redirects are not followed, 10 s timeout.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(Loopback))
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(test_ca())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
}

/// HTTP/1.1 only (plain or TLS).
pub fn http1_client() -> reqwest::blocking::Client {
    client_builder().http1_only().build().expect("build client")
}

/// HTTP/2 without negotiation (h2c on plain listeners).
pub fn h2c_client() -> reqwest::blocking::Client {
    client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("build client")
}

/// HTTPS offering h2 and http/1.1 over ALPN.
pub fn https_client() -> reqwest::blocking::Client {
    client_builder().build().expect("build client")
}

/// A response body parsed as JSON, with the status and text in the panic message if it is not.
pub fn json_body(resp: reqwest::blocking::Response) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().expect("read body");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"))
}

/// The value of a response header as a string ("" when absent).
pub fn header(resp: &reqwest::blocking::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("header is not ASCII").to_string())
        .unwrap_or_default()
}

/// Whether `s` looks like a generated request id: 32 lowercase hex characters.
pub fn is_request_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Asserts that `body` is the proxy's own error JSON for `status`:
/// `{"error": "...", "status": N, "request_id": "..."}`.
pub fn assert_proxy_error(body: &serde_json::Value, status: u16) {
    assert_eq!(body["status"], status, "error body: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty(),
        "error body without an error text: {body}"
    );
    let id = body["request_id"].as_str().unwrap_or_default();
    assert!(
        is_request_id(id),
        "error body without a generated request_id: {body}"
    );
    assert!(
        body.get("backend").is_none(),
        "error came from a backend, not the proxy: {body}"
    );
}

/// One HTTP/1.x response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Connects to `addr` with a 10 s read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    stream
}

/// Writes `request` as is and reads one response.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = connect(addr);
    stream.write_all(request).expect("write request");
    read_response(&mut stream)
}

/// Reads exactly one response (head, then a content-length, chunked or until-EOF body) from `stream`.
/// Responses without a body (1xx, 204, 304) stop after the head.
pub fn read_response(stream: &mut TcpStream) -> RawResponse {
    let head = read_head(stream);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if status < 200 || status == 204 || status == 304 {
        Vec::new()
    } else if find("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        let mut decoder = echo::ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pending = Vec::new();
        let mut buf = [0u8; 8192];
        while !decoder.is_done() {
            let n = stream.read(&mut buf).expect("read chunked body");
            assert!(n > 0, "EOF inside chunked body");
            pending.extend_from_slice(&buf[..n]);
            let used = decoder
                .decode(&pending, &mut body)
                .expect("valid chunked body");
            pending.drain(..used);
        }
        body
    } else if let Some(len) = find("content-length") {
        let mut body = vec![0u8; len.parse().expect("numeric content-length")];
        stream.read_exact(&mut body).expect("read body");
        body
    } else {
        let mut body = Vec::new();
        stream.read_to_end(&mut body).expect("read body to EOF");
        body
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Reads a response head byte by byte (so nothing after it is consumed) up to the blank line.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(_) => panic!(
                "EOF before the end of the response head; got {:?}",
                String::from_utf8_lossy(&raw)
            ),
            Err(e) => panic!(
                "reading the response head: {e}; got {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    String::from_utf8(raw).expect("response head is not UTF-8")
}

/// A client of the admin API on 127.0.0.1:`port`; sends `token` as a bearer token when set.
pub struct Admin {
    pub port: u16,
    pub token: Option<String>,
    client: reqwest::blocking::Client,
}

/// One admin API answer: status, headers, the body as text and as JSON (`Null` if not JSON).
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: serde_json::Value,
}

impl AdminReply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `error` text of an error body ("" when absent).
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }

    /// The weight in force of `pool` in a service view.
    pub fn weight(&self, pool: &str) -> u64 {
        self.pool(pool)["weight"]
            .as_u64()
            .unwrap_or_else(|| panic!("no weight for pool {pool} in {}", self.text))
    }

    /// One pool of a service view.
    pub fn pool(&self, pool: &str) -> &serde_json::Value {
        self.json["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
            .unwrap_or_else(|| panic!("no pool {pool} in {}", self.text))
    }

    pub fn generation(&self) -> u64 {
        self.json["generation"]
            .as_u64()
            .unwrap_or_else(|| panic!("no generation in {}", self.text))
    }
}

impl Admin {
    pub fn new(port: u16, token: Option<&str>) -> Admin {
        Admin {
            port,
            token: token.map(str::to_string),
            client: http1_client(),
        }
    }

    /// Sends one request; `headers` are added as given.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> AdminReply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().expect("admin API request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("admin API body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        AdminReply {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn get(&self, path: &str) -> AdminReply {
        self.send("GET", path, None, &[])
    }

    /// `PUT /v1/services/{service}/weights` with a JSON body.
    pub fn put_weights(&self, service: &str, body: &str) -> AdminReply {
        self.send(
            "PUT",
            &format!("/v1/services/{service}/weights"),
            Some(body),
            &[],
        )
    }

    /// `POST /v1/services/{service}/switch` to `pool`.
    pub fn switch(&self, service: &str, pool: &str) -> AdminReply {
        let body = serde_json::json!({ "to": pool }).to_string();
        self.send(
            "POST",
            &format!("/v1/services/{service}/switch"),
            Some(&body),
            &[],
        )
    }
}

/// Which backend answers one request through a proxy listener on 127.0.0.1:`http`.
pub fn backend_via(client: &reqwest::blocking::Client, http: u16, host: &str) -> String {
    let resp = client
        .get(format!("http://{host}:{http}/probe"))
        .send()
        .expect("request through the proxy");
    assert_eq!(resp.status(), 200, "request through the proxy failed");
    json_body(resp)["backend"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------------------------------------
// The Prometheus text format (`GET /metrics`)
// ------------------------------------------------------------------------------------------------

/// Labels of one series, by name.
pub type Labels = BTreeMap<String, String>;

/// One sample of the text format: name, labels, value.
pub type Sample = (String, Labels, f64);

/// Splits a series `name{k="v",...}` (or a bare `name`) into name and labels. Label values here
/// hold no `"`, `,` or `\`.
fn parse_series(series: &str) -> (String, Labels) {
    match series.split_once('{') {
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("no closing brace in {series:?}"));
            let labels = body
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .unwrap_or_else(|| panic!("label without = in {series:?}"));
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels)
        }
        None => (series.to_string(), Labels::new()),
    }
}

/// Parses the sample lines of the text format; panics on a line that is not `series value`.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value in {line:?}: {e}"));
            let (name, labels) = parse_series(series);
            (name, labels, value)
        })
        .collect()
}

/// The value of the sample of `name` with exactly the labels `want` (None if absent).
fn exact_sample(text: &str, name: &str, want: &Labels) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && l == want)
        .map(|(_, _, v)| v)
}

/// The value of the sample of `name` with exactly the labels `labels` (None if absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    exact_sample(text, name, &want)
}

/// The value of the sample written as `series`, e.g. `switchyard_rate_limit_keys{zone="a"}` or
/// `switchyard_config_generation`: the same name and exactly the same labels, in any order.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let (name, want) = parse_series(series);
    exact_sample(text, &name, &want)
}

/// The sum over every sample of `name` whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

// ------------------------------------------------------------------------------------------------
// Real peers from Debian packages
// ------------------------------------------------------------------------------------------------

/// Serializes installs: tests run on several threads.
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The path of `tool`, from Debian's `package`. When missing: under CI (`CI` set) the test
/// fails; otherwise, as root, the package is installed; otherwise the test fails with what to
/// install. It never skips.
pub fn debian_tool(tool: &str, package: &str) -> PathBuf {
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = find_in_path(tool) {
        return p;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{tool} is missing and CI is set: install Debian's `{package}` package \
             (scripts/test.sh does)"
        );
    }
    if !is_root() {
        panic!(
            "{tool} is missing: install Debian's `{package}` package \
             (apt-get install {package}), or run the tests as root to have them install it"
        );
    }
    eprintln!("{tool} is missing: installing Debian's {package} package");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(updated && install(), "apt-get install {package} failed");
    }
    find_in_path(tool).unwrap_or_else(|| panic!("{tool} still missing after installing {package}"))
}

// ------------------------------------------------------------------------------------------------
// A load loop through the proxy
// ------------------------------------------------------------------------------------------------

/// One request of a [`Load`]: which user sent it, which backend answered, with what status.
#[derive(Debug, Clone)]
pub struct Seen {
    pub client: usize,
    /// The `backend` field of the JSON answer, or `"?"`; for a failed request, its error.
    pub backend: String,
    /// 0 when no response came.
    pub status: u16,
}

/// GET requests in a loop through the proxy on a thread of their own, until finished: one at a
/// time on one keep-alive HTTP/1.1 client, to `{base}/load/N`, as `clients` users taking turns
/// (each sends `X-User: user-K`), with `pause` between requests.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(base: &str, clients: usize, pause: Duration) -> Load {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, seen2, base) = (stop.clone(), seen.clone(), base.to_string());
        let thread = std::thread::spawn(move || {
            let client = http1_client();
            let mut i = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                let user = i % clients.max(1);
                i += 1;
                let resp = client
                    .get(format!("{base}/load/{i}"))
                    .header("x-user", format!("user-{user}"))
                    .send();
                let (backend, status) = match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().unwrap_or_default();
                        (body["backend"].as_str().unwrap_or("?").to_string(), status)
                    }
                    Err(e) => (format!("request {i}: {e:?}"), 0),
                };
                seen2.lock().expect("load log").push(Seen {
                    client: user,
                    backend,
                    status,
                });
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        });
        Load {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops the loop and returns every request it made, in order.
    pub fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        self.seen.lock().expect("load log").clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The requests of a load that did not get a 200.
pub fn failures(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.status != 200).collect()
}
