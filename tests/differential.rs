//! Proof by difference (issue 16): real nginx on each config of tests/fixtures/nginx/ and Switchyard on its equivalent, in front of the same echo backends, answering the same corpus; any difference not tolerated by a documented name fails.
//!
//! The Switchyard side of every comparison comes from [`switchyard_config_for`]: the output of
//! `switchyard import nginx` on the nginx.conf as nginx runs it. The hand-written
//! `NAME.expected.toml` equivalents serve the self-tests, which break them on purpose.

#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::{Path, PathBuf};

use testkit::*;

const BIN: Bin = testkit::bin!();

fn fixtures() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/nginx")
}

/// The Switchyard config compared with nginx running `NAME.conf` (`nginx_conf`: that file with
/// the test machine's ports, backends and paths filled in). The one place to change to compare
/// the importer's output instead of the hand-written equivalent.
fn switchyard_config_for(name: &str, nginx_conf: &str) -> String {
    imported(name, nginx_conf)
}

/// What `switchyard import nginx` makes of the nginx.conf as nginx runs it; the import must be
/// complete (exit 0). Its notes are printed with the test's output.
fn imported(name: &str, nginx_conf: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join(format!("{name}.conf"));
    std::fs::write(&conf, nginx_conf).unwrap();
    let out = BIN
        .command()
        .arg("import")
        .arg("nginx")
        .arg(&conf)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    // Complete: everything the configs use is carried over (notes allowed).
    assert_eq!(
        out.status.code(),
        Some(0),
        "switchyard import nginx on {name}.conf needs review or failed:\n{report}"
    );
    if !report.trim().is_empty() {
        eprintln!("--- import report for {name}.conf ---\n{report}");
    }
    String::from_utf8(out.stdout).unwrap()
}

/// `NAME.expected.toml`: the Switchyard config written by hand for `NAME.conf`.
fn hand_written(name: &str) -> String {
    let path = fixtures().join(format!("{name}.expected.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn prove(name: &str) {
    let diff = Differential::load(&fixtures(), name);
    diff.run(BIN, |nginx| switchyard_config_for(name, nginx))
        .assert_equivalent();
}

#[test]
fn every_directive() {
    prove("every-directive");
}

#[test]
fn gorax() {
    prove("gorax");
}

#[test]
fn tiris() {
    prove("tiris");
}

/// `text` with `from` (which must be there) replaced by `to`.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the config");
    text.replacen(from, to, 1)
}

/// Asserts that `report` has an untolerated difference for each (case, aspect) of `expected`.
fn assert_caught(report: &Report, expected: &[(&str, &str)]) {
    for (case, aspect) in expected {
        assert!(
            report
                .untolerated()
                .iter()
                .any(|d| d.case == *case && d.aspect == *aspect),
            "the harness missed {aspect:?} in {case:?}\n{}",
            report.text()
        );
    }
}

/// The harness must fail when behaviour differs: Tiris's config made wrong in four places, each
/// reported as a difference of its own aspect, and the report refuses to pass.
#[test]
fn a_wrong_config_is_caught() {
    let diff = Differential::load(&fixtures(), "tiris");
    let report = diff.run(BIN, |_| {
        let good = hand_written("tiris");
        let wrong = swap(&good, "redirect_code = 301", "redirect_code = 308");
        let wrong = swap(
            &wrong,
            "max_body_size = \"1MB\"",
            "max_body_size = \"10MB\"",
        );
        let wrong = swap(&wrong, "Host = \"$host\"", "Host = \"backend.internal\"");
        swap(
            &wrong,
            "[[routes]]\nhost = \"*\"\nservice = \"tiris\"\n",
            "",
        )
    });
    assert_caught(
        &report,
        &[
            ("port 80 to HTTPS", "status"),
            ("a body over nginx's default limit", "status"),
            ("the API", "upstream header host"),
            (
                "a name no server lists goes to the default server",
                "status",
            ),
        ],
    );
    let refused = std::panic::catch_unwind(|| report.assert_equivalent());
    assert!(refused.is_err(), "a report with differences must fail");
}

/// Every tolerated difference is explained, one line each, in the doc section users read; and
/// the section lists nothing the harness does not tolerate.
#[test]
fn tolerated_differences_are_documented() {
    let doc = std::fs::read_to_string(Path::new(REPO).join("docs/migrating-from-nginx.md"))
        .expect("docs/migrating-from-nginx.md");
    let missing = testkit::differential::undocumented_tolerances(&doc);
    assert!(
        missing.is_empty(),
        "tolerated in crates/testkit/src/differential.rs but not documented under \
         `## Deliberate differences` in docs/migrating-from-nginx.md: {missing:?}"
    );
    let section = doc
        .split("\n## Deliberate differences")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_default();
    for line in section.lines().filter(|l| l.starts_with("- `")) {
        let name = line[3..].split('`').next().unwrap_or_default();
        assert!(
            TOLERATED.iter().any(|t| t.name == name),
            "docs/migrating-from-nginx.md documents {name:?}, which the harness does not tolerate"
        );
    }
}

/// The harness catches differences of every kind it compares, not only statuses: every-directive's
/// config with a looser burst (refusal count), a header value, the health route logged, and
/// websockets off.
#[test]
fn a_wrong_config_is_caught_in_limits_headers_logs_and_websockets() {
    let diff = Differential::load(&fixtures(), "every-directive");
    let report = diff.run(BIN, |_| {
        let good = hand_written("every-directive");
        let wrong = swap(&good, "burst = 5\n", "burst = 10\n");
        let wrong = swap(
            &wrong,
            "X-Frame-Options = \"DENY\"",
            "X-Frame-Options = \"SAMEORIGIN\"",
        );
        let wrong = swap(&wrong, "access_log = false\n", "");
        swap(
            &wrong,
            "read_timeout = \"1h\"\n",
            "read_timeout = \"1h\"\nwebsocket = false\n",
        )
    });
    assert_caught(
        &report,
        &[
            ("limit_req burst past the limit", "refusals"),
            ("home page", "header x-frame-options"),
            ("health checks are not logged", "logged"),
            ("websocket upgrade", "status"),
            ("websocket upgrade", "websocket echo"),
        ],
    );
}
