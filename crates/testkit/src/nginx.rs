//! Debian's nginx as an upstream a test starts: one process (no daemon, no master) on an `http {}` body the test writes, stopped by PID, its logs at hand.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::peers::peer;
use crate::template::{leftover_placeholder, CERTS};
use crate::wait::wait_until;

/// A running nginx; killed (by its PID) on drop.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `servers` (the `server {}` blocks of its `http {}` section; `{certs}`
    /// and `{dir}` are filled in with the certificate directory and nginx's temp dir) and waits
    /// until each of `ports` on 127.0.0.1 accepts connections. The access log writes one line
    /// per request: `host=$host sni=$ssl_server_name client=$ssl_client_s_dn "$request" $status`.
    pub fn start(servers: &str, ports: &[u16]) -> Nginx {
        let dir = tempfile::tempdir().expect("create nginx temp dir");
        let d = dir.path().display().to_string();
        let servers = servers.replace("{certs}", CERTS).replace("{dir}", &d);
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format probe 'host=$host sni=$ssl_server_name client=$ssl_client_s_dn "$request" $status';
    access_log {d}/access.log probe;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
{servers}
}}
"#
        );
        Nginx::spawn(dir, &conf, &[], ports)
    }

    /// Starts nginx on a whole `nginx.conf` (`events {}`, `http {}`) written as a user writes
    /// one, without the process-level directives the harness sets (`daemon`, `master_process`,
    /// `pid`, `error_log`: leave them out) and waits until each of `ports` accepts connections.
    /// `{certs}` and `{dir}` (nginx's temp dir: write `access_log {dir}/access.log` to read it
    /// with [`Nginx::access_log`]) are filled in; any other `{word}` left is a test bug. The
    /// temp paths of the `http {}` block are pointed into `{dir}`.
    pub fn start_config(conf: &str, ports: &[u16]) -> Nginx {
        let dir = tempfile::tempdir().expect("create nginx temp dir");
        let d = dir.path().display().to_string();
        let temp_paths = format!(
            "http {{\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"
        );
        let conf = conf
            .replace("{certs}", CERTS)
            .replace("{dir}", &d)
            .replacen("http {\n", &temp_paths, 1);
        assert!(
            conf.contains(&format!("{d}/body")),
            "nginx.conf has no `http {{` line to add the temp paths to:\n{conf}"
        );
        if let Some(left) = leftover_placeholder(&conf, &[]) {
            panic!("nginx.conf has an unfilled placeholder {{{left}}}:\n{conf}");
        }
        let globals = format!("daemon off; master_process off; pid {d}/nginx.pid;");
        Nginx::spawn(dir, &conf, &["-g", &globals], ports)
    }

    fn spawn(dir: tempfile::TempDir, conf: &str, args: &[&str], ports: &[u16]) -> Nginx {
        let nginx = peer("nginx", "nginx");
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, dir };
        let up = wait_until(Duration::from_secs(10), || {
            ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
                || nginx.child.try_wait().ok().flatten().is_some()
        });
        let exited = nginx.child.try_wait().ok().flatten();
        assert!(
            up && exited.is_none(),
            "nginx did not listen on {ports:?} ({exited:?}):\n{}\n{}\n--- nginx.conf ---\n{conf}",
            nginx.file("stderr.log"),
            nginx.file("error.log")
        );
        nginx
    }

    /// nginx's temp dir (config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The access log's lines so far.
    pub fn access_log(&self) -> Vec<String> {
        self.file("access.log")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether a line matching `line` reaches the access log within 10 s. nginx writes the line
    /// after it has sent the answer, so a client that has its answer may read the log too early.
    pub fn logged(&self, line: impl Fn(&str) -> bool) -> bool {
        wait_until(Duration::from_secs(10), || {
            self.access_log().iter().any(|l| line(l))
        })
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        self.file("error.log")
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
