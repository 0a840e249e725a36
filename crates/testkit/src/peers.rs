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
