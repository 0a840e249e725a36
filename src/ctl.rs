//! `switchyard ctl`: a small blocking client of the admin API for deploy scripts, with exit codes they can trust.
//
// Exit codes: 0 success; 1 the API refused or failed, or could not be reached (the reason goes to
// stderr); 2 usage errors (clap's own, an argument not in pool=N form, an unusable --admin URL).
// The client speaks plain HTTP/1.1 over one `TcpStream` per request with `Connection: close`: the
// admin API listens on loopback or a private address, and no TLS stack is pulled in for it.
// `rollout ... --wait` follows a canary rollout by polling it; its exit code is the outcome (0
// promoted, 1 rolled back or aborted).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::backend::ChunkedDecoder;
use crate::config::values;

/// Where the admin API is unless --admin or SWITCHYARD_ADMIN say otherwise.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9900";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a reload of a large config.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `switch --wait-healthy` looks at the target pool.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often `rollout ... --wait` looks at the rollout.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// Width of the redrawn progress line when $COLUMNS does not say.
const DEFAULT_COLUMNS: usize = 80;
/// Largest response accepted from the admin API.
const MAX_RESPONSE: u64 = 16 << 20;

/// Talk to a running Switchyard through its admin API: read services, set weights, switch
/// blue/green, reload, run canary rollouts.
///
/// Speaks plain HTTP only (no https://): point it at the admin listener on loopback or a private
/// network. Exit codes: 0 success; 1 refused or failed (the reason on stderr), including an
/// unreachable admin API; 2 usage errors.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of the admin API (plain http:// only).
    #[arg(long, global = true, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN_URL)]
    pub admin: String,
    /// Bearer token of the admin API.
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON response instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show services: each pool's weight, whether it is a runtime override or the config's
    /// weight, healthy servers out of all, and each server's health and requests in flight.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Set pool weights of a service, e.g. `weights api blue=90 green=10`. Pools not named keep
    /// their weight. The weights are runtime overrides: they win over the config file and
    /// survive restarts and reloads until `clear-weights`.
    Weights {
        /// The service, as named in the config.
        service: String,
        /// POOL=WEIGHT pairs; weights are integers from 0 to 1000000.
        #[arg(required = true, value_name = "POOL=WEIGHT", value_parser = parse_pool_weight)]
        weights: Vec<(String, u32)>,
        /// Only apply if the config generation is still N (as `status` shows); exit 1 if not.
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
        /// Abort the service's active rollout, if any, and apply anyway (without it a change
        /// of a rollout's weights is refused, exit 1).
        #[arg(long)]
        force: bool,
    },
    /// Blue/green flip: POOL gets weight 100, every other pool of the service 0. Refused (exit 1)
    /// when POOL has no healthy server. Requests in flight on the old pool finish.
    Switch {
        /// The service, as named in the config.
        service: String,
        /// The pool to send all traffic to.
        pool: String,
        /// First wait up to this long (e.g. 60s, 2m) for POOL to have a healthy server, checking
        /// every 500ms; exit 1 if it never does.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait_healthy: Option<Duration>,
        /// After the flip, watch POOL for this long (e.g. 30s) with the service's rollout gates
        /// and switch back on its own if it fails them; `rollout status SERVICE --wait` follows it.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        watch: Option<DurationArg>,
        /// Abort the service's active rollout, if any, and apply anyway (without it a change
        /// of a rollout's weights is refused, exit 1).
        #[arg(long)]
        force: bool,
    },
    /// Re-read the config file, like SIGHUP. A rejected config keeps the old one serving; its
    /// errors are printed as file:line:col: reason (exit 1).
    Reload,
    /// Drop a service's runtime weight overrides: the config file's weights apply again.
    ClearWeights {
        /// The service, as named in the config.
        service: String,
        /// Abort the service's active rollout, if any, and apply anyway (without it a change
        /// of a rollout's weights is refused, exit 1).
        #[arg(long)]
        force: bool,
    },
    /// List the ACME certificates: names, status (pending, valid, renewing, failing, expired),
    /// challenge, expiry, next order and issuer. With --renew NAME, order a new certificate for
    /// the one covering NAME now instead.
    Certs {
        /// Force the renewal of the certificate that covers this name.
        #[arg(long, value_name = "NAME")]
        renew: Option<String>,
    },
    /// Canary rollouts: shift traffic to a pool step by step, judged by its live error rate and
    /// latency, rolled back on their own when the canary fails a gate.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of the canary pool. Options not given take the service's
    /// `[services.NAME.rollout]` settings. With --wait, follow it to the end: exit 0 when
    /// promoted, 1 when rolled back or aborted.
    Start(StartArgs),
    /// Show the service's active or most recent rollout. With --wait, follow it to the end: exit
    /// 0 when promoted, 1 when rolled back or aborted.
    Status {
        /// The service, as named in the config.
        service: String,
        /// Follow the rollout until it ends, showing its progress.
        #[arg(long)]
        wait: bool,
    },
    /// Hold the active rollout at its current step until `resume`.
    Pause {
        /// The service, as named in the config.
        service: String,
    },
    /// Let a paused rollout step on again.
    Resume {
        /// The service, as named in the config.
        service: String,
    },
    /// End the active rollout now with the canary at 100%, skipping the remaining steps.
    Promote {
        /// The service, as named in the config.
        service: String,
    },
    /// End the active rollout now and put the traffic back on the stable pool.
    Abort {
        /// The service, as named in the config.
        service: String,
    },
    /// List what happened in the service's active or most recent rollout: steps, holds, the
    /// gates' figures at each, and the reason it ended.
    Events {
        /// The service, as named in the config.
        service: String,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The service, as named in the config.
    pub service: String,
    /// The pool to roll out.
    #[arg(long, value_name = "POOL")]
    pub canary: String,
    /// The pool that keeps the rest of the traffic and gets it all back on a rollback (default:
    /// the service's setting).
    #[arg(long, value_name = "POOL")]
    pub stable: Option<String>,
    /// The canary's weight at each step in percent, ascending from 1 to 100 and ending at 100.
    #[arg(long, value_name = "PERCENTS", value_parser = parse_steps)]
    pub steps: Option<Steps>,
    /// How long each step lasts before the next, if the canary passes the gates (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub interval: Option<DurationArg>,
    /// Roll back when the canary's error rate is above this (0.05 or 5%).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub max_error_rate: Option<f64>,
    /// Roll back when the canary's p99 latency is above this (e.g. 500ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub max_p99: Option<DurationArg>,
    /// Canary requests a step needs before it may move on.
    #[arg(long, value_name = "N")]
    pub min_requests: Option<u64>,
    /// Do not retry the canary's failed idempotent requests on the stable pool.
    #[arg(long)]
    pub no_shield: bool,
    /// Follow the rollout until it ends, showing its progress.
    #[arg(long)]
    pub wait: bool,
}

