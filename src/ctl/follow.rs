//! `rollout ... --wait`: follows a rollout by polling it, shows its progress, and turns its outcome into the exit code.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use reqwest::Method;

use super::client::{Client, Reply};
use super::render::{progress_key, progress_line, rollout_details, rollout_name, state_label};
use super::{json_text, service_path, CtlError};
use crate::api::{Phase, RolloutView};

/// How often `rollout ... --wait` looks at the rollout.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// Width of the redrawn progress line when $COLUMNS does not say.
const DEFAULT_COLUMNS: usize = 80;

/// Whether a rollout state is final, and if so whether it succeeded.
pub fn outcome(state: Phase) -> Option<bool> {
    match state {
        Phase::Progressing | Phase::Paused => None,
        Phase::Promoted => Some(true),
        Phase::RolledBack | Phase::Aborted => Some(false),
    }
}

/// Polls the rollout of `first` until it ends, showing its progress on stdout.
pub fn follow(
    client: &Client,
    service: &str,
    first: Reply<RolloutView>,
    json: bool,
) -> Result<String, CtlError> {
    let id = first.view.id;
    let path = service_path(service, "/rollouts/current");
    let mode = if json {
        ProgressMode::Off
    } else if std::io::stdout().is_terminal() {
        ProgressMode::Redraw
    } else {
        ProgressMode::Lines
    };
    let mut progress = Progress::new(mode);
    let mut reply = first;
    let done = loop {
        progress.show(&reply.view);
        if let Some(done) = outcome(reply.view.state) {
            break done;
        }
        std::thread::sleep(FOLLOW_INTERVAL);
        let next: Reply<RolloutView> = match client.call(Method::GET, &path, None, None) {
            Ok(next) => next,
            Err(e) => {
                progress.finish();
                return Err(CtlError::Refused(format!(
                    "{e}\nstopped following {}; it goes on without ctl (follow it again with: switchyard ctl rollout status {service} --wait)",
                    rollout_name(&reply.view)
                )));
            }
        };
        if next.view.id != id {
            progress.finish();
            return Err(CtlError::Refused(format!(
                "rollout {id} of \"{service}\" was replaced by {} while following it",
                rollout_name(&next.view)
            )));
        }
        reply = next;
    };
    progress.finish();
    let view = &reply.view;
    let text = if json {
        json_text(&reply.body)
    } else {
        rollout_details(view)
    };
    if done {
        return Ok(text);
    }
    // The details (or the JSON) go to stdout as on success; the reason is the error.
    print!("{text}");
    let reason = view.reason.as_deref().unwrap_or("no reason given");
    // Say where the traffic is unless the reason does already.
    let back = match view.state {
        Phase::RolledBack if !reason.contains("back on") => {
            format!("; the traffic is back on \"{}\"", view.stable)
        }
        _ => String::new(),
    };
    // "rollout 2 of "demo" rolled back: error rate …", but "rollout 2 of "demo": aborted by …".
    let state = state_label(view);
    let what = if reason.starts_with(&state) {
        ":".to_string()
    } else {
        format!(" {state}:")
    };
    Err(CtlError::Refused(format!(
        "{}{what} {reason}{back}",
        rollout_name(view)
    )))
}

/// How `--wait` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgressMode {
    /// Not at all (--json).
    Off,
    /// One line redrawn in place (a terminal).
    Redraw,
    /// One line per change of state, step, weight or hold (piped).
    Lines,
}

/// The progress shown while following a rollout.
struct Progress {
    mode: ProgressMode,
    started: Instant,
    /// What the last line printed showed (piped output).
    last: Option<String>,
    /// Whether the redrawn line is on screen (terminal).
    drawn: bool,
    /// Characters the redrawn line may take without wrapping.
    width: usize,
}

impl Progress {
    fn new(mode: ProgressMode) -> Progress {
        Progress {
            mode,
            started: Instant::now(),
            last: None,
            drawn: false,
            width: match mode {
                ProgressMode::Redraw => terminal_columns(),
                _ => 0,
            },
        }
    }

    fn show(&mut self, view: &RolloutView) {
        if self.mode == ProgressMode::Off {
            return;
        }
        let line = format!(
            "[{:>6.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            progress_line(view)
        );
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the rollout's follower; the exit code still tells.
        if self.mode == ProgressMode::Redraw {
            // A wrapped line could not be redrawn in place.
            let shown: String = line.chars().take(self.width.saturating_sub(1)).collect();
            let _ = write!(out, "\r\x1b[2K{shown}");
            self.drawn = true;
        } else {
            let key = progress_key(view);
            if self.last.as_ref() == Some(&key) {
                return;
            }
            self.last = Some(key);
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Ends the redrawn line.
    fn finish(&mut self) {
        if self.drawn {
            println!();
            self.drawn = false;
        }
    }
}

/// The terminal's width: $COLUMNS, else what `stty size` says of the terminal on stdin, else 80.
fn terminal_columns() -> usize {
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok());
    from_env
        .or_else(|| {
            let out = std::process::Command::new("stty")
                .arg("size")
                .stdin(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            // "ROWS COLUMNS"
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .filter(|&c| c > 0)
        .unwrap_or(DEFAULT_COLUMNS)
}
