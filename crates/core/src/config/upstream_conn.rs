//! `[services.NAME.upstream]`: the service's connections to its servers, named as in nginx (`keepalive`, `keepalive_timeout`, `max_conns`, `queue_timeout`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{serialize, values, Validator};

/// The idle time after which a pooled upstream connection is closed, unless configured (the
/// fixed value before the setting existed).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request waits for a free slot under `max_conns`, unless configured.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamConn {
    pub keepalive: Option<Spanned<usize>>,
    pub keepalive_timeout: Option<Spanned<values::Duration>>,
    pub max_conns: Option<Spanned<usize>>,
    pub queue_timeout: Option<Spanned<values::Duration>>,
}

/// How a service keeps and bounds its connections to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpstreamConn {
    /// Idle connections kept for reuse, all servers of the service together (nginx
    /// `keepalive`); `None`: only the process-wide pool bounds them; 0: none is reused.
    pub keepalive: Option<usize>,
    /// How long an idle connection is kept (nginx `keepalive_timeout`).
    #[serde(serialize_with = "serialize::duration")]
    pub keepalive_timeout: Duration,
    /// Requests in flight to one server at most (nginx `max_conns`); `None`: no limit.
    pub max_conns: Option<usize>,
    /// How long a request over `max_conns` on every server waits for a slot before a 503.
    #[serde(serialize_with = "serialize::duration")]
    pub queue_timeout: Duration,
}

impl Default for UpstreamConn {
    fn default() -> Self {
        UpstreamConn {
            keepalive: None,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_conns: None,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

impl Validator {
    pub(super) fn upstream_conn(&mut self, raw: Option<&RawUpstreamConn>) -> UpstreamConn {
        let defaults = UpstreamConn::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let keepalive_timeout = match &raw.keepalive_timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                self.error(
                    t.span(),
                    "keepalive_timeout must be above 0 (keepalive = 0 turns reuse off)",
                );
                defaults.keepalive_timeout
            }
            Some(t) => t.get_ref().0,
            None => defaults.keepalive_timeout,
        };
        let max_conns = match &raw.max_conns {
            Some(n) if *n.get_ref() == 0 => {
                self.error(
                    n.span(),
                    "max_conns must be at least 1 (leave it out for no limit)",
                );
                None
            }
            Some(n) => Some(*n.get_ref()),
            None => None,
        };
        if let (Some(t), None) = (&raw.queue_timeout, &raw.max_conns) {
            self.error(
                t.span(),
                "queue_timeout applies only with max_conns (requests wait when every server is at max_conns)",
            );
        }
        UpstreamConn {
            keepalive: raw.keepalive.as_ref().map(|k| *k.get_ref()),
            keepalive_timeout,
            max_conns,
            queue_timeout: raw
                .queue_timeout
                .as_ref()
                .map_or(defaults.queue_timeout, |t| t.get_ref().0),
        }
    }
}