/// Canary weights in percent, one per step (see [`parse_steps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps(pub Vec<u32>);

/// A duration as typed (sent to the API as is) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationArg {
    pub text: String,
    pub value: Duration,
}

/// Why a ctl command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid admin URL \"{url}\": {reason}")]
    Url { url: String, reason: String },
    #[error("the token contains a line break or control character")]
    Token,
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("unexpected answer from the admin API at {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The API answered with an error: its message, and each config error of a rejected reload.
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        errors: Vec<String>,
    },
    #[error("{0}")]
    Refused(String),
}

impl CtlError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Url { .. } | CtlError::Token => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs one ctl command; prints the result on stdout, or the reason on stderr.
pub fn run(args: &CtlArgs) -> ExitCode {
    let result =
        Client::new(&args.admin, args.token.as_deref()).and_then(|client| execute(&client, args));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard ctl: {e}");
            if let CtlError::Api { errors, .. } = &e {
                for line in errors {
                    eprintln!("{line}");
                }
            }
            e.exit_code()
        }
    }
}

/// Carries out the command; returns what to print on success.
fn execute(client: &Client, args: &CtlArgs) -> Result<String, CtlError> {
    let (reply, summary) = match &args.command {
        CtlCommand::Status { service } => {
            let path = match service {
                Some(s) => service_path(s, ""),
                None => "/v1/services".to_string(),
            };
            let reply = client.call("GET", &path, None, None)?;
            let summary = status_table(&reply.value);
            (reply, summary)
        }
        CtlCommand::Weights {
            service,
            weights,
            if_match,
            force,
        } => {
            let map: BTreeMap<&str, u32> = weights.iter().map(|(p, w)| (p.as_str(), *w)).collect();
            let path = forced(service_path(service, "/weights"), *force);
            let reply = client.call("PUT", &path, Some(&json!(map)), *if_match)?;
            let summary = format!("weights set: {}\n", weights_line(&reply.value));
            (reply, summary)
        }
        CtlCommand::Switch {
            service,
            pool,
            wait_healthy,
            watch,
            force,
        } => {
            if let Some(limit) = wait_healthy {
                wait_healthy_pool(client, service, pool, *limit)?;
            }
            let path = forced(service_path(service, "/switch"), *force);
            let mut body = json!({ "to": pool });
            if let Some(watch) = watch {
                body["watch"] = json!(watch.text);
            }
            let reply = client.call("POST", &path, Some(&body), None)?;
            let mut summary = format!("switched to \"{pool}\": {}\n", weights_line(&reply.value));
            let rollout = &reply.value["rollout"];
            if rollout.is_object() {
                summary.push_str(&format!(
                    "watching \"{pool}\" for {} ({}); follow it with: switchyard ctl rollout status {service} --wait\n",
                    watch.as_ref().map_or("?", |w| w.text.as_str()),
                    rollout_name(rollout),
                ));
            }
            (reply, summary)
        }
        CtlCommand::Reload => {
            let reply = client.call("POST", "/v1/reload", None, None)?;
            let summary = format!("reloaded (generation {})\n", reply.value["generation"]);
            (reply, summary)
        }
        CtlCommand::ClearWeights { service, force } => {
            let path = forced(service_path(service, "/weights"), *force);
            let reply = client.call("DELETE", &path, None, None)?;
            let summary = format!(
                "overrides cleared, the config's weights apply: {}\n",
                weights_line(&reply.value)
            );
            (reply, summary)
        }
        CtlCommand::Certs { renew: Some(name) } => {
            let path = format!("/v1/certs/{}/renew", encode_segment(name));
            let reply = client.call("POST", &path, None, None)?;
            let summary = format!(
                "renewal of certificate \"{}\" requested; `switchyard ctl certs` shows its progress\n",
                str_of(&reply.value["certificate"])
            );
            (reply, summary)
        }
        CtlCommand::Certs { renew: None } => {
            let reply = client.call("GET", "/v1/certs", None, None)?;
            let summary = crate::acme::view::table(&reply.value);
            (reply, summary)
        }
        CtlCommand::Rollout { command } => return rollout(client, command, args.json),
    };
    Ok(if args.json {
        json_text(&reply)
    } else {
        summary
    })
}

