//! Debian's nginx as an upstream a test starts: one process (no daemon, no master) on an `http {}` body the test writes, stopped by PID, its logs at hand.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::peers::peer;
use crate::template::CERTS;
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
        let nginx = peer("nginx", "nginx");
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
            "nginx did not listen on {ports:?} ({exited:?}):\n{}\n{}",
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
