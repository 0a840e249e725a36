//! The access log: one line per request (JSON or a template), written by a dedicated thread off the request path.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::SystemTime;

use crate::config::log_format::LogFormat;
use crate::config::AccessLogTarget;

mod json;
mod template;

/// One access log line. Field names are the log's public format (docs/operations.md), written
/// by `json.rs` or a template (`template.rs`); times are milliseconds rounded to 3 decimals.
#[derive(Debug)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client_ip: Option<IpAddr>,
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
    pub upstream: Option<SocketAddr>,
    pub upstream_ms: Option<f64>,
    pub request_id: &'a str,
    /// The W3C trace id (32 hex digits): the client's `traceparent`'s, or a new one.
    pub trace_id: &'a str,
    pub listener: &'a str,
    pub protocol: &'static str,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// The X-Forwarded-For header as the client sent it.
    pub forwarded_for: Option<&'a str>,
    /// The request head (as HTTP/1.1 text) and body bytes read (nginx's `$request_length`).
    pub request_bytes: u64,
    /// `"TLSv1.3"`, `"TLSv1.2"`; null on plain HTTP.
    pub tls_version: Option<Cow<'a, str>>,
    /// Upstream attempts (servers tried) for this request.
    pub tries: usize,
    pub upstream_connect_ms: Option<f64>,
    pub upstream_header_ms: Option<f64>,
    pub upstream_response_ms: Option<f64>,
    /// A shielded canary request that failed there and was answered by the stable pool.
    pub retried: bool,
    pub error: Option<String>,
    /// For templates only: the Basic-auth user (nginx's `$remote_user`).
    pub remote_user: Option<String>,
    /// For templates only: `HTTP/1.1`, `HTTP/2.0` (the third word of `$request`).
    pub version: &'static str,
}

/// The longest text form of an address (`INET6_ADDRSTRLEN` less its NUL).
pub const IP_TEXT_MAX: usize = 45;

/// The address in its usual text form (dotted quad, or RFC 5952 for IPv6) without going through
/// `Display` for IPv4, in a buffer on the stack: its first `len` bytes.
pub fn ip_text(ip: IpAddr) -> ([u8; IP_TEXT_MAX], usize) {
    let mut text = [0u8; IP_TEXT_MAX];
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            let mut put = |b: u8| {
                text[n] = b;
                n += 1;
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            n
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut rest = &mut text[..];
            // At most 39 characters: `Ipv6Addr` writes no zone.
            let _ = write!(rest, "{ip}");
            IP_TEXT_MAX - rest.len()
        }
    };
    (text, len)
}

/// Appends the address in its usual text form ([`ip_text`]; the log lines and the forwarding
/// headers).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let (text, len) = ip_text(ip);
    out.extend_from_slice(&text[..len]);
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

thread_local! {
    /// Each worker serialises its line here, outside the lock; the buffer is kept between lines.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// A cheap handle: serializing happens on the caller, writing on the log thread.
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Option<std::sync::Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    pending: Pending,
    /// Wakes the writer early (buffer full), or asks it to flush or reopen its file.
    wake: mpsc::SyncSender<Command>,
}

/// What the writer thread is asked to do besides its periodic write.
#[derive(Debug)]
enum Command {
    /// The pending buffer is full: write it now.
    Write,
    /// Write everything pending, then acknowledge.
    Flush(mpsc::Sender<()>),
    /// Write everything pending to the old file, then open the path again (after a rotation).
    Reopen(mpsc::Sender<std::io::Result<()>>),
}

/// Where the lines go; a file can be opened again at the same path.
enum Sink {
    Stream(Box<dyn Write + Send>),
    File(PathBuf, std::fs::File),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stream(w) => w,
            Sink::File(_, f) => f,
        }
    }

    /// Opens the file's path again, keeping the old file when that fails. Streams have nothing to reopen.
    fn reopen(&mut self) -> std::io::Result<()> {
        if let Sink::File(path, file) = self {
            *file = open_append(path)?;
        }
        Ok(())
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl AccessLog {
    pub fn open(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let sink = match target {
            AccessLogTarget::Off => return Ok(AccessLog { inner: None }),
            AccessLogTarget::Stdout => Sink::Stream(Box::new(std::io::stdout())),
            AccessLogTarget::Stderr => Sink::Stream(Box::new(std::io::stderr())),
            AccessLogTarget::File(path) => Sink::File(path.clone(), open_append(path)?),
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

    /// Queues one line in `format` (the request's snapshot's: a reload changes it).
    pub fn write(&self, entry: &Entry<'_>, format: &LogFormat) {
        let Some(shared) = &self.inner else { return };
        LINE.with_borrow_mut(|line| {
            line.clear();
            match format {
                LogFormat::Json => json::render(line, entry),
                LogFormat::Template { pieces, .. } => template::render(line, pieces, entry),
            }
            line.push(b'\n');
            let mut buf = shared.pending.buf.lock();
            buf.extend_from_slice(line);
            let full = buf.len() >= WAKE_AT;
            drop(buf);
            if full {
                // A full wake queue already holds a wake-up; nothing is lost by dropping this one.
                let _ = shared.wake.try_send(Command::Write);
            }
        });
    }

    /// Waits (at most `timeout`) until every line queued so far is written out.
    pub fn flush(&self, timeout: std::time::Duration) {
        let Some(shared) = &self.inner else { return };
        let (ack_tx, ack_rx) = mpsc::channel();
        if shared.wake.send(Command::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }

    /// Writes what is pending to the current file, then opens the configured path again
    /// (SIGUSR1 after logrotate renamed the file). On failure the old file stays in use.
    /// Stdout, stderr and an off log have nothing to reopen.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(shared) = &self.inner else {
            return Ok(());
        };
        let (ack_tx, ack_rx) = mpsc::channel();
        let gone = || std::io::Error::other("the access-log writer thread is gone");
        shared
            .wake
            .send(Command::Reopen(ack_tx))
            .map_err(|_| gone())?;
        ack_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .map_err(|_| gone())?
    }
}

/// Takes the pending bytes every `FLUSH_EVERY` (or when woken) and writes them in one go.
fn write_loop(shared: &Shared, woken: &mpsc::Receiver<Command>, mut sink: Sink) {
    let mut spare = Vec::with_capacity(WAKE_AT * 2);
    loop {
        let command = match woken.recv_timeout(FLUSH_EVERY) {
            Ok(command) => Some(command),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        std::mem::swap(&mut *shared.pending.buf.lock(), &mut spare);
        if !spare.is_empty() {
            let out = sink.writer();
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        match command {
            Some(Command::Flush(ack)) => {
                let _ = ack.send(());
            }
            Some(Command::Reopen(ack)) => {
                let _ = ack.send(sink.reopen());
            }
            Some(Command::Write) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
            // the longest forms: 15 and 39 characters, and a mapped IPv4 at its longest
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            let mut out = b"before ".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(
                out.strip_prefix(b"before "),
                Some(ip.to_string().as_bytes())
            );
            let (text, len) = ip_text(ip);
            assert_eq!(&text[..len], ip.to_string().as_bytes());
        }
    }
}
