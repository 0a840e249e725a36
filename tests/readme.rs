//! The README's first screen works as written: its config excerpt passes `check`, and the demo prints the pid, config and dashboard the walkthrough sends a newcomer to.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use testkit::*;

const README: &str = include_str!("../README.md");

/// The first ```toml block after `heading`.
fn toml_block_after(heading: &str) -> String {
    let (_, after) = README
        .split_once(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"));
    let (_, block) = after
        .split_once("```toml\n")
        .expect("a ```toml block under the heading");
    let (block, _) = block.split_once("```").expect("the block's end");
    block.to_string()
}

#[test]
fn the_readme_config_excerpt_passes_check() {
    let excerpt = toml_block_after("## Config walkthrough");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, &excerpt).unwrap();
    let out = bin!()
        .command()
        .arg("check")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README.md's config excerpt fails `switchyard check`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("2 services, 3 pools"), "{summary}");
}

/// The demo, stopped by PID (SIGTERM, then SIGKILL) when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let exited = wait_until(Duration::from_secs(10), || {
            self.0.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The walkthrough: the banner names the pid, the config and the dashboard at the admin
/// listener's `/`; editing the printed config's weights and sending SIGHUP to the printed pid
/// moves traffic to green.
#[test]
fn the_demo_prints_its_pid_config_and_dashboard_and_a_reload_by_that_pid_works() {
    let (http, admin) = (port(), port());
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin!()
        .command()
        .arg("demo")
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--dir")
        .arg(dir.path())
        .args(["--traffic", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    let pid = demo.0.id();

    // The banner, up to its last line.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.starts_with("Stop with Ctrl-C"))
    {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => banner.push(line),
            Err(e) => panic!("no whole banner ({e}); so far:\n{}", banner.join("\n")),
        }
    }
    let banner = banner.join("\n");
    let has = |needle: &str| {
        assert!(
            banner.contains(needle),
            "the banner lacks {needle:?}:\n{banner}"
        );
    };
    has(&format!("pid      {pid}"));
    has(&format!("kill -HUP {pid}"));
    has(&format!("dashboard http://127.0.0.1:{admin}/ "));
    let config = dir.path().join("switchyard.toml");
    has(&format!("config   {}", config.display()));

    let client = http1_client();
    // A request answered, not a TCP connect: the start-up bind probe listens for an instant
    // before the proxy does, and a connect in that instant proved nothing.
    let up = wait_until(Duration::from_secs(20), || {
        client
            .get(format!("http://demo.test:{http}/probe"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(up, "the demo proxy does not answer");
    assert_eq!(backend_via(&client, http, "demo.test"), "blue");

    // "edit the weights in the printed config, then reload it with the command the demo prints"
    let text = std::fs::read_to_string(&config).unwrap();
    let edited = text
        .replace("weight = 100\n", "weight = 50\n")
        .replace("weight = 0\n", "weight = 50\n");
    assert_ne!(edited, text, "the demo config has no weights to edit");
    std::fs::write(&config, edited).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let green = wait_until(Duration::from_secs(20), || {
        backend_via(&client, http, "demo.test") == "green"
    });
    assert!(green, "no request reached green after the reload");
    drop(demo);
}
