//! Host names in the config resolved all at once, on a bounded set of threads and within one deadline, so 2,000 names take seconds rather than 2,000 lookups in a row.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long all lookups together may take; a name without an answer by then is reported.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Lookups in flight at once.
const WORKERS: usize = 64;

/// What a `host:port` text turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Addr(SocketAddr),
    /// Not `host:port`, or the name has no address.
    Failed,
    /// No answer within [`DEADLINE`].
    TimedOut,
}

/// Resolves every text of `names` that is not already an IP `address:port`, concurrently.
/// Lookups still running at the deadline are left to finish on their own threads.
pub fn resolve_all<'a>(names: impl IntoIterator<Item = &'a str>) -> HashMap<String, Resolved> {
    let mut pending: Vec<String> = names
        .into_iter()
        .filter(|n| n.parse::<SocketAddr>().is_err())
        .map(str::to_string)
        .collect();
    pending.sort();
    pending.dedup();
    let mut out: HashMap<String, Resolved> = pending
        .iter()
        .map(|n| (n.clone(), Resolved::TimedOut))
        .collect();
    if pending.is_empty() {
        return out;
    }
    let queue = Arc::new(parking_lot::Mutex::new(pending));
    let (tx, rx) = mpsc::channel();
    let workers = queue.lock().len().min(WORKERS);
    for _ in 0..workers {
        let queue = queue.clone();
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("config-resolve".into())
            .spawn(move || loop {
                let Some(name) = queue.lock().pop() else {
                    return;
                };
                let addr = name.to_socket_addrs().ok().and_then(|mut a| a.next());
                let result = addr.map_or(Resolved::Failed, Resolved::Addr);
                if tx.send((name, result)).is_err() {
                    return;
                }
            });
        if spawned.is_err() {
            break;
        }
    }
    drop(tx);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, result)) => {
                out.insert(name, result);
            }
            // Every worker is done, or the deadline passed.
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_skips_ip_addresses() {
        let out = resolve_all([
            "localhost:80",
            "127.0.0.1:81",
            "no-such-name.invalid:80",
            "x",
        ]);
        assert!(
            !out.contains_key("127.0.0.1:81"),
            "an IP address needs no lookup"
        );
        assert!(matches!(out.get("localhost:80"), Some(Resolved::Addr(a)) if a.port() == 80));
        assert_eq!(out.get("no-such-name.invalid:80"), Some(&Resolved::Failed));
        assert_eq!(out.get("x"), Some(&Resolved::Failed), "no port");
    }

    #[test]
    fn many_names_resolve_concurrently() {
        // 2,000 distinct texts for one host name: resolved by the pool, not one by one, well
        // within the deadline (each answer comes from /etc/hosts).
        let names: Vec<String> = (0..2000)
            .map(|i| format!("localhost:{}", 1000 + i))
            .collect();
        let out = resolve_all(names.iter().map(String::as_str));
        assert_eq!(out.len(), 2000);
        assert!(out.values().all(|r| matches!(r, Resolved::Addr(_))));
    }
}
