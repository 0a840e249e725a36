//! The real programs some tests talk to (pebble, promtool, prometheus, script, python3): found on the machine, never installed from a test.
//!
//! `scripts/test.sh` installs the Debian packages that provide them. A missing one fails the
//! test with what to install; a test never skips for it, under CI (`CI=true`) or not.

use std::path::PathBuf;

/// The path of `tool` (from Debian's `package`), from `PATH`, `/usr/bin` or `/usr/sbin`.
pub fn peer(tool: &str, package: &str) -> PathBuf {
    if let Some(path) = find_in_path(tool) {
        return path;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let context = if ci {
        " (CI=true: nothing is skipped)"
    } else {
        ""
    };
    panic!(
        "{tool} is missing{context}: install Debian's `{package}` package \
         (apt-get install {package}); scripts/test.sh installs every peer the tests need"
    );
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Starts `program` with `args` for the rest of this test process, for a peer kept in a static
/// (started once per test binary, never dropped): a shell runs it and watches this process, and
/// kills the peer by PID once the test process is gone. Output goes to `log`. To stop the peer
/// sooner, use [`stop_for_process`] on the returned child (the shell), not `Child::kill`: a
/// SIGKILL ends the shell before it can stop the peer, which then runs on, orphaned.
pub fn spawn_for_process(
    program: &std::path::Path,
    args: &[String],
    log: &std::path::Path,
) -> std::process::Child {
    let script = r#"prog="$1"; shift
"$prog" "$@" & peer=$!
trap 'kill $peer 2>/dev/null' EXIT
trap 'exit 143' TERM
while kill -0 "$WATCH" 2>/dev/null && kill -0 "$peer" 2>/dev/null; do sleep 0.2; done"#;
    let out = std::fs::File::create(log).expect("create the peer's log file");
    let err = out.try_clone().expect("clone the log file handle");
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(program)
        .args(args)
        .env("WATCH", std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

/// Stops a peer started by [`spawn_for_process`]: SIGTERM to its shell, which kills the peer by
/// PID on its way out, then waits for the shell.
pub fn stop_for_process(child: &mut std::process::Child) {
    if let Ok(None) = child.try_wait() {
        let _ = std::process::Command::new("kill")
            .arg(child.id().to_string())
            .status();
    }
    let _ = child.wait();
}
