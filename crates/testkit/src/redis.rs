//! A real Redis (Debian's `redis-server`) on loopback for the fleet-wide limit tests: started per test, paused (SIGSTOP) to be slow, killed to be down, started again on the same port.

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
}

impl Redis {
    /// Starts it and waits until it answers PING.
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: port(),
            dir: tempfile::tempdir().expect("redis's dir"),
            child: None,
            starts: 0,
        };
        redis.resume();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
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
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
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
