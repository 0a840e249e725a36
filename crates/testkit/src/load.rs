//! A load loop through the proxy: GET requests one after the other on a keep-alive client, on a thread of its own, recording who answered with what.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::http1_client;

/// One request of a [`Load`]: which user sent it, which backend answered, with what status.
#[derive(Debug, Clone)]
pub struct Seen {
    pub client: usize,
    /// The `backend` field of the JSON answer, or `"?"`; for a failed request, its error.
    pub backend: String,
    /// 0 when no response came.
    pub status: u16,
}

/// GET requests in a loop through the proxy on a thread of their own, until finished: one at a
/// time on one keep-alive HTTP/1.1 client, to `{base}/load/N`, as `clients` users taking turns
/// (each sends `X-User: user-K`), with `pause` between requests.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(base: &str, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2, base) = (stop.clone(), seen.clone(), base.to_string());
        let thread = std::thread::spawn(move || {
            let client = http1_client();
            let mut i = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                let user = i % clients.max(1);
                i += 1;
                let resp = client
                    .get(format!("{base}/load/{i}"))
                    .header("x-user", format!("user-{user}"))
                    .send();
                let (backend, status) = match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().unwrap_or_default();
                        (body["backend"].as_str().unwrap_or("?").to_string(), status)
                    }
                    Err(e) => (format!("request {i}: {e:?}"), 0),
                };
                seen2.lock().expect("load log").push(Seen {
                    client: user,
                    backend,
                    status,
                });
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        });
        Load {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// How many requests the loop has made so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("load log").len()
    }

    /// Waits until the loop has made `n` requests (answered or not); false after 10 s.
    pub fn wait_for(&self, n: usize) -> bool {
        crate::wait::wait_until(Duration::from_secs(10), || self.count() >= n)
    }

    /// Stops the loop and returns every request it made, in order.
    pub fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        self.seen.lock().expect("load log").clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The requests of a load that did not get a 200.
pub fn failures(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.status != 200).collect()
}
