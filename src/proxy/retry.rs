//! Whether a failed attempt goes to another server: the route's `retry` policy applied to what failed (nginx's `proxy_next_upstream`).

use std::time::Duration;

use pingora_error::{Error, ErrorSource, ErrorType, RetryType};
use pingora_proxy::Session;

use super::{pick, Ctx, Proxy};
use crate::config::retry::RetryPolicy;
use crate::upstream::Failure;

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The connection could not be made (a TLS handshake included): nothing was sent.
    Connect,
    /// The connection broke (reset, closed, read or write error) before the response header.
    Broken,
    /// The request was sent and no response header came in time (or it could not be written).
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
    /// Anything else: the client's side, our own refusals, a malformed answer.
    Other,
}

/// What a failure after the connection was made was, by pingora's error.
pub fn cause_after_connect(e: &Error) -> Cause {
    if e.esource() != &ErrorSource::Upstream {
        return Cause::Other;
    }
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Cause::Timeout,
        ErrorType::ConnectionClosed
        | ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::H2Error
        | ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout => Cause::Broken,
        _ => Cause::Other,
    }
}

/// Where the request stands when an attempt failed.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// Attempts made so far, the failed one included.
    pub tries: usize,
    /// Since the first attempt started.
    pub elapsed: Duration,
    /// GET, HEAD, PUT, DELETE, OPTIONS, TRACE: sending it twice is harmless.
    pub idempotent: bool,
    /// The request body is still held whole (pingora's retry buffer was not truncated).
    pub replayable: bool,
    /// A response header already went to the client: nothing may be retried then.
    pub answered: bool,
    /// A server not tried yet could take the request.
    pub server_left: bool,
}

/// Whether the policy sends the request to another server after `cause`. A request that was
/// never sent (a failed connect) may go again whatever its method; one that was (or may have
/// been) only when idempotent.
pub fn retries(policy: &RetryPolicy, cause: Cause, a: &Attempt) -> bool {
    let sent_safely = matches!(cause, Cause::Connect) || a.idempotent;
    names(policy, cause) && sent_safely && within_budget(policy, a)
}

/// Whether the policy's `on` list names `cause` at all (what is known before the attempt is
/// looked at: most answers, a 200 first of all, stop here).
fn names(policy: &RetryPolicy, cause: Cause) -> bool {
    match cause {
        Cause::Connect | Cause::Broken => policy.on_error,
        Cause::Timeout => policy.on_timeout,
        Cause::Status(s) => policy.on_status(s),
        Cause::Other => false,
    }
}

/// Neither the tries, the time budget nor the servers are spent, and the request can still be
/// sent again as it was.
pub fn within_budget(policy: &RetryPolicy, a: &Attempt) -> bool {
    !a.answered
        && a.replayable
        && a.server_left
        && a.tries < policy.tries as usize
        && (policy.timeout.is_zero() || a.elapsed < policy.timeout)
}

/// pingora's own verdict on a failure the policy does not name (such as an h2 upstream asking
/// for HTTP/1.1): an idempotent request is retried when pingora says it may be, within the
/// policy's budget, as before there was a policy.
pub fn pingora_retries(
    policy: &RetryPolicy,
    retry: RetryType,
    client_reused: bool,
    a: &Attempt,
) -> bool {
    let says = match retry {
        RetryType::Decided(b) => b,
        RetryType::ReusedOnly => client_reused,
    };
    says && a.idempotent && within_budget(policy, a)
}

/// The route's policy and where the request stands after the attempt under way; `None` before
/// a route and a server were chosen.
fn attempt<'c>(session: &Session, ctx: &'c Ctx) -> Option<(&'c RetryPolicy, Attempt)> {
    let policy = &ctx.route()?.options.retry;
    let (_, service) = ctx.service()?;
    let pool = ctx.pool?;
    let tried = ctx.tried();
    let attempt = Attempt {
        tries: ctx.tries,
        elapsed: ctx.first_try.map_or(Duration::ZERO, |t| t.elapsed()),
        idempotent: session.req_header().method.is_idempotent(),
        replayable: !session.as_ref().retry_buffer_truncated(),
        answered: session.response_written().is_some(),
        server_left: pick::has_untried(service, pool, tried),
    };
    Some((policy, attempt))
}

/// Whether the route's policy sends the request to another server after `cause`.
pub(super) fn decide(session: &Session, ctx: &Ctx, cause: Cause) -> bool {
    // Called on every upstream answer: the attempt (a clock read, a scan of the pool) is
    // looked at only for a cause the route's policy names.
    ctx.route().is_some_and(|r| names(&r.options.retry, cause))
        && attempt(session, ctx).is_some_and(|(policy, a)| retries(policy, cause, &a))
}

impl Proxy {
    /// Whether a failure after the connection was made is retried. A retried failure of the
    /// upstream's own (a broken connection, a timeout) counts against its server now, as it
    /// would have at the end of the request had it not been retried.
    pub(super) fn retry_failure(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        e: &Error,
        client_reused: bool,
    ) -> bool {
        let cause = cause_after_connect(e);
        let retried = attempt(session, ctx).is_some_and(|(policy, a)| match cause {
            Cause::Other => pingora_retries(policy, e.retry, client_reused, &a),
            cause => retries(policy, cause, &a),
        });
        if !retried {
            return false;
        }
        if matches!(cause, Cause::Broken | Cause::Timeout) {
            if let Some(guard) = ctx.guard.take() {
                let failure = Failure::Response {
                    client: ctx.client_ip,
                };
                if self.passive_failure(ctx, guard.state(), failure) {
                    self.record_ejection(ctx);
                }
            }
        }
        self.record_retry(ctx);
        true
    }

