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

enum Msg {
    Line(String),
    /// Flush everything queued so far, then acknowledge.
    Flush(mpsc::Sender<()>),
}

/// A cheap handle: serializing happens on the caller, writing on the log thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Msg>>,
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
        let (tx, rx) = mpsc::channel::<Msg>();
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
            let _ = tx.send(Msg::Line(line));
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is written out.
    pub fn flush(&self, timeout: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = mpsc::channel();
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }
}

/// Writes lines in batches: flushes whenever the queue runs dry, so lines appear promptly.
fn write_loop(rx: mpsc::Receiver<Msg>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    let _ = writeln!(out, "{line}");
                }
                Msg::Flush(ack) => acks.push(ack),
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}
