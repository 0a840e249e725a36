//! The JSON access log: one line per request, written by a dedicated thread off the request path.

use std::io::Write;
use std::sync::mpsc;

use serde::Serialize;

use crate::config::AccessLogTarget;

/// One access log line. Field names are the log's public format (docs/operations.md).
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub client_ip: Option<String>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub duration_ms: f64,
    pub route: Option<&'a str>,
    pub service: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub upstream: Option<String>,
    pub upstream_ms: Option<f64>,
    pub request_id: &'a str,
    pub listener: &'a str,
    pub protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A cheap handle: serializing happens on the caller, writing on the log thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
}

impl AccessLog {
    pub fn open(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(AccessLog { tx: None }),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, sink))?;
        Ok(AccessLog { tx: Some(tx) })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        if let Ok(line) = serde_json::to_string(entry) {
            // The log thread only stops with the process; a send error means it is gone already.
            let _ = tx.send(line);
        }
    }
}

/// Writes lines in batches: flushes whenever the queue runs dry, so lines appear promptly.
fn write_loop(rx: mpsc::Receiver<String>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let _ = writeln!(out, "{line}");
        while let Ok(line) = rx.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}
