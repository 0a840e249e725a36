//! `switchyard ctl`: a small blocking client of the admin API for deploy scripts, with exit codes they can trust.
//
// Exit codes: 0 success; 1 the API said no (its JSON error answer, the reason on stderr), or a
// condition ctl checks failed (`switch --wait-healthy` timed out, a rollout followed with --wait
// did not promote); 2 usage errors (clap's own, an argument not in pool=N form, an unusable
// --admin URL, --cacert file or --cert/--key pair); 3 the API could not be reached (connection
// refused, TLS failure, time-out) or what answered was not the API (a proxy's error page, a body
// that is not the API's JSON). The client (`client`) speaks HTTP/1.1 or HTTPS through reqwest with
// rustls on ring: https:// admin URLs (`[admin] tls`, or the API behind nginx or Caddy) are
// checked against the system's roots plus the CA of --cacert / SWITCHYARD_ADMIN_CA, and
// --cert/--key present a client certificate for mTLS. Answers are decoded into the admin API's
// own types (`crate::api`), so a field ctl reads cannot silently go missing. `rollout ... --wait`
// follows a canary rollout by polling it (`follow`); its exit code is the outcome (0 promoted, 1
// rolled back or aborted).

mod args;
mod client;
mod follow;
mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

pub use args::{
    parse_duration, parse_duration_arg, parse_pool_weight, parse_ratio, parse_steps, CtlArgs,
    CtlCommand, DurationArg, MaintenanceArgs, MaintenanceCommand, RolloutCommand, StartArgs,
};
pub use client::{root_cause, AdminUrl};

use crate::api::{self, RolloutView, ServiceView};
use client::{Client, Reply, Target};
use render::{
    certs_table, cluster_table, events_table, maintenance_line, rollout_details, rollout_line,
    rollout_name, status_table, weights_line,
};

/// Where the admin API is unless --admin or SWITCHYARD_ADMIN say otherwise.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9900";

/// How often `switch --wait-healthy` looks at the target pool.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Why a ctl command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid admin URL \"{url}\": {reason}")]
    Url { url: String, reason: String },
    #[error("the token contains a line break or control character")]
    Token,
    #[error("cannot use the CA file \"{}\": {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
    #[error("cannot use the client certificate (--cert, --key): {reason}")]
    Identity { reason: String },
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
    #[error("cannot read the page file \"{}\": {reason}", path.display())]
    Page { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// ctl's exit code when the admin API said no (or a condition ctl checks failed).
pub const EXIT_REFUSED: u8 = 1;
/// ctl's exit code for usage errors (clap's own code for its errors).
pub const EXIT_USAGE: u8 = 2;
/// ctl's exit code when the admin API could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

impl CtlError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CtlError::Url { .. }
            | CtlError::Token
            | CtlError::Ca { .. }
            | CtlError::Identity { .. }
            | CtlError::Page { .. } => EXIT_USAGE,
            CtlError::Unreachable { .. } | CtlError::Protocol { .. } => EXIT_UNREACHABLE,
            CtlError::Api { .. } | CtlError::Refused(_) => EXIT_REFUSED,
        })
    }
}

