//! A real etcd (Debian's `etcd-server`) on loopback for the fleet tests: started per test, stopped and restarted on the same data, killed by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::peers::peer;
use crate::ports::port;
use crate::wait::wait_until;

/// One etcd member with its own data directory, on two free ports of 127.0.0.1.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    /// Clients over TLS (the repository's localhost certificate) with a client certificate
    /// signed by the test CA.
    tls: bool,
    /// The password of user `root` once etcd's own auth is on.
    password: Option<String>,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        Etcd::start_with(false)
    }

    /// Starts etcd for clients over TLS only, asking for a client certificate from the test CA
    /// (`certs/client.crt`), with auth enabled and a user `root` whose password is `password`.
    pub fn start_secure(password: &str) -> Etcd {
        let mut etcd = Etcd::start_with(true);
        // The user is added and auth enabled without credentials (auth is off until then).
        let (ok, out) = etcd.ctl(&["user", "add", &format!("root:{password}")]);
        assert!(ok, "etcdctl user add: {out}");
        let (ok, out) = etcd.ctl(&["auth", "enable"]);
        assert!(ok, "etcdctl auth enable: {out}");
        etcd.password = Some(password.to_string());
        etcd
    }

    fn start_with(tls: bool) -> Etcd {
        let mut etcd = Etcd {
            client_port: port(),
            peer_port: port(),
            dir: tempfile::tempdir().expect("etcd's data dir"),
            child: None,
            starts: 0,
            tls,
            password: None,
        };
        etcd.resume();
        etcd
    }

    /// `http://127.0.0.1:PORT`, or `https://` for [`Etcd::start_secure`].
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(format!("etcd-{}.log", self.starts))
    }

    /// The start of a `[cluster]` table for node `node` of the fleet at `prefix` on this etcd,
    /// with a 2 s lease (quick takeovers in tests); more keys may follow it.
    pub fn cluster_toml(&self, prefix: &str, node: &str) -> String {
        format!(
            "[cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nnode = \"{node}\"\nlease_ttl = \"2s\"\n",
            self.url()
        )
    }

    /// The server's output so far (its latest start).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Starts it again on the same data and ports (after [`Etcd::stop`]).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        self.starts += 1;
        let bin = peer("etcd", "etcd-server");
        let log = std::fs::File::create(self.log()).expect("etcd log");
        let certs = crate::CERTS;
        let tls_args: Vec<String> = if self.tls {
            vec![
                format!("--cert-file={certs}/localhost.crt"),
                format!("--key-file={certs}/localhost.key"),
                "--client-cert-auth".to_string(),
                format!("--trusted-ca-file={certs}/test-ca.crt"),
            ]
        } else {
            Vec::new()
        };
        let client = self.url();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(bin)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--log-level=warn")
            .arg("--logger=zap")
            // Quick to commit on a busy 2-core machine.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--unsafe-no-fsync")
            .args(&tls_args)
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(30), || {
            self.ctl(&["endpoint", "health"]).0
        });
        assert!(ready, "etcd did not become healthy:\n{}", self.output());
    }

    /// Kills it (SIGKILL: an outage, not a goodbye) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` against it: (success, stdout + stderr).
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let user = self.password.as_ref().map(|pw| format!("root:{pw}"));
        self.ctl_as(user.as_deref(), args)
    }

    /// `etcdctl` as `user` (`NAME:PASSWORD`), with the client certificate when over TLS.
    pub fn ctl_as(&self, user: Option<&str>, args: &[&str]) -> (bool, String) {
        let bin = peer("etcdctl", "etcd-client");
        let certs = crate::CERTS;
        let mut extra = Vec::new();
        if self.tls {
            extra.push(format!("--cacert={certs}/test-ca.crt"));
            extra.push(format!("--cert={certs}/client.crt"));
            extra.push(format!("--key={certs}/client.key"));
        }
        if let Some(u) = user {
            extra.push(format!("--user={u}"));
        }
        let out = Command::new(bin)
            .arg(format!("--endpoints={}", self.url()))
            .args(&extra)
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=3s")
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        let (ok, out) = self.ctl(&["get", "--print-value-only", key]);
        assert!(ok, "etcdctl get {key}: {out}");
        let value = out.trim_end_matches('\n');
        (!value.is_empty()).then(|| value.to_string())
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (ok, out) = self.ctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(ok, "etcdctl get --prefix {prefix}: {out}");
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl crate::world::Running {
    /// Waits until this node has joined its fleet (`/health/ready` says `"cluster": "ok"`).
    pub fn wait_joined(&self) {
        let admin = self.admin();
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(30), || {
            let r = admin.get("/health/ready");
            last = r.text.clone();
            r.json["cluster"] == "ok"
        });
        assert!(ok, "the node did not join: {last}\n{}", self.proxy.stderr());
    }
}
