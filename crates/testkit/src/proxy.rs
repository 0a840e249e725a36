//! The real `switchyard` binary as a child process: started on a config in a temp dir, waited for until every listener accepts, signalled and stopped by PID, its logs at hand.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::template::fill_tmp;
use crate::wait::wait_until;
use crate::Bin;

/// How long `Proxy::start` waits for every listener to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a dropped proxy gets to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// A running `switchyard serve` child process; stopped on drop.
pub struct Proxy {
    bin: Bin,
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
    pub fn start(bin: Bin, config: &str) -> Proxy {
        let temp = tempfile::tempdir().expect("create temp dir");
        let mut proxy = Proxy::spawn_in(bin, temp.path(), config);
        proxy._temp = Some(temp);
        proxy.wait_listening();
        proxy
    }

    /// Like [`Proxy::start`] in a directory the caller owns, so that a second proxy can start on
    /// the same `{tmp}` (config, state dir) after this one stopped. The logs are overwritten.
    pub fn start_in(bin: Bin, dir: &Path, config: &str) -> Proxy {
        let mut proxy = Proxy::spawn_in(bin, dir, config);
        proxy.wait_listening();
        proxy
    }

    fn spawn_in(bin: Bin, dir: &Path, config: &str) -> Proxy {
        let config = fill_tmp(config, dir);
        let listeners = listener_addrs(&config);
        let config_path = dir.join("switchyard.toml");
        std::fs::write(&config_path, &config).expect("write config");
        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr.log");
        let child = bin
            .command()
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn switchyard");
        Proxy {
            bin,
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

    /// Writes `config` (with `{tmp}` filled in) over the config file, without telling the
    /// proxy; returns the text written.
    pub fn write_config(&self, config: &str) -> String {
        let text = fill_tmp(config, &self.dir);
        std::fs::write(&self.config_path, &text).expect("write config");
        text
    }

    /// Everything the proxy wrote to stderr (its process log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir().join("stderr.log")).unwrap_or_default()
    }

    /// Everything the proxy wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir().join("stdout.log")).unwrap_or_default()
    }

    /// Path of `{tmp}/access.log` (where [`crate::SERVER`] points the access log).
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

    /// Path of `{tmp}/upgrade.sock`, where a `--upgrade` process waits for the sockets (see
    /// [`crate::SERVER`]).
    pub fn upgrade_socket(&self) -> PathBuf {
        self.dir.join("upgrade.sock")
    }

    /// Starts a second process on the same config with `--upgrade`: it waits for this one's
    /// listening sockets on the upgrade socket, which this one hands over on SIGQUIT. The caller
    /// stops the child.
    pub fn spawn_upgrade(&self) -> Child {
        let stderr = std::fs::File::create(self.dir.join("stderr-upgrade.log"))
            .expect("create stderr-upgrade.log");
        self.bin
            .command()
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade")
            .current_dir(&self.dir)
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

    /// Stops the process: SIGTERM, then SIGKILL if it has not exited after a few seconds.
    pub fn stop(&mut self) {
        if self.try_exit().is_none() {
            // The process may exit between the check and the signal; a failed kill is fine then.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            if self.wait_exit(STOP_TIMEOUT).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
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
pub fn check(bin: Bin, config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let config = fill_tmp(config, dir.path());
    std::fs::write(dir.path().join("switchyard.toml"), config).expect("write config");
    let output = bin
        .command()
        .args(["check", "--config", "switchyard.toml"])
        .current_dir(dir.path())
        .env_remove("SWITCHYARD_TEST_UNSET")
        .output()
        .expect("run switchyard check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}
