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
    /// The normalised path (`crate::path`) routing, limits and the upstream used.
    pub uri: &'a str,
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

/// Lines wait here until the writer thread takes them: a short lock per request, no wake-up.
#[derive(Debug, Default)]
struct Pending {
    buf: parking_lot::Mutex<Vec<u8>>,
}

/// Past this many buffered bytes the writer is woken at once instead of at its next tick.
const WAKE_AT: usize = 64 * 1024;
/// The longest a line waits before it is written (like nginx's `flush=`).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A cheap handle: serializing happens on the caller, writing on the log thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Option<std::sync::Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    pending: Pending,
    /// Wakes the writer early (buffer full) or asks for a flush with an acknowledgement.
    wake: mpsc::SyncSender<Option<mpsc::Sender<()>>>,
}

impl AccessLog {
    pub fn open(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => return Ok(AccessLog { inner: None }),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (wake, woken) = mpsc::sync_channel(16);
        let shared = std::sync::Arc::new(Shared {
            pending: Pending::default(),
            wake,
        });
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&for_writer, &woken, sink))?;
        Ok(AccessLog {
            inner: Some(shared),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(shared) = &self.inner else { return };
        let mut buf = shared.pending.buf.lock();
        if serde_json::to_writer(&mut *buf, entry).is_ok() {
            buf.push(b'\n');
        }
        let full = buf.len() >= WAKE_AT;
        drop(buf);
        if full {
            // A full wake queue already holds a wake-up; nothing is lost by dropping this one.
            let _ = shared.wake.try_send(None);
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is written out.
    pub fn flush(&self, timeout: std::time::Duration) {
        let Some(shared) = &self.inner else { return };
        let (ack_tx, ack_rx) = mpsc::channel();
        if shared.wake.send(Some(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }
}

/// Takes the pending bytes every `FLUSH_EVERY` (or when woken) and writes them in one go.
fn write_loop(
    shared: &Shared,
    woken: &mpsc::Receiver<Option<mpsc::Sender<()>>>,
    mut sink: Box<dyn Write + Send>,
) {
    let mut spare = Vec::with_capacity(WAKE_AT * 2);
    loop {
        let ack = match woken.recv_timeout(FLUSH_EVERY) {
            Ok(ack) => ack,
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        std::mem::swap(&mut *shared.pending.buf.lock(), &mut spare);
        if !spare.is_empty() {
            let _ = sink.write_all(&spare);
            let _ = sink.flush();
            spare.clear();
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}
