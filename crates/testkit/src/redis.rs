//! A real Redis (Debian's `redis-server`) on loopback for the fleet-wide limit tests: started per test (over TLS with client certificates if asked), paused (SIGSTOP) to be slow, killed to be down, started again on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::peers::peer;
use crate::ports::port;
use crate::wait::wait_until;

/// One redis-server without persistence on a free port of 127.0.0.1.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    /// TLS only (the repository's localhost certificate), clients need a certificate from the
    /// test CA.
    tls: bool,
}

impl Redis {
    /// Starts it and waits until it answers PING.
    pub fn start() -> Redis {
        Redis::start_with(false)
    }

    /// Started with TLS only: `certs/localhost.crt` (signed by `certs/test-ca.crt`), and
    /// `tls-auth-clients yes`: a client shows a certificate the test CA signed
    /// (`certs/client.crt`).
    pub fn start_tls() -> Redis {
        Redis::start_with(true)
    }

    fn start_with(tls: bool) -> Redis {
        let mut redis = Redis {
            port: port(),
            dir: tempfile::tempdir().expect("redis's dir"),
            child: None,
            starts: 0,
            tls,
        };
        redis.resume();
        redis
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for [`Redis::start_tls`] (the certificate
    /// names 127.0.0.1 too).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The arguments that put a port (server) or a connection (redis-cli) on TLS.
    fn tls_args(&self, server: bool) -> Vec<String> {
        let certs = crate::CERTS;
        match (self.tls, server) {
            (false, _) => Vec::new(),
            (true, true) => vec![
                "--tls-cert-file".into(),
                format!("{certs}/localhost.crt"),
                "--tls-key-file".into(),
                format!("{certs}/localhost.key"),
                "--tls-ca-cert-file".into(),
                format!("{certs}/test-ca.crt"),
                "--tls-auth-clients".into(),
                "yes".into(),
            ],
            (true, false) => vec![
                "--tls".into(),
                "--cacert".into(),
                format!("{certs}/test-ca.crt"),
                "--cert".into(),
                format!("{certs}/client.crt"),
                "--key".into(),
                format!("{certs}/client.key"),
            ],
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(format!("redis-{}.log", self.starts))
    }

    /// The server's output so far (its latest start).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it (again, after [`Redis::kill`]) on the same port, empty.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        self.starts += 1;
        let bin = peer("redis-server", "redis-server");
        let log = std::fs::File::create(self.log()).expect("redis log");
        // With TLS the plain port is off (0) and the TLS port takes the number.
        let ports = if self.tls {
            vec![
                "--port".to_string(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
            ]
        } else {
            vec!["--port".to_string(), self.port.to_string()]
        };
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1"])
            .args(ports)
            .args(self.tls_args(true))
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis log"))
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(20), || {
            self.cli(&["PING"]).is_some_and(|r| r == "PONG")
        });
        assert!(ready, "redis did not answer PING:\n{}", self.output());
    }

    /// SIGSTOP: the process holds its connections and answers nothing (a slow Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis runs");
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// SIGKILL (down, connections refused) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli` against it: its answer, or `None` when it failed or took over 2 s.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let bin = peer("redis-cli", "redis-tools");
        let out = Command::new("timeout")
            .arg("2")
            .arg(bin)
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(self.tls_args(false))
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// How many times the server ran `command` (lowercase, from `INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]).unwrap_or_default();
        let head = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(head.as_str()))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.pid().is_some() {
            // A paused server would not die of SIGKILL any slower, but let it go cleanly.
            self.unpause();
        }
        self.kill();
    }
}
