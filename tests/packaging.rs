//! The Debian package as an operator meets it: built by packaging/build-deb.sh from the debug binary, installed with `dpkg -i`, checked where it lands, purged without a trace.
//!
//! dpkg's database is the machine's: the test takes a machine-wide lock so that two runs (two
//! checkouts) never install at once, and it owns the machine's `switchyard` package (a leftover
//! from an interrupted run is purged first). It runs as root, as scripts/test.sh does; the tools
//! come from scripts/test.sh (cargo-deb from crates.io; systemd-analyze, logrotate and man from Debian).
//! systemd is not PID 1 here: the unit is verified with `systemd-analyze verify`, not started.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::peer;

const UNIT: &str = "/usr/lib/systemd/system/switchyard.service";
const CONFIG: &str = "/etc/switchyard/switchyard.toml";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/switchyard.service";

/// Runs `program args`; its output, which must be a success.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    assert!(
        out.status.success(),
        "{program:?} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Purges the package when dropped, so that a failed assertion leaves no install behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        // Nothing to do when the test purged it already.
        let _ = Command::new("dpkg")
            .args(["--purge", "switchyard"])
            .output();
    }
}

fn cargo_deb() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(home.map(|h| h.join("bin")))
        .map(|dir| dir.join("cargo-deb"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("cargo-deb is missing: cargo install cargo-deb --locked (scripts/test.sh does)")
        })
}

