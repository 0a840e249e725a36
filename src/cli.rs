//! The command line: `serve`, `check`, `demo` and `ctl` (plus completions and man pages), with their help texts and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{config, ctl, import, server};

/// Switchyard: an edge reverse proxy and traffic switcher.
///
/// Routes by host and path to weighted pools of upstream servers, terminates TLS,
/// and reloads its config on SIGHUP without dropping a connection.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, propagate_version = true)]
pub struct Cli {
    /// Log level for the process log (error, warn, info, debug, trace). The access log is separate.
    #[arg(long, global = true, env = "SWITCHYARD_LOG", default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start, so the size of the largest variant (`ctl`'s arguments when the demo is not
// built in) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a config file. SIGHUP reloads it, SIGTERM drains and stops,
    /// SIGQUIT hands the listening sockets to a new process started with --upgrade.
    Serve {
        /// Path of the TOML config file.
        #[arg(short, long, default_value = "/etc/switchyard/switchyard.toml")]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (zero-downtime binary upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Check a config file like `nginx -t`: print a one-line summary and exit 0, or print every
    /// error as file:line:column: reason and exit 1.
    Check {
        /// Path of the TOML config file.
        #[arg(short, long, default_value = "/etc/switchyard/switchyard.toml")]
        config: PathBuf,
        /// Also bind every listener's and the admin API's address once (and let it go), so a
        /// port in use or a privileged port is found before `serve` (exit 1, address named).
        #[arg(long)]
        probe_listeners: bool,
    },
    /// Start an embedded demo: two built-in backends (pools blue and green of service "demo")
    /// behind the proxy on 127.0.0.1:8080 at blue=100, green=0, light background traffic through
    /// it, and print what to try next (a canary rollout of green among it). Every run starts from
    /// the config's weights: the runtime state of the last run (DIR/state) is cleared first,
    /// unless --keep-state.
    #[cfg(feature = "demo")]
    Demo {
        /// Address of the demo proxy.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Directory for the demo's config, access log and runtime state (DIR/state).
        #[arg(long, default_value_os_t = std::env::temp_dir().join("switchyard-demo"))]
        dir: PathBuf,
        /// Address of the demo's admin API (for `switchyard ctl`). It requires the token in
        /// SWITCHYARD_TOKEN when that is set, and no token otherwise.
        #[arg(long, default_value = crate::config::DEFAULT_ADMIN_ADDRESS)]
        admin: std::net::SocketAddr,
        /// Make pool green fail this share of its requests with 500 (--bad-canary alone: 0.3, or
        /// e.g. --bad-canary=0.5 or 50%), to watch a rollout of green roll back on its own.
        #[arg(long, value_name = "SHARE", num_args = 0..=1, default_missing_value = "0.3",
              value_parser = ctl::parse_ratio)]
        bad_canary: Option<config::Share>,
        /// Background GET requests a second that the demo sends through its own proxy, so that a
        /// rollout has traffic to judge (0: none).
        #[arg(long, value_name = "PER_SECOND", default_value_t = 50,
              value_parser = clap::value_parser!(u32).range(0..=10_000))]
        traffic: u32,
        /// Keep the runtime state of the last run (weights set with ctl, rollouts) instead of
        /// starting from the config's blue=100 green=0.
        #[arg(long)]
        keep_state: bool,
    },
    Ctl(ctl::CtlArgs),
    /// Convert another proxy's config into a Switchyard config: `switchyard import nginx
    /// nginx.conf -o switchyard.toml`. Exit 0: complete; 1: needs review (the report on stderr
    /// lists what was not carried over); 2: usage or parse error (file:line:col).
    Import(import::ImportArgs),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell), e.g.
    /// `switchyard completions bash > /usr/share/bash-completion/completions/switchyard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (switchyard.1 and one per subcommand) into DIR (for packages).
    #[command(hide = true)]
    Man {
        dir: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(&cli.log_level);
    match cli.command {
        Command::Check {
            config,
            probe_listeners,
        } => match config::load(&config) {
            Ok(cfg) => {
                // Names that do not resolve now are warnings: `serve` starts and retries them.
                let (_, warnings) = crate::dns::resolve_blocking(&cfg);
                for w in &warnings {
                    eprintln!("{w}");
                }
                if probe_listeners {
                    let addresses = server::startup::listen_addresses(&cfg);
                    if let Err(e) = server::startup::probe_binds(&addresses) {
                        eprintln!("{}: {e}", config.display());
                        return ExitCode::FAILURE;
                    }
                }
                println!("{}", cfg.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Serve { config, upgrade } => {
            let options = server::ServeOptions { upgrade };
            report(server::serve(&config, &options))
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            dir,
            admin,
            bad_canary,
            traffic,
            keep_state,
        } => report(crate::demo::run(&crate::demo::DemoOptions {
            listen,
            dir,
            admin,
            green_fail_ratio: bad_canary.map_or(0.0, |s| s.get()),
            traffic,
            keep_state,
        })),
        Command::Ctl(args) => ctl::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // clap_complete panics on a failed write: render into memory, then write (a closed
            // pipe is an error exit, not a panic).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "switchyard", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "switchyard: cannot write the man pages into {}: {e}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(result: Result<(), server::ServeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::FAILURE
        }
    }
}
