//! `switchyard ctl rollout` against a real proxy under load: --wait outcomes and exit codes, progress output, the other verbs.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Fast rollouts for tests: three steps of 300 ms, judged after 5 canary requests.
const FAST: &[&str] = &[
    "--steps",
    "20,50,100",
    "--interval",
    "300ms",
    "--min-requests",
    "5",
    "--max-error-rate",
    "0.05",
];

/// `switchyard ctl --admin URL ARGS…` with stdout piped (not a terminal).
fn run_ctl(admin_url: &str, args: &[&str]) -> Outcome {
    BIN.ctl(&[], &[&["--admin", admin_url], args].concat())
}

/// Steady GET requests through the proxy (about 150 a second): [`Load`]. Returns once the first
/// requests went through, so that a canary started next has traffic from its first step.
fn start_load(s: &Setup) -> Load {
    let load = Load::start(&s.world.url("api.test", ""), 1, Duration::from_micros(6500));
    assert!(load.wait_for(20), "the load loop made no requests");
    load
}

/// Stops the load; (answered with 2xx, failed).
fn finish(load: Load) -> (u64, u64) {
    let seen = load.finish();
    let ok = seen
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .count() as u64;
    (ok, seen.len() as u64 - ok)
}

/// [`World::blue_green`] (service "api": blue 100, green 0), a service "solo" that never has a
/// rollout, and the admin API without a token (loopback).
struct Setup {
    world: Running,
    admin: Admin,
    admin_url: String,
}

impl Setup {
    /// A proxy whose green pool fails `green_fail_ratio` of its requests.
    fn start(green_fail_ratio: f64) -> Setup {
        let green = Backend::builder("green")
            .fail_ratio(green_fail_ratio)
            .spawn()
            .unwrap();
        let world = World::new()
            .backend("blue")
            .with_backend("green", green)
            .route("*", "api")
            .pool("api", "blue", 100, &["blue"])
            .pool("api", "green", 0, &["green"])
            .pool("solo", "main", 1, &["blue"])
            .admin()
            .start(BIN);
        Setup {
            admin: world.admin(),
            admin_url: world.admin_url(),
            world,
        }
    }

    fn ctl(&self, args: &[&str]) -> Outcome {
        run_ctl(&self.admin_url, args)
    }

    /// Runs ctl and checks its exit code and that its stdout or stderr says `needle`.
    fn expect(&self, args: &[&str], code: i32, needle: &str) -> Outcome {
        let run = self.ctl(args);
        assert_eq!(run.code, code, "ctl {args:?}: {run}");
        assert!(
            run.stdout.contains(needle) || run.stderr.contains(needle),
            "ctl {args:?} did not say {needle:?}: {run}"
        );
        run
    }

    /// `ctl rollout start api --canary green` with the fast settings and `extra`.
    fn start_rollout(&self, extra: &[&str]) -> Outcome {
        self.ctl(&start_args("green", &[FAST, extra].concat()))
    }

    /// (blue, green) weights in force.
    fn weights(&self) -> (u64, u64) {
        let view = self.admin.get("/v1/services/api");
        (view.weight("blue"), view.weight("green"))
    }
}

/// `rollout start api --canary CANARY SETTINGS…`.
fn start_args<'a>(canary: &'a str, settings: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["rollout", "start", "api", "--canary", canary];
    args.extend_from_slice(settings);
    args
}

/// The progress lines of a piped `--wait` run, each as (state, step, weight, hold) and the line.
fn progress(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|line| {
            let text = line.split_once("] ").map_or(line, |(_, t)| t);
            // state  step i/n  green W%  (N requests this step | HOLD (N so far))  canary …,
            // where HOLD is the API's hold text, which starts with "holding" (ctl adds
            // "holding: " when it does not).
            let fields: Vec<&str> = text.split("  ").collect();
            assert!(fields.len() >= 5, "not a progress line: {line:?}");
            // A line is printed when the hold text changes, not its running count.
            let hold = if fields[3].starts_with("holding") {
                fields[3]
                    .rsplit_once(" (")
                    .map_or(fields[3], |(text, _so_far)| text)
            } else {
                ""
            };
            let key = format!("{}|{}|{}|{hold}", fields[0], fields[1], fields[2]);
            (key, line.to_string())
        })
        .collect()
}

