//! Waiting on a condition instead of sleeping for a guessed time: tests synchronise on what they can observe (request counts, admin states, log lines, files).

use std::time::{Duration, Instant};

/// How often [`wait_until`] checks again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
