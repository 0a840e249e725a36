//! A real gRPC server and client (Python grpcio, `peers/grpc_peer.py`): the server runs as a child process stopped by PID, the client makes a list of calls and reports each outcome.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::ports::port;
use crate::template::CERTS;
use crate::wait::wait_until;

/// The peer script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/grpc_peer.py");

/// A Python 3 that can `import grpc`: `python3` from PATH, else Debian's `/usr/bin/python3`.
/// Missing, the test fails with what to install (`scripts/test.sh` installs grpcio).
pub fn python() -> PathBuf {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        ["python3", "/usr/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| {
                Command::new(p)
                    .args(["-c", "import grpc"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
    });
    match found {
        Some(p) => p.clone(),
        None => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            panic!(
                "no python3 with grpcio{}: run `python3 -m pip install grpcio` (scripts/test.sh \
                 installs it)",
                if ci {
                    " (CI=true: nothing is skipped)"
                } else {
                    ""
                }
            )
        }
    }
}

/// The test gRPC server (`test.Echo`), on 127.0.0.1:`port`; killed on drop.
pub struct GrpcServer {
    pub port: u16,
    child: Child,
}

impl GrpcServer {
    /// Plain HTTP/2 (h2c).
    pub fn plain() -> GrpcServer {
        GrpcServer::start(&[])
    }

    /// TLS with `certs/localhost.crt` (for `localhost` and 127.0.0.1), ALPN h2.
    pub fn tls() -> GrpcServer {
        GrpcServer::start(&[
            format!("{CERTS}/localhost.crt"),
            format!("{CERTS}/localhost.key"),
        ])
    }

    fn start(tls: &[String]) -> GrpcServer {
        let port = port();
        let child = Command::new(python())
            .arg(SCRIPT)
            .arg("server")
            .arg(port.to_string())
            .args(tls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the gRPC server");
        let mut server = GrpcServer { port, child };
        let up = wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || server.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && server.child.try_wait().ok().flatten().is_none(),
            "the gRPC server did not listen on {port}"
        );
        server
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call of the test client: `test.Echo/<method>` with a text request (a list for `Chat`).
#[derive(Debug, Clone)]
pub struct Call(serde_json::Value);

impl Call {
    pub fn new(method: &str, request: &str) -> Call {
        Call(serde_json::json!({"method": method, "request": request}))
    }

    /// `Chat`, one message per entry.
    pub fn chat(messages: &[&str]) -> Call {
        Call(serde_json::json!({"method": "Chat", "request": messages}))
    }

    /// The client's deadline.
    pub fn timeout(mut self, seconds: f64) -> Call {
        self.0["timeout"] = seconds.into();
        self
    }

    /// The `:authority` sent (the channel's target otherwise).
    pub fn authority(mut self, authority: &str) -> Call {
        self.0["authority"] = authority.into();
        self
    }
}

/// What a call ended with.
#[derive(Debug, Clone)]
pub struct GrpcOutcome {
    /// The status code's name: `OK`, `NOT_FOUND`, `UNAVAILABLE`, ...
    pub code: String,
    pub details: String,
    pub responses: Vec<String>,
    /// Trailing metadata (for a Trailers-Only response: its headers).
    pub trailing: serde_json::Value,
}

/// Makes `calls` in order with the test client, each on its own channel to `target`
/// (`127.0.0.1:PORT`); over TLS trusting the test CA for server name `tls_name` when given.
pub fn grpc_calls(target: &str, tls_name: Option<&str>, calls: &[Call]) -> Vec<GrpcOutcome> {
    let mut command = Command::new(python());
    command.arg(SCRIPT).arg("client").arg(target);
    if let Some(name) = tls_name {
        command.arg(format!("{CERTS}/test-ca.crt")).arg(name);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the gRPC client");
    let input = serde_json::Value::Array(calls.iter().map(|c| c.0.clone()).collect());
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the calls");
    let output = child.wait_with_output().expect("run the gRPC client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gRPC client failed: {stderr}");
    let results: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("gRPC client output ({e}): {stderr}"));
    results
        .into_iter()
        .map(|r| GrpcOutcome {
            code: r["code"].as_str().unwrap_or_default().to_string(),
            details: r["details"].as_str().unwrap_or_default().to_string(),
            responses: r["responses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            trailing: r["trailing"].clone(),
        })
        .collect()
}
