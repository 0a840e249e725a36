//! `switchyard ctl`'s command line: subcommands, options and the parsers of their values (exit 2 when one does not parse).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::DEFAULT_ADMIN_URL;
use crate::config::values::{self, Share, Steps, ValueError, Weight};

/// Talk to a running Switchyard through its admin API: read services, set weights, switch
/// blue/green, reload, run canary rollouts.
///
/// Speaks plain HTTP to an admin listener on loopback or a private network, or HTTPS to an admin
/// listener with `[admin] tls` (or behind a TLS-terminating proxy): https:// URLs are checked
/// against the system's root certificates plus the CA given with --cacert, and --cert/--key
/// present a client certificate where the admin API asks for one (mTLS). Exit codes: 0 success;
/// 1 the API said no (an error answer, the reason on stderr; also a rollout followed with --wait
/// that did not promote); 2 usage errors; 3 the API could not be reached (connection refused,
/// TLS failure, time-out, or an answer that is not the API's).
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of the admin API: http://host:port or https://host[:port], with an optional path
    /// prefix.
    #[arg(long, global = true, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN_URL)]
    pub admin: String,
    /// PEM file with the CA certificate(s) that signed an https:// admin URL's certificate, for a
    /// private CA; trusted along with the system's roots.
    #[arg(
        long = "cacert",
        alias = "ca",
        global = true,
        env = "SWITCHYARD_ADMIN_CA",
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// PEM file with the client certificate (chain) to present to an admin API that requires one
    /// (`[admin] tls` with `client_ca`); with --key.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// PEM file with the private key of --cert.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
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
        weights: Vec<(String, Weight)>,
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
    /// The fleet (`[cluster]`): this node's state, the leader, etcd, and every live node with its
    /// config generation and whether its config matches the leader's; fleet entries this node
    /// ignores.
    Cluster,
    /// Maintenance: `on` makes the service's routes answer 503 with Retry-After and a page, except
    /// to allowed client networks and on health paths; `off` ends it. It survives restarts and
    /// reloads until `off`.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Canary rollouts: shift traffic to a pool step by step, judged by its live error rate and
    /// latency, rolled back on their own when the canary fails a gate.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Put SERVICE in maintenance (again: replaces the page, networks and paths given before).
    On(MaintenanceArgs),
    /// Take SERVICE out of maintenance: its routes go to the servers again.
    Off {
        /// The service, as named in the config.
        service: String,
    },
}

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// The service, as named in the config.
    pub service: String,
    /// An HTML file to answer browsers with (read here, sent to the API; at most 32 KiB).
    /// Without it: the 503 error page configured for the route, else a JSON body.
    #[arg(long, value_name = "FILE")]
    pub page: Option<PathBuf>,
    /// A JSON file to answer API clients with (at most 32 KiB).
    #[arg(long, value_name = "FILE")]
    pub json_page: Option<PathBuf>,
    /// Client network let through to the servers (repeatable), e.g. 10.0.0.0/8 or 192.0.2.7.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Path prefix let through (repeatable); replaces the default, /health and /healthz. The
    /// service's health check paths always go through.
    #[arg(long, value_name = "PATH")]
    pub exempt: Vec<String>,
    /// The Retry-After of the 503 (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub retry_after: Option<DurationArg>,
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
    pub max_error_rate: Option<Share>,
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

/// A duration as typed (sent to the API as is) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationArg {
    pub text: String,
    pub value: Duration,
}

/// `blue=90` → `("blue", 90)`: the weight is checked by the one [`Weight`] rule the config and
/// the admin API use.
pub fn parse_pool_weight(arg: &str) -> Result<(String, Weight), String> {
    let bad =
        || format!("expected POOL=WEIGHT with a whole number, such as blue=90; got \"{arg}\"");
    let (pool, weight) = arg.split_once('=').ok_or_else(bad)?;
    let pool = pool.trim();
    if pool.is_empty() {
        return Err(bad());
    }
    let weight: u64 = weight.trim().parse().map_err(|_| bad())?;
    let weight = Weight::new(weight).map_err(|e| format!("the weight of \"{pool}\" {e}"))?;
    Ok((pool.to_string(), weight))
}

/// `1,5,25,50,100`: canary weights in percent, checked by the one [`Steps`] rule the config and
/// the admin API use; the message names the step at fault.
pub fn parse_steps(arg: &str) -> Result<Steps, String> {
    let bad = |why: String| {
        format!("{why}; steps are canary weights in percent, ascending from 1 to 100 and ending at 100, such as 1,5,25,50,100")
    };
    let numbers = arg
        .split(',')
        .map(|part| {
            let part = part.trim();
            part.parse::<u32>()
                .map_err(|_| bad(format!("\"{part}\" is not a whole number")))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    Steps::new(numbers).map_err(|e| {
        bad(match &e {
            ValueError::StepOutOfRange(n) => format!("{n} is not between 1 and 100"),
            ValueError::StepsNotAscending(steps) => {
                steps.windows(2).find(|w| w[0] >= w[1]).map_or_else(
                    || e.to_string(),
                    |w| format!("{} is not above the step before it, {}", w[1], w[0]),
                )
            }
            ValueError::StepsNotEndingAt100(_) => "the last step is not 100".to_string(),
            _ => e.to_string(),
        })
    })
}

/// `0.05` or `5%`: a share from 0 to 1 ([`Share`], as the config and the admin API check it).
pub fn parse_ratio(arg: &str) -> Result<Share, String> {
    let text = arg.trim();
    let ratio = match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    ratio.ok().and_then(|r| Share::new(r).ok()).ok_or_else(|| {
        format!(
            "expected a share from 0 to 1 such as 0.05, or a percentage such as 5%; got \"{arg}\""
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pool_weights() {
        assert_eq!(
            parse_pool_weight("blue=90"),
            Ok(("blue".into(), Weight::new(90).expect("90")))
        );
        assert_eq!(
            parse_pool_weight("green = 0"),
            Ok(("green".into(), Weight::default()))
        );
        assert!(
            parse_pool_weight("blue=1000001").is_err(),
            "over the largest weight"
        );
        for bad in ["blue", "=5", "blue=", "blue=-1", "blue=1.5", "blue=x"] {
            assert!(parse_pool_weight(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_steps() {
        assert_eq!(
            parse_steps("1,5,25,50,100"),
            Ok(Steps::new(vec![1, 5, 25, 50, 100]).expect("steps"))
        );
        assert_eq!(
            parse_steps(" 50 , 100").map(Steps::into_vec),
            Ok(vec![50, 100])
        );
        assert_eq!(parse_steps("100").map(Steps::into_vec), Ok(vec![100]));
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
        assert_eq!(parse_ratio("0.05").map(Share::get), Ok(0.05));
        assert_eq!(parse_ratio("5%").map(Share::get), Ok(0.05));
        assert_eq!(parse_ratio("1").map(Share::get), Ok(1.0));
        for bad in ["-0.1", "1.5", "101%", "NaN", "inf", "five"] {
            assert!(parse_ratio(bad).is_err(), "{bad}");
        }
        let d = parse_duration_arg("300ms").expect("300ms");
        assert_eq!((d.text.as_str(), d.value.as_millis()), ("300ms", 300));
        assert!(parse_duration_arg("0s").is_err());
        assert!(parse_duration_arg("soon").is_err());
    }
}