/// The EVENT column of `rollout events`.
fn event_names(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect()
}

#[test]
fn wait_promotes_a_healthy_canary_with_one_line_per_change() {
    let s = Setup::start(0.0);
    let load = start_load(&s);
    let run = s.start_rollout(&["--wait"]);
    let (ok, failed) = finish(load);
    assert_eq!(run.code, 0, "{run}");

    let lines = progress(&run.stdout);
    assert!(lines.len() >= 3, "too few progress lines: {run}");
    for pair in lines.windows(2) {
        assert_ne!(
            pair[0].0, pair[1].0,
            "a line without a change of state, step, weight or hold:\n{}\n{}",
            pair[0].1, pair[1].1
        );
    }
    for (step, weight) in [("1/3", "20%"), ("2/3", "50%"), ("3/3", "100%")] {
        assert!(
            lines
                .iter()
                .any(|(_, l)| l.contains(&format!("step {step}  green {weight}"))),
            "no line for step {step} at {weight}: {run}"
        );
    }
    let last = &lines[lines.len() - 1].1;
    assert!(last.contains("] promoted  "), "{run}");
    assert!(
        run.stdout
            .contains("rollout 1 of \"api\": promoted, green at 100%"),
        "{run}"
    );
    assert_eq!(s.weights(), (0, 100));
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
}

#[test]
fn wait_rolls_back_a_failing_canary_and_exits_1_with_the_reason() {
    let s = Setup::start(0.5);
    let load = start_load(&s);
    let started = Instant::now();
    let run = s.start_rollout(&["--wait"]);
    let (ok, failed) = finish(load);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .contains("rollout 1 of \"api\" rolled back: error rate"),
        "{run}"
    );
    assert!(run.stderr.contains("back on \"blue\""), "{run}");
    assert_eq!(run.stderr.matches("back on").count(), 1, "{run}");
    assert!(run.stdout.contains("  reason    error rate"), "{run}");
    assert_eq!(s.weights(), (100, 0));
    // The shield: a failed GET on green was retried on blue, so no client saw a failure.
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);

    // --json --wait: no progress, the final view, the same exit code and reason.
    let run = s.ctl(&["--json", "rollout", "status", "api", "--wait"]);
    assert_eq!(run.code, 1, "{run}");
    let view: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(view["state"], "rolled_back", "{run}");
    assert!(run.stderr.contains("rolled back: error rate"), "{run}");

    // A finished rollout: status shows it (exit 0), --wait reports its outcome at once (exit 1).
    s.expect(&["rollout", "status", "api"], 0, "rolled back");
    s.expect(
        &["rollout", "status", "api", "--wait"],
        1,
        "rolled back: error rate",
    );

    let run = s.expect(&["rollout", "events", "api"], 0, "started");
    let events = event_names(&run.stdout);
    assert_eq!(events.first(), Some(&"started"), "{run}");
    assert_eq!(events.last(), Some(&"rolled_back"), "{run}");
}

