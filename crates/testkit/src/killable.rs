//! An HTTP backend in a process of its own (Python's `http.server`), so that a test can SIGKILL it with requests in flight, as a crashed or OOM-killed upstream dies.
//!
//! It answers like the echo backend (`{"backend": NAME, "method": ..., "path": ...}`, header
//! `x-backend`), except that a target starting with `/slow` is never answered: the request
//! stays in flight until the process dies. Every request is reported (`METHOD PATH`) on its
//! stdout as it arrives, so a test knows what the backend received before it was killed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::peers::peer;
use crate::wait::wait_until;

/// The server: a thread per connection, HTTP/1.1 keep-alive, a deep accept queue.
const SCRIPT: &str = r#"
import http.server, json, sys, threading, time
name = sys.argv[1]
lock = threading.Lock()
def report(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        report(self.command + " " + self.path)
        if self.path.startswith("/slow"):
            time.sleep(3600)
        body = (json.dumps({"backend": name, "method": self.command, "path": self.path}) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-backend", name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer
class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
server = Server(("127.0.0.1", 0), Handler)
report("listening %s:%d" % server.server_address)
server.serve_forever()
"#;

/// A backend process; killed (SIGKILL) when dropped.
pub struct KillableBackend {
    pub addr: SocketAddr,
    child: Child,
    received: Arc<Mutex<Vec<String>>>,
}

impl KillableBackend {
    /// Starts a backend called `name` on a free port of 127.0.0.1 (python3 from Debian's
    /// `python3`) and waits until it listens.
    pub fn spawn(name: &str) -> KillableBackend {
        let python = peer("python3", "python3");
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("backend {name} did not start"));
        let addr = first
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("backend {name} said {first:?}"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().expect("received log").push(line);
            }
        });
        KillableBackend {
            addr,
            child,
            received,
        }
    }

    /// Every request received so far, as `METHOD PATH`, in arrival order.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().expect("received log").clone()
    }

    /// Waits until the backend has received `n` requests; false after 10 s.
    pub fn wait_received(&self, n: usize) -> bool {
        wait_until(Duration::from_secs(10), || self.received().len() >= n)
    }

    /// SIGKILL: the process dies at once with whatever it holds in flight (the kernel closes its
    /// connections); returns once it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KillableBackend {
    fn drop(&mut self) {
        self.kill();
    }
}