/// The body of a reply as sent, ending in a line break.
fn json_text(reply: &Reply) -> String {
    let mut text = String::from_utf8_lossy(&reply.body).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Polls the service until `pool` has an available server, or `limit` passes.
fn wait_healthy_pool(
    client: &Client,
    service: &str,
    pool: &str,
    limit: Duration,
) -> Result<(), CtlError> {
    let deadline = Instant::now() + limit;
    let path = service_path(service, "");
    let mut announced = false;
    loop {
        let view = client.call("GET", &path, None, None)?.value;
        let found = view["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == pool));
        let Some(p) = found else {
            return Err(CtlError::Refused(format!(
                "service \"{service}\" has no pool \"{pool}\""
            )));
        };
        if p["healthy_servers"].as_u64().unwrap_or(0) > 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CtlError::Refused(format!(
                "pool \"{pool}\" of service \"{service}\" has no healthy server after waiting {}; not switched",
                humantime::format_duration(limit)
            )));
        }
        if !announced {
            eprintln!(
                "waiting up to {} for pool \"{pool}\" of service \"{service}\" to have a healthy server...",
                humantime::format_duration(limit)
            );
            announced = true;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// `service "api": blue=90 green=10 (generation 7)`
fn weights_line(view: &Value) -> String {
    let pools: Vec<String> = view["pools"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| format!("{}={}", str_of(&p["name"]), p["weight"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "service \"{}\": {} (generation {})",
        str_of(&view["name"]),
        pools.join(" "),
        view["generation"]
    )
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// The human view of `GET /v1/services` or `GET /v1/services/{s}`.
fn status_table(body: &Value) -> String {
    let services: Vec<&Value> = match body["services"].as_array() {
        Some(list) => list.iter().collect(),
        None => vec![body],
    };
    let mut out = String::new();
    for (i, svc) in services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "service \"{}\"  generation {}  balance {}\n",
            str_of(&svc["name"]),
            svc["generation"],
            str_of(&svc["balance"])
        ));
        out.push_str(&format!(
            "  {:<16} {:>7} {:>7} {:>8}\n",
            "POOL", "WEIGHT", "CONFIG", "HEALTHY"
        ));
        for pool in svc["pools"].as_array().into_iter().flatten() {
            let servers = pool["servers"].as_array().map_or(0, Vec::len);
            let overridden = pool["overridden"].as_bool().unwrap_or(false);
            out.push_str(&format!(
                "  {:<16} {:>7} {:>7} {:>8}{}\n",
                str_of(&pool["name"]),
                pool["weight"].to_string(),
                pool["config_weight"].to_string(),
                format!("{}/{servers}", pool["healthy_servers"]),
                if overridden { "  (override)" } else { "" }
            ));
            for s in pool["servers"].as_array().into_iter().flatten() {
                let health = if s["available"].as_bool().unwrap_or(false) {
                    "up"
                } else if s["ejected"].as_bool().unwrap_or(false) {
                    "ejected (passive check)"
                } else {
                    "down (health check)"
                };
                out.push_str(&format!(
                    "    {:<24} {:<24} in flight {}\n",
                    str_of(&s["address"]),
                    health,
                    s["in_flight"]
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Rollouts
// ------------------------------------------------------------------------------------------------

/// Carries out a `rollout` subcommand; returns what to print on success.
fn rollout(client: &Client, command: &RolloutCommand, json: bool) -> Result<String, CtlError> {
    let current =
        |service: &str, suffix: &str| service_path(service, &format!("/rollouts/current{suffix}"));
    let (service, reply, wait) = match command {
        RolloutCommand::Start(args) => {
            let path = service_path(&args.service, "/rollouts");
            let reply = client.call("POST", &path, Some(&start_body(args)), None)?;
            (&args.service, reply, args.wait)
        }
        RolloutCommand::Status { service, wait } => {
            let reply = client.call("GET", &current(service, ""), None, None)?;
            (service, reply, *wait)
        }
        RolloutCommand::Pause { service }
        | RolloutCommand::Resume { service }
        | RolloutCommand::Promote { service }
        | RolloutCommand::Abort { service } => {
            let action = match command {
                RolloutCommand::Pause { .. } => "/pause",
                RolloutCommand::Resume { .. } => "/resume",
                RolloutCommand::Promote { .. } => "/promote",
                _ => "/abort",
            };
            let reply = client.call("POST", &current(service, action), None, None)?;
            (service, reply, false)
        }
        RolloutCommand::Events { service } => {
            let reply = client.call("GET", &current(service, "/events"), None, None)?;
            return Ok(if json {
                json_text(&reply)
            } else {
                events_table(&reply.value)
            });
        }
    };
    if wait {
        return follow(client, service, reply, json);
    }
    if json {
        return Ok(json_text(&reply));
    }
    let view = &reply.value;
    Ok(match command {
        RolloutCommand::Status { .. } => rollout_details(view),
        RolloutCommand::Start(_) => format!(
            "{} started: {}\nfollow it with: switchyard ctl rollout status {service} --wait\n",
            rollout_name(view),
            rollout_line(view),
        ),
        _ => format!("{}: {}\n", rollout_name(view), rollout_line(view)),
    })
}

/// The JSON body of `POST /v1/services/{s}/rollouts`: only the options given.
fn start_body(args: &StartArgs) -> Value {
    let mut body = json!({ "canary": args.canary });
    if let Some(stable) = &args.stable {
        body["stable"] = json!(stable);
    }
    if let Some(steps) = &args.steps {
        body["steps"] = json!(steps.0);
    }
    if let Some(interval) = &args.interval {
        body["interval"] = json!(interval.text);
    }
    if let Some(rate) = args.max_error_rate {
        body["max_error_rate"] = json!(rate);
    }
    if let Some(p99) = &args.max_p99 {
        body["max_p99"] = json!(p99.text);
    }
    if let Some(n) = args.min_requests {
        body["min_requests"] = json!(n);
    }
    if args.no_shield {
        body["shield"] = json!(false);
    }
    body
}

/// Whether a rollout state is final, and if so whether it succeeded.
fn outcome(state: &str) -> Option<bool> {
    match state {
        "progressing" | "paused" => None,
        "promoted" => Some(true),
        // rolled_back, aborted, and anything this ctl does not know yet: not a success.
        _ => Some(false),
    }
}

/// Polls the rollout of `first` until it ends, showing its progress on stdout.
fn follow(client: &Client, service: &str, first: Reply, json: bool) -> Result<String, CtlError> {
    let id = first.value["id"].clone();
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
        progress.show(&reply.value);
        if let Some(done) = outcome(str_of(&reply.value["state"])) {
            break done;
        }
        std::thread::sleep(FOLLOW_INTERVAL);
        let next = match client.call("GET", &path, None, None) {
            Ok(next) => next,
            Err(e) => {
                progress.finish();
                return Err(CtlError::Refused(format!(
                    "{e}\nstopped following {}; it goes on without ctl (follow it again with: switchyard ctl rollout status {service} --wait)",
                    rollout_name(&reply.value)
                )));
            }
        };
        if next.value["id"] != id {
            progress.finish();
            return Err(CtlError::Refused(format!(
                "rollout {id} of \"{service}\" was replaced by {} while following it",
                rollout_name(&next.value)
            )));
        }
        reply = next;
    };
    progress.finish();
    let view = &reply.value;
    let text = if json {
        json_text(&reply)
    } else {
        rollout_details(view)
    };
    if done {
        return Ok(text);
    }
    // The details (or the JSON) go to stdout as on success; the reason is the error.
    print!("{text}");
    let reason = view["reason"].as_str().unwrap_or("no reason given");
    // Say where the traffic is unless the reason does already.
    let back = match str_of(&view["state"]) {
        "rolled_back" if !reason.contains("back on") => {
            format!("; the traffic is back on \"{}\"", str_of(&view["stable"]))
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

    fn show(&mut self, view: &Value) {
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

/// What makes a progress line worth printing again when piped.
fn progress_key(view: &Value) -> String {
    format!(
        "{}|{}|{}|{}",
        view["state"], view["step"], view["canary_weight"], view["holding"]
    )
}

/// `progressing  step 2/5  green 5%  17 requests this step  canary 120 req 2.5% err p99 8.0ms`,
/// with `holding …` before the step's requests while the step holds. (The hold text stays the
/// same while the step holds, so a piped --wait prints a line when the hold starts, not per
/// request.)
fn progress_line(view: &Value) -> String {
    let live = &view["canary_live"];
    let step = match view["holding"].as_str() {
        Some(holding) => format!("{} ({} so far)", hold_text(holding), view["step_requests"]),
        None => format!("{} requests this step", view["step_requests"]),
    };
    format!(
        "{}  step {}  {} {}%  {step}  canary {} req {} err p99 {}",
        state_label(view),
        step_of(view),
        str_of(&view["canary"]),
        view["canary_weight"],
        live["requests"],
        percent(&live["error_rate"]),
        millis(&live["p99_ms"]),
    )
}

/// The API's hold text, starting with "holding" (it may say so itself).
fn hold_text(holding: &str) -> String {
    if holding.starts_with("holding") {
        holding.to_string()
    } else {
        format!("holding: {holding}")
    }
}

/// `rollout 3 of "demo"` (or `switch 3 of "demo"` for a watched switch).
fn rollout_name(view: &Value) -> String {
    format!(
        "{} {} of \"{}\"",
        view["kind"].as_str().unwrap_or("rollout"),
        view["id"],
        str_of(&view["service"])
    )
}

/// `rolled back`, `progressing`, …
fn state_label(view: &Value) -> String {
    str_of(&view["state"]).replace('_', " ")
}

/// `2/5`: the 1-based step out of all.
fn step_of(view: &Value) -> String {
    let total = view["steps"].as_array().map_or(0, Vec::len);
    match view["step"].as_u64() {
        Some(step) => format!("{}/{total}", step + 1),
        None => format!("?/{total}"),
    }
}

/// `progressing, green at 5% (step 2/5), stable blue`
fn rollout_line(view: &Value) -> String {
    format!(
        "{}, {} at {}% (step {}), stable \"{}\"",
        state_label(view),
        str_of(&view["canary"]),
        view["canary_weight"],
        step_of(view),
        str_of(&view["stable"]),
    )
}

/// A ratio as a percentage (`2.5%`), `-` when absent.
fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// Milliseconds (`8.0ms`), `-` when absent.
fn millis(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}ms"))
}

/// `120 requests, 3 errors (2.5%), p50 1.2ms, p99 8.0ms in the last 10s`
fn live_line(live: &Value) -> String {
    if !live.is_object() {
        return "-".to_string();
    }
    format!(
        "{} requests, {} errors ({}), p50 {}, p99 {} in the last {}s",
        live["requests"],
        live["errors"],
        percent(&live["error_rate"]),
        millis(&live["p50_ms"]),
        millis(&live["p99_ms"]),
        live["window_seconds"],
    )
}

/// The human view of a rollout, for `rollout status`.
fn rollout_details(view: &Value) -> String {
    let steps: Vec<String> = view["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| {
            if Some(i as u64) == view["step"].as_u64() {
                format!("[{w}]")
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut gates = vec![format!(
        "error rate at most {}",
        percent(&view["max_error_rate"])
    )];
    if !view["max_p99_ms"].is_null() {
        gates.push(format!("p99 at most {}", millis(&view["max_p99_ms"])));
    }
    gates.push(format!(
        "at least {} canary requests a step",
        view["min_requests"]
    ));
    let shield = if view["shield"].as_bool().unwrap_or(false) {
        "on"
    } else {
        "off"
    };
    let mut out = format!("{}: {}\n", rollout_name(view), rollout_line(view));
    let mut row = |name: &str, value: String| out.push_str(&format!("  {name:<9} {value}\n"));
    row(
        "steps",
        format!(
            "{} (%), every {}s; this step since {}, {} canary requests",
            steps.join(" "),
            view["interval_seconds"],
            str_of(&view["step_started_at"]),
            view["step_requests"],
        ),
    );
    row("gates", format!("{}; shield {shield}", gates.join(", ")));
    if let Some(holding) = view["holding"].as_str() {
        row(
            "holding",
            holding.trim_start_matches("holding ").to_string(),
        );
    }
    for side in ["canary", "stable"] {
        let live = live_line(&view[format!("{side}_live").as_str()]);
        row(side, format!("{}: {live}", str_of(&view[side])));
    }
    let finished = match view["finished_at"].as_str() {
        Some(at) => format!(", finished {at}"),
        None => String::new(),
    };
    row(
        "started",
        format!("{}{finished}", str_of(&view["started_at"])),
    );
    if let Some(reason) = view["reason"].as_str() {
        row("reason", reason.to_string());
    }
    out
}

/// An event's time: RFC 3339 as sent, or from milliseconds since the Unix epoch.
fn event_time(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        None => str_of(v).to_string(),
    }
}

/// The human view of `GET …/rollouts/current/events`.
fn events_table(body: &Value) -> String {
    let mut out = format!(
        "{:<24}  {:<8} {:<11} {:>4} {:>6} {:>8} {:>6} {:>7} {:>9}  {}\n",
        "TIME",
        "ROLLOUT",
        "EVENT",
        "STEP",
        "WEIGHT",
        "REQUESTS",
        "ERRORS",
        "ERROR%",
        "P99",
        "MESSAGE"
    );
    let or_dash = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            v.to_string()
        }
    };
    for e in body["events"].as_array().into_iter().flatten() {
        let step = e["step"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |s| (s + 1).to_string());
        let weight = e["canary_weight"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |w| format!("{w}%"));
        out.push_str(&format!(
            "{:<24}  {:<8} {:<11} {:>4} {:>6} {:>8} {:>6} {:>7} {:>9}  {}\n",
            event_time(&e["time"]),
            or_dash(&e["rollout"]),
            str_of(&e["event"]),
            step,
            weight,
            or_dash(&e["requests"]),
            or_dash(&e["errors"]),
            percent(&e["error_rate"]),
            millis(&e["p99_ms"]),
            e["message"].as_str().unwrap_or_default(),
        ));
    }
    out
}

/// `path?force=true` when `force`.
fn forced(path: String, force: bool) -> String {
    if force {
        path + "?force=true"
    } else {
        path
    }
}

/// `/v1/services/{service}{suffix}` with the service name percent-encoded.
fn service_path(service: &str, suffix: &str) -> String {
    format!("/v1/services/{}{suffix}", encode_segment(service))
}

/// One path segment, percent-encoded.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// `blue=90` → `("blue", 90)`.
pub fn parse_pool_weight(arg: &str) -> Result<(String, u32), String> {
    let bad =
        || format!("expected POOL=WEIGHT with a whole number, such as blue=90; got \"{arg}\"");
    let (pool, weight) = arg.split_once('=').ok_or_else(bad)?;
    let pool = pool.trim();
    if pool.is_empty() {
        return Err(bad());
    }
    let weight: u32 = weight.trim().parse().map_err(|_| bad())?;
    Ok((pool.to_string(), weight))
}

/// `1,5,25,50,100`: canary weights in percent, ascending from 1 to 100 and ending at 100.
pub fn parse_steps(arg: &str) -> Result<Steps, String> {
    let bad = |why: String| {
        format!("{why}; steps are canary weights in percent, ascending from 1 to 100 and ending at 100, such as 1,5,25,50,100")
    };
    let mut steps: Vec<u32> = Vec::new();
    for part in arg.split(',') {
        let part = part.trim();
        let weight: u32 = part
            .parse()
            .map_err(|_| bad(format!("\"{part}\" is not a whole number")))?;
        if !(1..=100).contains(&weight) {
            return Err(bad(format!("{weight} is not between 1 and 100")));
        }
        if let Some(&before) = steps.last() {
            if weight <= before {
                return Err(bad(format!(
                    "{weight} is not above the step before it, {before}"
                )));
            }
        }
        steps.push(weight);
    }
    if steps.last() != Some(&100) {
        return Err(bad("the last step is not 100".to_string()));
    }
    Ok(Steps(steps))
}

/// `0.05` or `5%`: a share from 0 to 1.
pub fn parse_ratio(arg: &str) -> Result<f64, String> {
    let text = arg.trim();
    let ratio = match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    match ratio {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "expected a share from 0 to 1 such as 0.05, or a percentage such as 5%; got \"{arg}\""
        )),
    }
}

/// A duration above zero, kept as typed for the API.
pub fn parse_duration_arg(arg: &str) -> Result<DurationArg, String> {
    let value = parse_duration(arg)?;
    if value.is_zero() {
        return Err(format!("the duration \"{arg}\" must be longer than 0"));
    }
    Ok(DurationArg {
        text: arg.trim().to_string(),
        value,
    })
}

/// `60s`, `500ms`, `2m`: the config file's duration syntax.
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    values::Duration::parse(arg).map(|d| d.0)
}

/// Where the admin API is: host, port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl AdminUrl {
    /// `http://host[:port][/prefix]`, or `host:port` alone.
    pub fn parse(url: &str) -> Result<AdminUrl, CtlError> {
        let bad = |reason: &str| CtlError::Url {
            url: url.into(),
            reason: reason.into(),
        };
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(bad("ctl speaks plain http only; use http://"));
        } else if url.contains("://") {
            return Err(bad("only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported; use --token"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None => 80,
        };
        if path.contains(['?', '#', ' ']) {
            return Err(bad("the URL may only have a path prefix"));
        }
        Ok(AdminUrl {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A blocking HTTP/1.1 client for the admin API; one connection per request.
struct Client {
    url: AdminUrl,
    /// The URL as given, for messages.
    display: String,
    token: Option<String>,
}

/// A successful answer: the JSON as parsed and the body as sent (for --json).
struct Reply {
    value: Value,
    body: Vec<u8>,
}

/// One response: status and body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Client {
    fn new(url: &str, token: Option<&str>) -> Result<Client, CtlError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if token.is_some_and(|t| t.bytes().any(|b| b.is_ascii_control())) {
            return Err(CtlError::Token);
        }
        Ok(Client {
            url: AdminUrl::parse(url)?,
            display: url.to_string(),
            token: token.map(str::to_string),
        })
    }

    /// Sends a request and returns the JSON body of a 2xx answer; anything else is an error with
    /// the API's own message.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Reply, CtlError> {
        let answer = self.send(method, path, body, if_match)?;
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        if (200..300).contains(&answer.status) {
            let value = parsed.ok_or_else(|| self.protocol("the response body is not JSON"))?;
            return Ok(Reply {
                value,
                body: answer.body,
            });
        }
        let Some(err) = parsed.filter(|v| v["error"].is_string()) else {
            let text = String::from_utf8_lossy(&answer.body);
            return Err(CtlError::Api {
                status: answer.status,
                message: format!("the admin API answered {}: {}", answer.status, text.trim()),
                errors: Vec::new(),
            });
        };
        let mut message = str_of(&err["error"]).to_string();
        if answer.status == 401 {
            message.push_str(" (set --token or SWITCHYARD_TOKEN)");
        }
        let errors = err["errors"]
            .as_array()
            .map(|list| list.iter().map(|e| str_of(e).to_string()).collect())
            .unwrap_or_default();
        Err(CtlError::Api {
            status: answer.status,
            message,
            errors,
        })
    }

    fn protocol(&self, reason: &str) -> CtlError {
        CtlError::Protocol {
            url: self.display.clone(),
            reason: reason.into(),
        }
    }

    fn connect(&self) -> Result<TcpStream, CtlError> {
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.display.clone(),
            reason,
        };
        let addrs = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(unreachable(last.map_or_else(
            || "the host name has no address".to_string(),
            |e| e.to_string(),
        )))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Answer, CtlError> {
        let payload = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchyard-ctl/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.url.prefix,
            self.url.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(generation) = if_match {
            request.push_str(&format!("If-Match: \"{generation}\"\r\n"));
        }
        if body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        if method != "GET" {
            request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        }
        request.push_str("\r\n");

        let mut stream = self.connect()?;
        let io = |e: std::io::Error| CtlError::Unreachable {
            url: self.display.clone(),
            reason: e.to_string(),
        };
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut message = request.into_bytes();
        message.extend_from_slice(&payload);
        stream.write_all(&message).map_err(io)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(io)?;
        parse_response(&raw).map_err(|reason| self.protocol(reason))
    }
}

/// Parses a whole HTTP/1.1 response read until the server closed the connection.
pub(crate) fn parse_response(raw: &[u8]) -> Result<Answer, &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the connection closed before a complete response")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the response head is not text")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP/1.x status line")?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        decoder
            .decode(rest, &mut body)
            .map_err(|_| "bad chunked body")?;
        if !decoder.is_done() {
            return Err("the chunked body ended early");
        }
        body
    } else if let Some(len) = content_length {
        rest.get(..len).ok_or("the body ended early")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pool_weights() {
        assert_eq!(parse_pool_weight("blue=90"), Ok(("blue".into(), 90)));
        assert_eq!(parse_pool_weight("green = 0"), Ok(("green".into(), 0)));
        for bad in ["blue", "=5", "blue=", "blue=-1", "blue=1.5", "blue=x"] {
            assert!(parse_pool_weight(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_admin_urls() {
        let url = |s: &str| AdminUrl::parse(s).expect(s);
        assert_eq!(
            url("http://127.0.0.1:9900"),
            AdminUrl {
                host: "127.0.0.1".into(),
                port: 9900,
                prefix: String::new()
            }
        );
        assert_eq!(
            url("http://admin.internal/switchyard/").prefix,
            "/switchyard"
        );
        assert_eq!(url("http://admin.internal").port, 80);
        assert_eq!(url("localhost:9901").port, 9901);
        let v6 = url("http://[::1]:9900");
        assert_eq!(
            (v6.host.as_str(), v6.authority()),
            ("::1", "[::1]:9900".into())
        );
        for bad in [
            "https://x:1",
            "ftp://x",
            "http://:9900",
            "http://x:port",
            "http://u@x:1",
        ] {
            assert!(AdminUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_responses() {
        let a =
            parse_response(b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}").expect("ok");
        assert_eq!((a.status, a.body.as_slice()), (409, &b"{}"[..]));
        let a = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(a.body, b"{}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn encodes_service_names() {
        assert_eq!(service_path("api", "/weights"), "/v1/services/api/weights");
        assert_eq!(service_path("a b/c", ""), "/v1/services/a%20b%2Fc");
    }

    #[test]
    fn status_table_marks_overrides() {
        let body = json!({"generation": 3, "services": [{
        "name": "demo", "generation": 3, "balance": "round_robin",
        "pools": [
            {"name": "blue", "weight": 50, "config_weight": 100, "overridden": true,
             "healthy_servers": 1, "servers": [{"address": "127.0.0.1:1", "available": true,
             "healthy": true, "ejected": false, "in_flight": 0, "weight": 1}]},
            {"name": "green", "weight": 0, "config_weight": 0, "overridden": false,
             "healthy_servers": 0, "servers": [{"address": "127.0.0.1:2", "available": false,
             "healthy": true, "ejected": true, "in_flight": 0, "weight": 1}]}
        ]}]});
        let table = status_table(&body);
        let blue = table
            .lines()
            .find(|l| l.contains("blue"))
            .expect("blue row");
        assert!(
            blue.contains("(override)") && blue.contains("1/1"),
            "{table}"
        );
        let green = table
            .lines()
            .find(|l| l.contains("green"))
            .expect("green row");
        assert!(
            !green.contains("(override)") && green.contains("0/1"),
            "{table}"
        );
        assert!(table.contains("ejected"), "{table}");
    }

    #[test]
    fn parses_steps() {
        assert_eq!(
            parse_steps("1,5,25,50,100"),
            Ok(Steps(vec![1, 5, 25, 50, 100]))
        );
        assert_eq!(parse_steps(" 50 , 100"), Ok(Steps(vec![50, 100])));
        assert_eq!(parse_steps("100"), Ok(Steps(vec![100])));
        for (bad, why) in [
            ("", "\"\" is not a whole number"),
            ("5,x,100", "\"x\" is not a whole number"),
            ("0,100", "0 is not between 1 and 100"),
            ("5,101", "101 is not between 1 and 100"),
            ("50,5,100", "5 is not above the step before it, 50"),
            ("5,5,100", "5 is not above the step before it, 5"),
            ("1,5,50", "the last step is not 100"),
        ] {
            let err = parse_steps(bad).expect_err(bad);
            assert!(err.starts_with(why), "{bad}: {err}");
            assert!(err.contains("such as 1,5,25,50,100"), "{err}");
        }
    }

    #[test]
    fn parses_ratios_and_durations() {
        assert_eq!(parse_ratio("0.05"), Ok(0.05));
        assert_eq!(parse_ratio("5%"), Ok(0.05));
        assert_eq!(parse_ratio("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "101%", "NaN", "inf", "five"] {
            assert!(parse_ratio(bad).is_err(), "{bad}");
        }
        let d = parse_duration_arg("300ms").expect("300ms");
        assert_eq!((d.text.as_str(), d.value.as_millis()), ("300ms", 300));
        assert!(parse_duration_arg("0s").is_err());
        assert!(parse_duration_arg("soon").is_err());
    }

    fn view(state: &str, step: u64, weight: u64, holding: Value) -> Value {
        json!({"id": 3, "service": "demo", "kind": "rollout", "canary": "green", "stable": "blue",
            "state": state, "step": step, "steps": [1, 5, 25, 50, 100], "canary_weight": weight,
            "interval_seconds": 30.0, "max_error_rate": 0.05, "max_p99_ms": null,
            "min_requests": 20, "shield": true, "started_at": "2026-11-23T03:00:00.123Z",
            "step_started_at": "2026-11-23T03:00:30.123Z", "finished_at": null, "reason": null,
            "holding": holding, "step_requests": 17,
            "canary_live": {"window_seconds": 10.0, "requests": 120, "errors": 3,
                "error_rate": 0.025, "p50_ms": 1.2, "p99_ms": 8.0},
            "stable_live": {"window_seconds": 10.0, "requests": 900, "errors": 0,
                "error_rate": 0.0, "p50_ms": 1.0, "p99_ms": null},
            "generation": 42})
    }

    #[test]
    fn progress_lines_change_with_state_step_weight_and_hold() {
        let a = view("progressing", 1, 5, json!("waiting for traffic"));
        let line = progress_line(&a);
        assert_eq!(
            line,
            "progressing  step 2/5  green 5%  holding: waiting for traffic (17 so far)  canary 120 req 2.5% err p99 8.0ms"
        );
        let text = "holding step 2 of 5 (5%) until the canary serves 20 requests in it";
        let own = view("progressing", 1, 5, json!(text));
        assert!(
            progress_line(&own).contains(&format!("  green 5%  {text} (17 so far)  canary")),
            "{}",
            progress_line(&own)
        );
        assert!(rollout_details(&own).contains("  holding   step 2 of 5 (5%) until the canary"));
        // The live counts change every poll; the line is printed again only on a real change.
        let mut same = own.clone();
        same["step_requests"] = json!(18);
        same["canary_live"]["requests"] = json!(121);
        assert_eq!(progress_key(&own), progress_key(&same));
        for changed in [
            view("paused", 1, 5, json!(text)),
            view("progressing", 2, 5, json!(text)),
            view("progressing", 1, 25, json!(text)),
            view("progressing", 1, 5, json!("another hold")),
            view("progressing", 1, 5, Value::Null),
        ] {
            assert_ne!(progress_key(&own), progress_key(&changed), "{changed}");
        }
        assert_eq!(outcome("progressing"), None);
        assert_eq!(outcome("paused"), None);
        assert_eq!(outcome("promoted"), Some(true));
        assert_eq!(outcome("rolled_back"), Some(false));
        assert_eq!(outcome("aborted"), Some(false));
    }

    #[test]
    fn rollout_details_and_events_read_well() {
        let mut v = view("rolled_back", 0, 0, Value::Null);
        v["reason"] = json!("error rate 0.21 above 0.05 (42 errors in 200 requests)");
        v["finished_at"] = json!("2026-11-23T03:00:31.000Z");
        let text = rollout_details(&v);
        assert!(
            text.starts_with(
                "rollout 3 of \"demo\": rolled back, green at 0% (step 1/5), stable \"blue\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("[1] 5 25 50 100 (%), every 30.0s"), "{text}");
        assert!(
            text.contains("error rate at most 5.0%, at least 20 canary requests a step; shield on"),
            "{text}"
        );
        assert!(
            text.contains(
                "blue: 900 requests, 0 errors (0.0%), p50 1.0ms, p99 - in the last 10.0s"
            ),
            "{text}"
        );
        assert!(text.contains("finished 2026-11-23T03:00:31.000Z"), "{text}");
        assert!(text.contains("reason    error rate 0.21"), "{text}");
        // Missing fields show as "-" or "?", never a panic.
        let sparse = rollout_details(&json!({"id": 1}));
        assert!(sparse.starts_with("rollout 1 of \"?\""), "{sparse}");

        let events = events_table(&json!({"events": [
            {"time": "2026-11-23T03:00:00.123Z", "rollout": 3, "event": "started", "step": 0,
             "canary_weight": 1, "message": "green from 0% to 1%"},
            {"time": 1795402802500_u64, "rollout": 3, "event": "rolled_back", "step": 0,
             "canary_weight": 1, "requests": 40, "errors": 9, "error_rate": 0.225, "p99_ms": 3.5,
             "message": "error rate 0.23 above 0.05"}
        ]}));
        let lines: Vec<&str> = events.lines().collect();
        assert_eq!(lines.len(), 3, "{events}");
        assert!(lines[0].starts_with("TIME"), "{events}");
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            &cols[..9],
            [
                "2026-11-23T03:00:02.500Z",
                "3",
                "rolled_back",
                "1",
                "1%",
                "40",
                "9",
                "22.5%",
                "3.5ms"
            ],
            "{events}"
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&cols[5..9], ["-", "-", "-", "-"], "{events}");
    }
}
