//! After a 413, the rest of the request body is read and thrown away before the connection or stream closes (nginx's lingering close), so the client reads the answer instead of a reset.
//!
//! Closing a socket with unread bytes makes the kernel send a reset, and a client still sending
//! its body (no `Expect: 100-continue`) then loses the 413 it was sent. So up to
//! `max(max_body_size, 16 MB)` more is read, each read within 5 s and all within 30 s (nginx's
//! `lingering_timeout` and `lingering_time`); a client that sends more or slower is cut off.
//! On HTTP/2 a stream whose body is left unread is reset, and that reset can overtake the 413
//! still queued for it: curl then reports "stream was not closed cleanly" and never shows the
//! 413. So the body is drained there too, under the same bounds.

use std::time::Duration;

use pingora_proxy::Session;

/// The least that is read and thrown away after a 413.
const DISCARD_AT_LEAST: u64 = 16 << 20;
/// The longest wait for each read (nginx `lingering_timeout`).
const READ_WAIT: Duration = Duration::from_secs(5);
/// The longest the whole discard may take (nginx `lingering_time`).
const TOTAL_WAIT: Duration = Duration::from_secs(30);

/// Reads and discards the request body after a 413 was written, up to `max(limit, 16 MB)`.
pub(super) async fn discard_body(session: &mut Session, limit: u64) {
    if !session.is_http2() && expects_continue(session) {
        // A client waiting for 100-continue sends no body.
        return;
    }
    let bound = limit.max(DISCARD_AT_LEAST);
    let drain = async {
        let mut read = 0u64;
        while read <= bound && !session.is_body_done() {
            match tokio::time::timeout(READ_WAIT, session.read_request_body()).await {
                Ok(Ok(Some(chunk))) => read += chunk.len() as u64,
                _ => break,
            }
        }
        read
    };
    match tokio::time::timeout(TOTAL_WAIT, drain).await {
        Ok(read) => log::debug!("discarded {read} body bytes after a 413"),
        Err(_) => log::debug!("stopped discarding a body after {TOTAL_WAIT:?}"),
    }
}

fn expects_continue(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
