//! `switchyard ctl` as a deploy script runs it: to completion (exit code, stdout, stderr), or in the background with its output in files a test can watch.

use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::Bin;

/// What one ctl run printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Bin {
    /// Runs `switchyard ctl ARGS` with stdout piped (not a terminal) and `SWITCHYARD_ADMIN` /
    /// `SWITCHYARD_TOKEN` set from `env` only.
    pub fn ctl(&self, env: &[(&str, &str)], args: &[&str]) -> Outcome {
        let output = self
            .command()
            .arg("ctl")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run switchyard ctl");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `switchyard ctl ARGS` in the background (environment as [`Bin::ctl`]), its stdout
    /// and stderr going to files.
    pub fn spawn_ctl(&self, env: &[(&str, &str)], args: &[&str]) -> CtlChild {
        let dir = tempfile::tempdir().expect("create temp dir");
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let child = self
            .command()
            .arg("ctl")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::from(
                std::fs::File::create(&stdout).expect("create ctl stdout"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("create ctl stderr"),
            ))
            .spawn()
            .expect("spawn switchyard ctl");
        CtlChild {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }
}

/// A ctl process running in the background; killed on drop if still running.
pub struct CtlChild {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl CtlChild {
    /// What it has printed to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits for it to exit.
    pub fn wait(mut self) -> Outcome {
        let status = self.child.wait().expect("wait for switchyard ctl");
        Outcome {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for CtlChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