#[test]
fn the_package_installs_a_checked_config_a_valid_unit_and_purges_clean() {
    let uid = text(&run("id", &["-u"]));
    assert_eq!(
        uid.trim(),
        "0",
        "dpkg -i needs root (scripts/test.sh runs as root)"
    );
    let analyze = peer("systemd-analyze", "systemd");
    let logrotate = peer("logrotate", "logrotate");
    peer("man", "man-db");
    let cargo_deb = cargo_deb();

    // One run at a time on this machine: dpkg's database is shared by every checkout.
    let lock =
        std::fs::File::create(std::env::temp_dir().join("switchyard-packaging-test.lock")).unwrap();
    lock.lock().unwrap();
    let _ = Command::new("dpkg")
        .args(["--purge", "switchyard"])
        .output();

    // Build: the debug binary this test run was built with, packed as it is.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile::tempdir().unwrap();
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = cargo_deb.parent() {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.push(dir.to_path_buf());
        path = std::env::join_paths(dirs).unwrap();
    }
    let built = Command::new(root.join("packaging/build-deb.sh"))
        .arg("--debug")
        .args(["--output", out_dir.path().to_str().unwrap()])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(built.status.success(), "build-deb.sh: {}", text(&built));
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("build-deb.sh wrote a .deb");
    let contents = text(&run("dpkg-deb", &["--contents", deb.to_str().unwrap()]));

    // Install.
    let installed = Installed;
    run("dpkg", &["-i", deb.to_str().unwrap()]);

    // The installed binary passes `check` on the installed config, a conffile.
    let check = run("/usr/bin/switchyard", &["check", "--config", CONFIG]);
    assert!(text(&check).contains("config ok"), "{}", text(&check));
    let conffiles = text(&run(
        "dpkg-query",
        &["--showformat=${Conffiles}", "--show", "switchyard"],
    ));
    for file in [CONFIG, "/etc/logrotate.d/switchyard"] {
        assert!(
            conffiles.contains(file),
            "{file} is no conffile: {conffiles}"
        );
    }
    let config = std::fs::read_to_string(CONFIG).unwrap();
    for line in [
        r#"upgrade_socket = "/run/switchyard/upgrade.sock""#,
        r#"access_log = "/var/log/switchyard/access.log""#,
        r#"state_dir = "/var/lib/switchyard""#,
    ] {
        assert!(config.contains(line), "the installed config lacks {line}");
    }

    // The unit: systemd-analyze accepts it (its ExecStart binary exists now, and `man` finds the
    // pages its Documentation= names), and it asks for what the operations guide promises.
    let verify = run(&analyze, &["verify", UNIT]);
    assert!(
        !text(&verify).contains("switchyard.service"),
        "systemd-analyze verify complains about the unit: {}",
        text(&verify)
    );
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=switchyard",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/switchyard /var/log/switchyard",
        "ProtectHome=true",
        "PrivateTmp=true",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RuntimeDirectory=switchyard",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks `{line}`");
    }
    assert!(
        std::fs::read_link(WANTS).is_ok(),
        "the unit is not enabled ({WANTS})"
    );

    // The user and its state directory (0700), the log directory.
    let passwd = text(&run("getent", &["passwd", "switchyard"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(
        fields[5..],
        ["/var/lib/switchyard", "/usr/sbin/nologin"],
        "{passwd}"
    );
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {passwd}");
    let state = std::fs::metadata("/var/lib/switchyard").unwrap();
    assert_eq!(state.permissions().mode() & 0o7777, 0o700);
    assert_eq!(state.uid(), uid);
    assert_eq!(std::fs::metadata("/var/log/switchyard").unwrap().uid(), uid);

    // Completions and man pages where bash, zsh, fish and man look for them.
    let bash = run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/switchyard && complete -p switchyard",
        ],
    );
    assert!(text(&bash).contains("_switchyard"), "{}", text(&bash));
    for (file, marker) in [
        (
            "/usr/share/zsh/vendor-completions/_switchyard",
            "#compdef switchyard",
        ),
        (
            "/usr/share/fish/vendor_completions.d/switchyard.fish",
            "complete -c switchyard",
        ),
    ] {
        let script = std::fs::read_to_string(file).unwrap();
        assert!(script.contains(marker), "{file} lacks {marker}");
    }
    for page in [
        "switchyard",
        "switchyard-serve",
        "switchyard-ctl-rollout-start",
    ] {
        let man = run("zcat", &[&format!("/usr/share/man/man1/{page}.1.gz")]);
        assert!(text(&man).contains(&format!(".TH {page} 1")), "{page}.1");
    }
    for file in [
        "/usr/lib/switchyard/upgrade",
        "/usr/share/switchyard/prometheus/alerts.yml",
        "/usr/share/switchyard/prometheus/grafana-dashboard.json",
    ] {
        assert!(Path::new(file).is_file(), "{file} is not installed");
    }

    // logrotate takes the installed file: the access log is renamed and a new one created for
    // the switchyard user (the postrotate's SIGUSR1 finds no running unit here: systemd is not
    // PID 1, and the line says so without failing the rotation).
    std::fs::write("/var/log/switchyard/access.log", "{\"status\":200}\n").unwrap();
    let logstate = tempfile::NamedTempFile::new().unwrap();
    run(
        &logrotate,
        &[
            "--force",
            "--state",
            logstate.path().to_str().unwrap(),
            "/etc/logrotate.d/switchyard",
        ],
    );
    assert_eq!(
        std::fs::read_to_string("/var/log/switchyard/access.log.1").unwrap(),
        "{\"status\":200}\n"
    );
    let fresh = std::fs::metadata("/var/log/switchyard/access.log").unwrap();
    assert_eq!((fresh.len(), fresh.uid()), (0, uid));

    // Purge: nothing of the package is left.
    run("dpkg", &["--purge", "switchyard"]);
    drop(installed);
    for line in contents.lines() {
        let Some(path) = line.split_whitespace().last() else {
            continue;
        };
        let path = path.trim_start_matches('.');
        if line.starts_with('-') {
            assert!(!Path::new(path).exists(), "{path} is left after the purge");
        }
    }
    for path in [
        "/etc/switchyard",
        "/var/lib/switchyard",
        "/var/log/switchyard",
        "/usr/lib/switchyard",
        WANTS,
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} is left after the purge"
        );
    }
    let status = Command::new("dpkg-query")
        .args(["--show", "switchyard"])
        .output()
        .unwrap();
    assert!(!status.status.success(), "dpkg still knows the package");
}
