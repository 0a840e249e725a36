//! `switchyard import`: the command that runs an importer of the core crate (`switchyard_core::import`) and writes its config and report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use switchyard_core::import::*;

/// `switchyard import ...`
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: Source,
}

#[derive(Debug, Subcommand)]
pub enum Source {
    /// Convert an nginx config (nginx.conf and the files it includes) into a Switchyard config.
    /// Prints the TOML (or writes it with -o) and, on stderr, every directive not carried over.
    /// Exit 0: complete; 1: needs review (something was not carried over); 2: usage or parse
    /// error (file:line:col); 3: the converted config failed Switchyard's validation (a bug).
    Nginx {
        /// The main nginx config file; relative includes resolve against its directory.
        file: PathBuf,
        /// Write the Switchyard config here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Convert Kubernetes Ingress manifests (networking.k8s.io/v1, ingress-nginx annotations;
    /// Services and cert-manager issuers among them are read too) into a Switchyard config.
    /// Prints the TOML (or writes it with -o), on stderr every annotation or field not carried
    /// over and the secret files to export from the cluster. Exit 0: complete; 1: needs review;
    /// 2: usage, read or YAML error (file:line:col).
    Ingress {
        /// YAML files, one or many documents each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the Switchyard config here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Runs `switchyard import`; the exit code says whether the result is complete.
pub fn run(args: &ImportArgs) -> ExitCode {
    match &args.source {
        Source::Nginx { file, output } => run_nginx(file, output.as_deref()),
        Source::Ingress { files, output } => run_ingress(files, output.as_deref()),
    }
}

fn run_nginx(file: &Path, output: Option<&Path>) -> ExitCode {
    let out_path = output.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("."))
            .join("switchyard.toml")
    });
    let outcome = match nginx::convert_file(file, &out_path) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("switchyard import: {e}");
            return ExitCode::from(match e {
                ImportError::Invalid(_) => 3,
                _ => 2,
            });
        }
    };
    for f in &outcome.report.findings {
        eprintln!("{f}");
    }
    if let Err(code) = write_out(&outcome.toml, output) {
        return code;
    }
    let not_carried = outcome
        .report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::NotCarried)
        .count();
    let notes = outcome.report.findings.len() - not_carried;
    if outcome.report.complete() {
        eprintln!("switchyard import: complete ({notes} note(s)); check it with `switchyard check --config FILE`");
        ExitCode::SUCCESS
    } else {
        eprintln!("switchyard import: needs review: {not_carried} directive(s) not carried over, {notes} note(s)");
        ExitCode::from(1)
    }
}

fn run_ingress(files: &[PathBuf], output: Option<&Path>) -> ExitCode {
    let converted = match ingress::convert(files) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard import: {e}");
            return ExitCode::from(2);
        }
    };
    for f in &converted.findings {
        eprintln!("{f}");
    }
    if !converted.needed_files.is_empty() {
        eprintln!("switchyard import: files the config reads, from the cluster's secrets:");
        for n in &converted.needed_files {
            eprintln!("  {}: {}", n.path, n.export);
        }
    }
    if let Err(code) = write_out(&converted.toml, output) {
        return code;
    }
    if converted.findings.is_empty() {
        eprintln!("switchyard import: complete; check it with `switchyard check --config FILE`");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "switchyard import: needs review: {} annotation(s) or field(s) not carried over as they are",
            converted.findings.len()
        );
        ExitCode::from(1)
    }
}

/// Writes the TOML to `output`, or to stdout; exit 2 when that fails.
fn write_out(toml: &str, output: Option<&Path>) -> Result<(), ExitCode> {
    match output {
        Some(path) => std::fs::write(path, toml).map_err(|e| {
            eprintln!(
                "switchyard import: {}",
                ImportError::Write {
                    path: path.display().to_string(),
                    message: e.to_string()
                }
            );
            ExitCode::from(2)
        }),
        None => std::io::Write::write_all(&mut std::io::stdout(), toml.as_bytes())
            .map_err(|_| ExitCode::from(2)),
    }
}