    /// When the upstream answered a status of the route's `retry.on` and the request may go to
    /// another server: the retryable error that sends it there before anything reached the
    /// client (`error_while_proxy` keeps its verdict).
    pub(super) fn retry_status(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        status: u16,
    ) -> Option<Box<Error>> {
        if !decide(session, ctx, Cause::Status(status)) {
            return None;
        }
        ctx.guard = None;
        ctx.status_retry = true;
        self.record_retry(ctx);
        let mut e = Error::explain(
            ErrorType::HTTPStatus(status),
            "the upstream answered a status of the route's retry.on; retrying on another server",
        );
        e.set_retry(true);
        Some(e.into_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        Attempt {
            tries: 1,
            elapsed: Duration::from_millis(5),
            idempotent: true,
            replayable: true,
            answered: false,
            server_left: true,
        }
    }

    fn policy(on: &[&str], tries: u32, timeout: Duration) -> RetryPolicy {
        RetryPolicy {
            on_error: on.contains(&"error"),
            on_timeout: on.contains(&"timeout"),
            statuses: on.iter().filter_map(|w| w.parse().ok()).collect(),
            tries,
            timeout,
        }
    }

    #[test]
    fn the_default_retries_errors_for_any_method_only_when_nothing_was_sent() {
        let p = RetryPolicy::default();
        let post = Attempt {
            idempotent: false,
            ..attempt()
        };
        assert!(retries(&p, Cause::Connect, &attempt()));
        assert!(retries(&p, Cause::Connect, &post), "never sent");
        assert!(retries(&p, Cause::Broken, &attempt()));
        assert!(!retries(&p, Cause::Broken, &post), "maybe sent");
        assert!(!retries(&p, Cause::Timeout, &attempt()), "not by default");
        assert!(
            !retries(&p, Cause::Status(503), &attempt()),
            "not by default"
        );
        assert!(!retries(&p, Cause::Other, &attempt()));
    }

    #[test]
    fn statuses_and_timeouts_only_for_idempotent_requests() {
        let p = policy(&["timeout", "503"], 3, Duration::ZERO);
        let post = Attempt {
            idempotent: false,
            ..attempt()
        };
        assert!(retries(&p, Cause::Status(503), &attempt()));
        assert!(!retries(&p, Cause::Status(503), &post));
        assert!(!retries(&p, Cause::Status(502), &attempt()));
        assert!(retries(&p, Cause::Timeout, &attempt()));
        assert!(!retries(&p, Cause::Timeout, &post));
        assert!(
            !retries(&p, Cause::Connect, &attempt()),
            "no \"error\" in on"
        );
    }

    #[test]
    fn tries_time_servers_answers_and_bodies_bound_every_retry() {
        let p = policy(&["error"], 2, Duration::from_secs(1));
        assert!(retries(&p, Cause::Broken, &attempt()));
        for spent in [
            Attempt {
                tries: 2,
                ..attempt()
            },
            Attempt {
                elapsed: Duration::from_secs(1),
                ..attempt()
            },
            Attempt {
                server_left: false,
                ..attempt()
            },
            Attempt {
                answered: true,
                ..attempt()
            },
            Attempt {
                replayable: false,
                ..attempt()
            },
        ] {
            assert!(!retries(&p, Cause::Connect, &spent), "{spent:?}");
        }
        let once = policy(&["error", "timeout", "503"], 1, Duration::ZERO);
        for cause in [
            Cause::Connect,
            Cause::Broken,
            Cause::Timeout,
            Cause::Status(503),
        ] {
            assert!(!retries(&once, cause, &attempt()), "tries = 1: {cause:?}");
        }
    }

    #[test]
    fn pingora_decides_what_the_policy_does_not_name_for_idempotent_requests() {
        let p = RetryPolicy::default();
        let a = attempt();
        assert!(pingora_retries(&p, RetryType::Decided(true), false, &a));
        assert!(!pingora_retries(&p, RetryType::Decided(false), true, &a));
        assert!(pingora_retries(&p, RetryType::ReusedOnly, true, &a));
        assert!(!pingora_retries(&p, RetryType::ReusedOnly, false, &a));
        let post = Attempt {
            idempotent: false,
            ..a
        };
        assert!(!pingora_retries(&p, RetryType::Decided(true), true, &post));
    }

    #[test]
    fn causes_by_error() {
        let up = |t| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        for (etype, cause) in [
            (ErrorType::ReadTimedout, Cause::Timeout),
            (ErrorType::ConnectionClosed, Cause::Broken),
            (ErrorType::ReadError, Cause::Broken),
            (ErrorType::InvalidHTTPHeader, Cause::Other),
        ] {
            assert_eq!(cause_after_connect(&up(etype.clone())), cause, "{etype:?}");
        }
        let mut down = Error::new(ErrorType::ConnectionClosed);
        down.as_down();
        assert_eq!(
            cause_after_connect(&down),
            Cause::Other,
            "the client's side"
        );
    }
}