/// Runs one ctl command; prints the result on stdout, or the reason on stderr.
pub fn run(args: &CtlArgs) -> ExitCode {
    let target = Target {
        url: &args.admin,
        token: args.token.as_deref(),
        ca: args.ca.as_deref(),
        identity: args.cert.as_deref().zip(args.key.as_deref()),
    };
    let result = Client::new(target).and_then(|client| execute(&client, args));
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
    let (body, summary) = match &args.command {
        CtlCommand::Status { service: Some(s) } => {
            let reply: Reply<ServiceView> =
                client.call(Method::GET, &service_path(s, ""), None, None)?;
            let summary = status_table(std::slice::from_ref(&reply.view));
            (reply.body, summary)
        }
        CtlCommand::Status { service: None } => {
            let reply: Reply<api::Services> =
                client.call(Method::GET, "/v1/services", None, None)?;
            let mut summary = String::new();
            if let Some(cluster) = &reply.view.cluster {
                summary.push_str(&format!("cluster: {cluster}\n\n"));
            }
            summary.push_str(&status_table(&reply.view.services));
            (reply.body, summary)
        }
        CtlCommand::Cluster => {
            let reply: Reply<api::ClusterView> =
                client.call(Method::GET, "/v1/cluster", None, None)?;
            (reply.body, cluster_table(&reply.view))
        }
        CtlCommand::Weights {
            service,
            weights,
            if_match,
            force,
        } => {
            let map: BTreeMap<&str, u32> =
                weights.iter().map(|(p, w)| (p.as_str(), w.get())).collect();
            let path = forced(service_path(service, "/weights"), *force);
            let reply: Reply<ServiceView> =
                client.call(Method::PUT, &path, Some(&json!(map)), *if_match)?;
            let summary = format!("weights set: {}\n", weights_line(&reply.view));
            (reply.body, summary)
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
            let reply: Reply<api::Switched> =
                client.call(Method::POST, &path, Some(&body), None)?;
            let mut summary = format!(
                "switched to \"{pool}\": {}\n",
                weights_line(&reply.view.service)
            );
            if let Some(rollout) = &reply.view.rollout {
                summary.push_str(&format!(
                    "watching \"{pool}\" for {} ({}); follow it with: switchyard ctl rollout status {service} --wait\n",
                    watch.as_ref().map_or("?", |w| w.text.as_str()),
                    rollout_name(rollout),
                ));
            }
            (reply.body, summary)
        }
        CtlCommand::Reload => {
            let reply: Reply<api::Reloaded> =
                client.call(Method::POST, "/v1/reload", None, None)?;
            let summary = format!("reloaded (generation {})\n", reply.view.generation);
            (reply.body, summary)
        }
        CtlCommand::ClearWeights { service, force } => {
            let path = forced(service_path(service, "/weights"), *force);
            let reply: Reply<ServiceView> = client.call(Method::DELETE, &path, None, None)?;
            let summary = format!(
                "overrides cleared, the config's weights apply: {}\n",
                weights_line(&reply.view)
            );
            (reply.body, summary)
        }
        CtlCommand::Certs { renew: Some(name) } => {
            let path = format!("/v1/certs/{}/renew", encode_segment(name));
            let reply: Reply<api::RenewalRequested> =
                client.call(Method::POST, &path, None, None)?;
            let summary = format!(
                "renewal of certificate \"{}\" requested; `switchyard ctl certs` shows its progress\n",
                reply.view.certificate
            );
            (reply.body, summary)
        }
        CtlCommand::Certs { renew: None } => {
            let reply: Reply<api::Certificates> =
                client.call(Method::GET, "/v1/certs", None, None)?;
            (reply.body, certs_table(&reply.view.certificates))
        }
        CtlCommand::Maintenance {
            command: MaintenanceCommand::On(on),
        } => {
            let path = service_path(&on.service, "/maintenance");
            let reply: Reply<ServiceView> =
                client.call(Method::PUT, &path, Some(&maintenance_body(on)?), None)?;
            let summary = match &reply.view.maintenance {
                Some(m) => format!(
                    "service \"{}\" in maintenance (generation {}): {}\n",
                    on.service,
                    reply.view.generation,
                    maintenance_line(m)
                ),
                None => format!("service \"{}\" is not in maintenance\n", on.service),
            };
            (reply.body, summary)
        }
        CtlCommand::Maintenance {
            command: MaintenanceCommand::Off { service },
        } => {
            let path = service_path(service, "/maintenance");
            let reply: Reply<ServiceView> = client.call(Method::DELETE, &path, None, None)?;
            let summary = format!(
                "service \"{service}\" out of maintenance (generation {})\n",
                reply.view.generation
            );
            (reply.body, summary)
        }
        CtlCommand::Rollout { command } => return rollout(client, command, args.json),
    };
    Ok(if args.json { json_text(&body) } else { summary })
}

/// The body of a reply as sent, ending in a line break.
fn json_text(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
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
        let view: ServiceView = client.call(Method::GET, &path, None, None)?.view;
        let Some(p) = view.pools.iter().find(|p| p.name == pool) else {
            return Err(CtlError::Refused(format!(
                "service \"{service}\" has no pool \"{pool}\""
            )));
        };
        if p.healthy_servers > 0 {
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

/// Carries out a `rollout` subcommand; returns what to print on success.
fn rollout(client: &Client, command: &RolloutCommand, json: bool) -> Result<String, CtlError> {
    let current =
        |service: &str, suffix: &str| service_path(service, &format!("/rollouts/current{suffix}"));
    let (service, reply, wait): (&String, Reply<RolloutView>, bool) = match command {
        RolloutCommand::Start(args) => {
            let path = service_path(&args.service, "/rollouts");
            let reply = client.call(Method::POST, &path, Some(&start_body(args)), None)?;
            (&args.service, reply, args.wait)
        }
        RolloutCommand::Status { service, wait } => {
            let reply = client.call(Method::GET, &current(service, ""), None, None)?;
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
            let reply = client.call(Method::POST, &current(service, action), None, None)?;
            (service, reply, false)
        }
        RolloutCommand::Events { service } => {
            let reply: Reply<api::Events> =
                client.call(Method::GET, &current(service, "/events"), None, None)?;
            return Ok(if json {
                json_text(&reply.body)
            } else {
                events_table(&reply.view.events)
            });
        }
    };
    if wait {
        return follow::follow(client, service, reply, json);
    }
    if json {
        return Ok(json_text(&reply.body));
    }
    let view = &reply.view;
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

/// The JSON body of `PUT /v1/services/{s}/maintenance`: the page files' contents and only the
/// options given (the API checks them all).
fn maintenance_body(args: &MaintenanceArgs) -> Result<Value, CtlError> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| CtlError::Page {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    let mut body = json!({});
    if let Some(page) = &args.page {
        body["page"] = json!(read(page)?);
    }
    if let Some(page) = &args.json_page {
        body["json"] = json!(read(page)?);
    }
    if !args.allow.is_empty() {
        body["allow"] = json!(args.allow);
    }
    if !args.exempt.is_empty() {
        body["exempt"] = json!(args.exempt);
    }
    if let Some(d) = &args.retry_after {
        body["retry_after"] = json!(d.text);
    }
    Ok(body)
}

/// The JSON body of `POST /v1/services/{s}/rollouts`: only the options given.
fn start_body(args: &StartArgs) -> Value {
    let mut body = json!({ "canary": args.canary });
    if let Some(stable) = &args.stable {
        body["stable"] = json!(stable);
    }
    if let Some(steps) = &args.steps {
        body["steps"] = json!(steps);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_service_names() {
        assert_eq!(service_path("api", "/weights"), "/v1/services/api/weights");
        assert_eq!(service_path("a b/c", ""), "/v1/services/a%20b%2Fc");
    }
}