#[test]
fn pause_resume_abort_promote_and_status() {
    let s = Setup::start(0.0);
    let load = start_load(&s);
    let slow = start_args("green", &["--steps", "10,50,100", "--interval", "60s"]);

    let run = s.ctl(&["rollout", "status", "solo"]);
    assert_eq!(run.code, 1, "a service without rollouts: {run}");
    assert!(!run.stderr.is_empty(), "{run}");

    let started = "rollout 1 of \"api\" started: progressing, green at 10% (step 1/3)";
    let run = s.expect(&slow, 0, started);
    assert!(
        run.stdout
            .contains("follow it with: switchyard ctl rollout status api --wait"),
        "{run}"
    );
    let run = s.ctl(&slow);
    assert_eq!(run.code, 1, "a second rollout while one is active: {run}");

    let run = s.expect(
        &["rollout", "status", "api"],
        0,
        "progressing, green at 10%",
    );
    assert!(run.stdout.contains("[10] 50 100 (%), every 60"), "{run}");
    let run = s.ctl(&["--json", "rollout", "status", "api"]);
    assert_eq!(run.code, 0, "{run}");
    let view: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (&view["state"], &view["canary_weight"], &view["kind"]),
        (&"progressing".into(), &10.into(), &"rollout".into())
    );

    s.expect(
        &["rollout", "pause", "api"],
        0,
        "rollout 1 of \"api\": paused, green at 10%",
    );
    s.expect(&["rollout", "resume", "api"], 0, ": progressing,");

    // Hand-set weights would fight the rollout: refused, naming it.
    s.expect(&["weights", "api", "blue=100", "green=0"], 1, "rollout 1");
    s.expect(&["switch", "api", "blue"], 1, "rollout 1");

    s.expect(&["rollout", "abort", "api"], 0, ": aborted,");
    assert_eq!(s.weights(), (100, 0));
    let run = s.ctl(&["rollout", "pause", "api"]);
    assert_eq!(run.code, 1, "pause without an active rollout: {run}");
    s.expect(
        &["rollout", "status", "api", "--wait"],
        1,
        "rollout 1 of \"api\": aborted",
    );

    let run = s.expect(&["rollout", "events", "api"], 0, "started");
    let events = event_names(&run.stdout);
    assert_eq!(events, ["started", "paused", "resumed", "aborted"], "{run}");
    let run = s.ctl(&["--json", "rollout", "events", "api"]);
    let body: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(body["events"].as_array().map(Vec::len), Some(4), "{run}");

    // A second rollout, promoted by hand.
    assert_eq!(s.ctl(&slow).code, 0);
    s.expect(
        &["rollout", "promote", "api"],
        0,
        "rollout 2 of \"api\": promoted, green at 100%",
    );
    assert_eq!(s.weights(), (0, 100));

    // A third, overridden by hand with --force: it is aborted and the weights apply.
    let back = start_args("blue", &["--interval", "60s"]);
    s.expect(&back, 0, "rollout 3 of \"api\" started");
    s.expect(
        &["weights", "api", "blue=30", "green=70", "--force"],
        0,
        "blue=30 green=70",
    );
    let run = s.expect(&["rollout", "status", "api"], 0, ": aborted,");
    assert!(run.stdout.contains("  reason    "), "{run}");
    let (_, failed) = finish(load);
    assert_eq!(failed, 0);
}

#[test]
fn a_step_short_of_traffic_holds_and_says_so() {
    let s = Setup::start(0.0);
    let start = start_args("green", &["--steps", "1,100", "--interval", "200ms"]);
    s.expect(&start, 0, "green at 1%");
    let held = wait_until(Duration::from_secs(5), || {
        s.ctl(&["rollout", "status", "api"])
            .stdout
            .contains("  holding   ")
    });
    let run = s.ctl(&["rollout", "status", "api"]);
    assert!(held, "no hold shown: {run}");
    assert!(run.stdout.contains("serves 20 requests"), "{run}");
    // Piped --wait prints the hold in its line; stopped by abort from here once it has.
    let follower = BIN.spawn_ctl(
        &[],
        &[
            "--admin",
            &s.admin_url,
            "rollout",
            "status",
            "api",
            "--wait",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || follower
            .stdout()
            .contains("holding")),
        "the follower printed no hold: {}",
        follower.stdout()
    );
    s.expect(&["rollout", "abort", "api"], 0, ": aborted,");
    let run = follower.wait();
    assert_eq!(run.code, 1, "{run}");
    let lines = progress(&run.stdout);
    assert!(
        lines[0].1.contains("  holding") && lines[0].1.contains("serves 20 requests"),
        "{run}"
    );
    assert!(lines[lines.len() - 1].1.contains("] aborted  "), "{run}");
}

