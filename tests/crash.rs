//! A kill -9 at any moment leaves the state file whole: the old weights or the new, never a torn
//! file, and the next process starts with one of them.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Service "app" (every host): pools blue and green, weight 1 each, on the backends named; the
/// admin API.
fn world(blue: &str, green: &str) -> World {
    let mut world = World::new().admin().backend(blue);
    if green != blue {
        world = world.backend(green);
    }
    world
        .route("*", "app")
        .pool("app", "blue", 1, &[blue])
        .pool("app", "green", 1, &[green])
}

#[test]
fn kill_9_during_weight_changes_never_tears_the_state_file() {
    let mut w = world("blue", "green").start(BIN);
    let admin_port = w.admin_port();
    let dir = w.proxy.dir().to_path_buf();
    for round in 0..6u64 {
        if round > 0 {
            // The next process on the same state dir (and ports).
            w.restart(&w.config());
        }
        let admin = w.admin();
        // The process must start on whatever the previous kill left behind.
        let view = admin.get("/v1/services/app");
        assert_eq!(view.status, 200, "{}", view.text);
        let (b, g) = (view.weight("blue"), view.weight("green"));
        assert!(
            (b, g) == (1, 1) || (b + g == 100 && (b == 10 || b == 90)),
            "round {round}: weights ({b}, {g}) are not a state that was ever written"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                let client = http1_client();
                let url = format!("http://127.0.0.1:{admin_port}/v1/services/app/weights");
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let body = if i.is_multiple_of(2) {
                        r#"{"blue": 90, "green": 10}"#
                    } else {
                        r#"{"blue": 10, "green": 90}"#
                    };
                    // Fails once the process is killed; that is the point.
                    if client
                        .put(&url)
                        .body(body)
                        .send()
                        .is_ok_and(|r| r.status().is_success())
                    {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        };
        // Kill at a different moment each round, in the middle of the write storm (which has
        // written the state file at least once).
        assert!(
            wait_until(Duration::from_secs(10), || written.load(Ordering::Relaxed)
                > 0),
            "round {round}: no weight change went through"
        );
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        w.proxy.signal("KILL");
        assert!(w.proxy.wait_exit(Duration::from_secs(5)).is_some());
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();

        let text = std::fs::read_to_string(dir.join("state/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("round {round}: torn state file ({e}):\n{text}"));
        let blue_w = state["weights"]["app"]["blue"].as_u64().unwrap();
        assert!(blue_w == 10 || blue_w == 90, "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "state.json")
            .collect();
        // A temporary file may survive a kill; it is never read and the next write replaces it.
        assert!(
            leftovers.iter().all(|n| n.starts_with(".state.json.tmp.")),
            "{leftovers:?}"
        );
    }
}

#[test]
fn start_removes_what_a_crash_left_and_refuses_an_unwritable_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("acme/example.com")).unwrap();
    // What a kill between write and rename leaves (state::write_atomic).
    std::fs::write(state.join(".state.json.tmp.4242"), b"{\"torn").unwrap();
    std::fs::write(state.join("acme/example.com/.cert.pem.tmp.77"), b"x").unwrap();
    // Both pools on the one backend.
    let world = world("blue", "blue");
    let config = world.config();
    let proxy = world.start_in(BIN, dir.path());
    assert!(!state.join(".state.json.tmp.4242").exists());
    assert!(!state.join("acme/example.com/.cert.pem.tmp.77").exists());
    assert!(
        proxy.proxy.stderr().contains("removed 2 temp file(s)"),
        "{}",
        proxy.proxy.stderr()
    );
    drop(proxy);

    // A state dir the process cannot write: refused at start, not at the first change. (The
    // tests run as root, which may write anywhere on a normal filesystem; /proc/self is a
    // directory no one can create files in.)
    let config = config.replace("{tmp}/state", "/proc/self");
    let path = dir.path().join("unwritable.toml");
    std::fs::write(
        &path,
        config.replace("{tmp}", &dir.path().display().to_string()),
    )
    .unwrap();
    let mut child = BIN
        .command()
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    assert!(exited, "serve kept running with an unwritable state dir");
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("state directory \"/proc/self\" is not writable"),
        "{stderr}"
    );
}
