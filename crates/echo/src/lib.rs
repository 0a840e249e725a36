//! An HTTP/1.1 echo server on hyper that plays the upstream in `switchyard demo`, the tests and the benchmarks.
//
// Every answer describes the request it received as JSON, so a test can see exactly what the proxy
// forwarded:
//
//   {"backend":"blue","method":"GET","path":"/a?b=c","headers":{"host":"..."},"body_bytes":0}
//
// Header names are lowercased and repeated headers joined with ", ". Special paths:
// `/status/{code}` answers with that status, `/delay/{ms}` waits before answering, `/drop` closes
// the connection without answering, and `/ws` with `Upgrade: websocket` switches protocols and
// echoes every byte back until EOF. hyper does the wire: keep-alive, pipelining, chunked bodies and
// `Expect: 100-continue`.

mod chunked;
mod service;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use chunked::{ChunkedDecoder, ParseError};
pub use service::websocket_accept;

/// How many injected failures a backend keeps the time of.
const FAILURE_TIMES: usize = 16;

/// An echo backend running on its own thread; it stops when dropped.
pub struct Backend {
    /// The address the backend listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Options for a backend; see [`Backend::builder`].
#[derive(Debug, Clone)]
pub struct BackendBuilder {
    name: String,
    addr: SocketAddr,
    fail_ratio: f64,
    fail_status: u16,
    delay: Duration,
}

/// State shared by all connections of one backend.
struct Shared {
    name: String,
    fail_ratio: f64,
    /// The status of an injected failure (500 unless the builder says otherwise).
    fail_status: u16,
    /// Every answer waits this long first (a slow backend).
    delay: Duration,
    requests: AtomicU64,
    /// Answers turned into 500 by `fail_ratio`, and when the first [`FAILURE_TIMES`] of them
    /// were decided (the lock is taken on injected failures only).
    injected_failures: AtomicU64,
    failure_times: parking_lot::Mutex<Vec<Instant>>,
}

impl Shared {
    /// Whether this answer becomes a 500 (`fail_ratio`); counts and timestamps it if so.
    fn inject_failure(&self) -> bool {
        if self.fail_ratio <= 0.0 || fastrand::f64() >= self.fail_ratio {
            return false;
        }
        self.injected_failures.fetch_add(1, Ordering::Relaxed);
        let mut times = self.failure_times.lock();
        if times.len() < FAILURE_TIMES {
            times.push(Instant::now());
        }
        true
    }
}

impl Backend {
    /// Starts a backend called `name` on a free port of 127.0.0.1.
    pub fn spawn(name: &str) -> std::io::Result<Backend> {
        Backend::builder(name).spawn()
    }

    /// Starts a backend called `name` on `addr` (the demo uses fixed ports).
    pub fn spawn_on(addr: SocketAddr, name: &str) -> std::io::Result<Backend> {
        Backend::builder(name).addr(addr).spawn()
    }

    /// Options beyond the name: listen address and failure injection.
    pub fn builder(name: &str) -> BackendBuilder {
        BackendBuilder {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fail_ratio: 0.0,
            fail_status: 500,
            delay: Duration::ZERO,
        }
    }

    /// The name the backend reports in `x-backend` and in its JSON bodies.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests this backend has parsed so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// How many answers `fail_ratio` has turned into 500 so far.
    pub fn injected_failures(&self) -> u64 {
        self.shared.injected_failures.load(Ordering::Relaxed)
    }

    /// When the first answer was turned into 500 by `fail_ratio` (the rollback benchmark's "first
    /// canary error"); `None` before that.
    pub fn first_injected_failure(&self) -> Option<Instant> {
        self.shared.failure_times.lock().first().copied()
    }

    /// When the first 16 answers turned into 500 by `fail_ratio` were decided, in order.
    pub fn injected_failure_times(&self) -> Vec<Instant> {
        self.shared.failure_times.lock().clone()
    }

    /// Stops the backend and waits for its thread; open connections are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may already be gone (its runtime failed); nothing to tell it then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the backend thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl BackendBuilder {
    /// Share of requests (0.0 to 1.0) answered with 500 instead of their normal status.
    pub fn fail_ratio(mut self, ratio: f64) -> BackendBuilder {
        self.fail_ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self
    }

    /// The status `fail_ratio` answers with instead of 500 (any from 400 to 599).
    pub fn fail_status(mut self, status: u16) -> BackendBuilder {
        if (400..=599).contains(&status) {
            self.fail_status = status;
        }
        self
    }

    /// Makes every answer wait `delay` before it is sent (on top of `/delay/{ms}`).
    pub fn delay(mut self, delay: Duration) -> BackendBuilder {
        self.delay = delay;
        self
    }

    /// Address to bind (default 127.0.0.1:0, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> BackendBuilder {
        self.addr = addr;
        self
    }

    /// Binds the address and serves on a new thread with its own single-threaded runtime.
    pub fn spawn(self) -> std::io::Result<Backend> {
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(self.into_shared());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("backend-{}", shared.name))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            log::error!(
                                "backend {}: cannot register listener: {err}",
                                thread_shared.name
                            );
                            return;
                        }
                    };
                    tokio::select! {
                        _ = service::accept_loop(listener, thread_shared) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime here cancels every connection task and closes its socket.
            })?;
        Ok(Backend {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Serves on an already bound listener inside the caller's runtime; runs until cancelled.
    pub async fn serve(self, listener: TcpListener) {
        service::accept_loop(listener, Arc::new(self.into_shared())).await
    }

    fn into_shared(self) -> Shared {
        Shared {
            name: self.name,
            fail_ratio: self.fail_ratio,
            fail_status: self.fail_status,
            delay: self.delay,
            requests: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
            failure_times: parking_lot::Mutex::new(Vec::with_capacity(FAILURE_TIMES)),
        }
    }
}

/// Serves the echo backend called `name` on `listener` in the caller's runtime; runs until cancelled.
pub async fn serve(listener: TcpListener, name: String) {
    Backend::builder(&name).serve(listener).await
}