#[test]
fn switch_watch_is_a_rollout_ctl_can_follow() {
    let s = Setup::start(0.0);
    let load = start_load(&s);
    let run = s.expect(
        &["switch", "api", "green", "--watch", "1s"],
        0,
        "switched to \"green\": service \"api\"",
    );
    assert!(
        run.stdout
            .contains("watching \"green\" for 1s (switch 1 of \"api\")"),
        "{run}"
    );
    let run = s.ctl(&["--json", "rollout", "status", "api"]);
    let view: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(view["kind"], "switch", "{run}");
    let run = s.ctl(&["rollout", "status", "api", "--wait"]);
    assert_eq!(run.code, 0, "a healthy switch outlives its watch: {run}");
    assert_eq!(s.weights(), (0, 100));
    let (_, failed) = finish(load);
    assert_eq!(failed, 0);
}

#[test]
fn wait_redraws_one_line_on_a_terminal() {
    // script(1) gives ctl a pseudo-terminal.
    let script = peer("script", "bsdutils");
    let s = Setup::start(0.0);
    let load = start_load(&s);
    let mut command = format!(
        "{} ctl --admin {} rollout start api --canary green",
        BIN.path().display(),
        s.admin_url
    );
    for arg in FAST {
        command.push(' ');
        command.push_str(arg);
    }
    command.push_str(" --wait");
    let output = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("COLUMNS", "200")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    finish(load);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let redraws = text.matches("\r\x1b[2K").count();
    assert!(redraws >= 3, "{redraws} redraws: {text:?}");
    // Every redraw replaces the line: no line break until the final summary.
    let (progress, summary) = text.split_once('\n').unwrap();
    assert!(progress.contains("] promoted  "), "{text:?}");
    assert!(summary.contains("promoted, green at 100%"), "{text:?}");
}

#[test]
fn rollout_usage_errors_exit_2() {
    // None of these gets as far as the network.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let with = |extra: &[&'static str]| start_args("green", extra);
    for args in [
        with(&["--steps", "5,1,100"]),
        with(&["--steps", "0,100"]),
        with(&["--steps", "1,50"]),
        with(&["--steps", "1,101"]),
        with(&["--steps", "a,100"]),
        with(&["--steps", ""]),
        with(&["--max-error-rate", "2"]),
        with(&["--max-error-rate", "-5%"]),
        with(&["--interval", "soon"]),
        with(&["--interval", "0s"]),
        with(&["--max-p99", "fast"]),
        with(&["--min-requests", "-1"]),
        vec!["rollout", "start", "api"],
        vec!["rollout", "pause"],
        vec!["rollout", "frobnicate", "api"],
        vec!["switch", "api", "green", "--watch", "later"],
    ] {
        let run = run_ctl(&closed, &args);
        assert_eq!(run.code, 2, "ctl {args:?}: {run}");
        assert!(!run.stderr.is_empty(), "ctl {args:?} said nothing");
    }
    let run = run_ctl(&closed, &with(&["--steps", "5,1,100"]));
    assert!(
        run.stderr
            .contains("1 is not above the step before it, 5; steps are canary weights in percent"),
        "{run}"
    );
    for sub in [
        "start", "status", "pause", "resume", "promote", "abort", "events",
    ] {
        let run = run_ctl(&closed, &["rollout", sub, "--help"]);
        assert_eq!(run.code, 0, "rollout {sub} --help: {run}");
        assert!(
            run.stdout.contains("Usage: switchyard ctl rollout"),
            "{run}"
        );
    }
}
