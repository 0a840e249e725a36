//! `switchyard demo` starts at blue=100 green=0 as its banner says, every time: the last run's weights do not leak in unless --keep-state.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::*;

/// A running `switchyard demo`; stopped with SIGTERM (killed if that fails) when dropped.
struct Demo {
    child: Child,
    http: u16,
    admin: Admin,
}

impl Demo {
    /// Starts the demo in `dir` with no background traffic and waits for its admin API.
    fn start(dir: &Path, extra: &[&str]) -> Demo {
        let (http, admin) = (port(), port());
        let child = bin!()
            .command()
            .arg("demo")
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--dir")
            .arg(dir)
            .args(["--traffic", "0"])
            .args(extra)
            .env_remove("SWITCHYARD_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let demo = Demo {
            child,
            http,
            admin: Admin::new(admin, None),
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
        });
        assert!(up, "the demo did not start listening");
        demo
    }

    /// (blue, green) weights in force.
    fn weights(&self) -> (u64, u64) {
        let reply = self.admin.get("/v1/services/demo");
        assert_eq!(reply.status, 200, "{}", reply.text);
        (reply.weight("blue"), reply.weight("green"))
    }

    /// Which pool answers a request through the demo proxy.
    fn answered_by(&self) -> String {
        backend_via(&http1_client(), self.http, "demo.test")
    }

    /// Sets the weights as `ctl weights demo blue=0 green=100` would.
    fn all_on_green(&self) {
        let reply = self
            .admin
            .put_weights("demo", r#"{"blue": 0, "green": 100}"#);
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(self.weights(), (0, 100));
    }

    /// SIGTERM, then waits for the demo to exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exited = wait_until(Duration::from_secs(20), || {
            self.child.try_wait().unwrap().is_some()
        });
        assert!(exited, "the demo did not stop on SIGTERM");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn each_demo_run_starts_at_blue_unless_it_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();

    let first = Demo::start(dir.path(), &[]);
    assert_eq!(first.weights(), (100, 0));
    first.all_on_green();
    assert_eq!(first.answered_by(), "green");
    first.stop();

    // A new run: the banner's blue=100 green=0, whatever the last run set.
    let second = Demo::start(dir.path(), &[]);
    assert_eq!(
        second.weights(),
        (100, 0),
        "the last run's weights leaked in"
    );
    assert_eq!(second.answered_by(), "blue");
    second.all_on_green();
    second.stop();

    // --keep-state: the last run's weights win, as before.
    let third = Demo::start(dir.path(), &["--keep-state"]);
    assert_eq!(third.weights(), (0, 100));
    assert_eq!(third.answered_by(), "green");
    third.stop();
}
