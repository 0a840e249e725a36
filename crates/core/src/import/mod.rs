//! `switchyard import`: turns another proxy's config into a commented Switchyard config that passes `check`, and reports what it could not carry over.
//!
//! The parts every importer shares live here: the [`Report`] of findings, the commented TOML
//! document ([`toml_out`]) and the check of the output against Switchyard's own validation.
//! The converters read files and text and write nothing; the `import` module of the
//! `switchyard` crate is the command (arguments, output file, exit code).

pub mod ingress;
pub mod nginx;
pub mod toml_out;

use std::fmt;
use std::path::Path;

use crate::config;
use toml_out::Doc;

/// Errors of an import; a parse error carries the nginx file:line:col.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}:{line}:{col}: {message}")]
    Parse {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: cannot write: {message}")]
    Write { path: String, message: String },
    /// The output did not pass Switchyard's validation: a converter bug.
    #[error("the converted config does not pass Switchyard's validation (a bug of the importer, please report it with the input):\n{0}")]
    Invalid(String),
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Not carried over: the result needs review (exit 1).
    NotCarried,
    /// Carried over, with a difference worth knowing (exit code unaffected).
    Note,
}

/// One thing the import could not carry over exactly, at its place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub directive: String,
    pub message: String,
    pub severity: Severity,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::NotCarried => "not carried over",
            Severity::Note => "note",
        };
        write!(
            f,
            "{}:{}: {kind}: {}: {}",
            self.file, self.line, self.directive, self.message
        )
    }
}

impl Finding {
    /// The comment written at the finding's place in the output.
    pub fn comment(&self) -> String {
        let kind = match self.severity {
            Severity::NotCarried => "not carried over",
            Severity::Note => "note",
        };
        format!(
            "import: {kind}: {} ({}:{}): {}",
            self.directive, self.file, self.line, self.message
        )
    }
}

/// Every finding of one import, in source order.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn complete(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| f.severity == Severity::NotCarried)
    }

    fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.file.as_str(), a.line, a.directive.as_str()).cmp(&(
                b.file.as_str(),
                b.line,
                b.directive.as_str(),
            ))
        });
        self.findings.dedup();
    }
}

/// The result of an import: the TOML text (checked) and the report.
#[derive(Debug)]
pub struct Outcome {
    pub toml: String,
    pub report: Report,
}

/// Renders `doc`, checks it with Switchyard's own validation (`config::parse_without_lookups`,
/// as `check` does but without DNS), and drops the lines Switchyard refuses that the importer
/// marked as droppable (each dropped line becomes a finding). Any other error is a converter bug.
pub fn finish(mut doc: Doc, mut report: Report, out: &Path) -> Result<Outcome, ImportError> {
    for _round in 0..512 {
        let (text, lines) = doc.render();
        let errors = match config::parse_without_lookups(&text, out) {
            Ok(_) => {
                report.sort();
                return Ok(Outcome { toml: text, report });
            }
            Err(errors) => errors,
        };
        let mut dropped = false;
        let mut fatal = Vec::new();
        // Several errors may point at one line: it is dropped once.
        let mut dropped_now = std::collections::BTreeSet::new();
        for e in &errors.0 {
            let id = lines.get(e.line.wrapping_sub(1)).copied().flatten();
            match id.and_then(|id| doc.culprit(id, &e.reason)) {
                Some(id) if dropped_now.contains(&id) => {}
                Some(id) if doc.droppable(id) => {
                    dropped_now.insert(id);
                    if let Some(f) = doc.drop_line(id, &e.reason) {
                        report.findings.push(f);
                    }
                    dropped = true;
                }
                Some(id) if doc.missing_file(id) => {}
                Some(id) => match doc.drop_block(id, &e.reason) {
                    Some(f) => {
                        report.findings.push(f);
                        dropped = true;
                        dropped_now.insert(id);
                    }
                    None => fatal.push(e.to_string()),
                },
                None => fatal.push(e.to_string()),
            }
        }
        if !fatal.is_empty() || !dropped {
            if fatal.is_empty() {
                // Only errors about files that are not on this machine: the output is what it should be.
                report.sort();
                return Ok(Outcome { toml: text, report });
            }
            return Err(ImportError::Invalid(fatal.join("\n")));
        }
    }
    Err(ImportError::Invalid("validation did not settle".into()))
}
