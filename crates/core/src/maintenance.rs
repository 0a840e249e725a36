//! A service's maintenance switch: what the admin API sets and `state.json` keeps, checked into its rules, and the pure decision of which requests still go through.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::error_pages::{ErrorPage, ErrorPages, PageBody};
use crate::limits::client_ip::IpNet;

/// The Retry-After of a maintenance answer unless the operator gives one: 5 minutes.
pub const DEFAULT_RETRY_AFTER: u64 = 300;
/// The longest Retry-After accepted: one day.
pub const MAX_RETRY_AFTER: u64 = 24 * 3600;
/// The largest maintenance page (HTML or JSON); it travels in an admin API body (64 KiB at most).
pub const MAX_PAGE_BYTES: usize = 32 * 1024;
/// Networks and paths one maintenance may list.
pub const MAX_ENTRIES: usize = 256;
/// Paths let through unless the operator lists others: health endpoints, as nginx users exempt
/// them. Each also covers the paths under it (`/health/ready`).
pub const DEFAULT_EXEMPT: &[&str] = &["/health", "/healthz"];

/// What an operator asks for when turning maintenance on; every field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The HTML page for browsers.
    pub page: Option<String>,
    /// The JSON body for API clients.
    pub json: Option<String>,
    /// Client networks let through to the servers (`10.0.0.0/8`, `192.0.2.7`).
    pub allow: Vec<String>,
    /// Path prefixes let through; `None`: [`DEFAULT_EXEMPT`].
    pub exempt: Option<Vec<String>>,
    /// Seconds; `None`: [`DEFAULT_RETRY_AFTER`].
    pub retry_after: Option<u64>,
}

/// A service in maintenance, as persisted in `state.json` (checked when made, and again when
/// loaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// When it was turned on, in Unix milliseconds.
    pub since: u64,
    /// Seconds, for the Retry-After header.
    pub retry_after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub exempt: Vec<String>,
}

/// Why a maintenance request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    #[error("the {kind} page has {len} bytes; at most {MAX_PAGE_BYTES}")]
    PageTooLarge { kind: &'static str, len: usize },
    #[error("the json page is not valid JSON: {0}")]
    BadJson(String),
    #[error("\"allow\": {0}")]
    BadNetwork(String),
    #[error("\"exempt\": path \"{0}\" must start with / and hold no ?, # or space")]
    BadPath(String),
    #[error("\"{field}\" lists {len} entries; at most {MAX_ENTRIES}")]
    TooMany { field: &'static str, len: usize },
    #[error("\"retry_after\" must be from 1 to {MAX_RETRY_AFTER} seconds, not {0}")]
    BadRetryAfter(u64),
}

impl Maintenance {
    /// Checks `req` and makes the maintenance it asks for, turned on at `since`.
    pub fn new(req: Request, since: u64) -> Result<Maintenance, MaintenanceError> {
        let m = Maintenance {
            since,
            retry_after: req.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            page: req.page,
            json: req.json,
            allow: req.allow.iter().map(|a| a.trim().to_string()).collect(),
            exempt: req
                .exempt
                .unwrap_or_else(|| DEFAULT_EXEMPT.iter().map(|p| p.to_string()).collect()),
        };
        m.check()?;
        Ok(m)
    }

    /// Every rule [`Maintenance::new`] applies (a state file is checked again when loaded).
    pub fn check(&self) -> Result<(), MaintenanceError> {
        if !(1..=MAX_RETRY_AFTER).contains(&self.retry_after) {
            return Err(MaintenanceError::BadRetryAfter(self.retry_after));
        }
        for (kind, page) in [("html", &self.page), ("json", &self.json)] {
            if let Some(p) = page.as_ref().filter(|p| p.len() > MAX_PAGE_BYTES) {
                return Err(MaintenanceError::PageTooLarge { kind, len: p.len() });
            }
        }
        if let Some(json) = &self.json {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| MaintenanceError::BadJson(e.to_string()))?;
        }
        for (field, list) in [("allow", &self.allow), ("exempt", &self.exempt)] {
            if list.len() > MAX_ENTRIES {
                return Err(MaintenanceError::TooMany {
                    field,
                    len: list.len(),
                });
            }
        }
        for a in &self.allow {
            IpNet::parse(a).map_err(MaintenanceError::BadNetwork)?;
        }
        if let Some(p) = self
            .exempt
            .iter()
            .find(|p| !p.starts_with('/') || p.contains(['?', '#', ' ']))
        {
            return Err(MaintenanceError::BadPath(p.clone()));
        }
        Ok(())
    }
}

/// A service's maintenance as the request path checks it, compiled into each snapshot.
#[derive(Debug, Clone)]
pub struct Gate {
    pub retry_after: u64,
    allow: Vec<IpNet>,
    exempt: Vec<String>,
    /// The paths of the service's active checks, as its servers see them (exact).
    health: Vec<String>,
    /// The operator's page as a 503 error page above the route's (empty: none given).
    pub pages: ErrorPages,
}

impl Gate {
    /// `m` (already checked) for a service whose active checks probe `health`.
    pub fn new(m: &Maintenance, health: Vec<String>) -> Gate {
        let body = |text: &Option<String>| {
            text.as_ref().map(|t| PageBody {
                body: Bytes::from(t.clone()),
                source: "maintenance".into(),
            })
        };
        let page = ErrorPage {
            html: body(&m.page),
            json: body(&m.json),
        };
        let pages = if page.html.is_none() && page.json.is_none() {
            ErrorPages::default()
        } else {
            ErrorPages::new(BTreeMap::from([(503, page)]))
        };
        Gate {
            retry_after: m.retry_after,
            allow: m
                .allow
                .iter()
                .filter_map(|a| IpNet::parse(a).ok())
                .collect(),
            exempt: m.exempt.clone(),
            health,
            pages,
        }
    }

    /// Whether a request still goes to the servers: from an allowed client, to an exempt path
    /// (`path` as the client sent it, normalised), or to one of the service's health check paths
    /// (`upstream_path`: as the servers see it, after the route's prefix is stripped).
    pub fn lets_through(&self, client: Option<IpAddr>, path: &str, upstream_path: &str) -> bool {
        client.is_some_and(|ip| self.allow.iter().any(|n| n.contains(ip)))
            || self.exempt.iter().any(|p| under(p, path))
            || self.health.iter().any(|h| h == upstream_path)
    }
}

/// Whether `path` is `prefix` or below it (on a segment boundary).
fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let ok = Maintenance::new(Request::default(), 7).expect("defaults");
        assert_eq!(ok.retry_after, DEFAULT_RETRY_AFTER);
        assert_eq!(ok.exempt, vec!["/health", "/healthz"]);
        let bad = |req: Request| Maintenance::new(req, 0).expect_err("refused");
        assert!(matches!(
            bad(Request {
                allow: vec!["10.0.0.0/33".into()],
                ..Request::default()
            }),
            MaintenanceError::BadNetwork(_)
        ));
        assert!(matches!(
            bad(Request {
                json: Some("{oops".into()),
                ..Request::default()
            }),
            MaintenanceError::BadJson(_)
        ));
        assert!(matches!(
            bad(Request {
                page: Some("x".repeat(MAX_PAGE_BYTES + 1)),
                ..Request::default()
            }),
            MaintenanceError::PageTooLarge { kind: "html", .. }
        ));
        assert_eq!(
            bad(Request {
                retry_after: Some(0),
                ..Request::default()
            }),
            MaintenanceError::BadRetryAfter(0)
        );
        assert_eq!(
            bad(Request {
                exempt: Some(vec!["health".into()]),
                ..Request::default()
            }),
            MaintenanceError::BadPath("health".into())
        );
    }

    #[test]
    fn lets_through_allowed_clients_exempt_and_health_paths() {
        let m = Maintenance::new(
            Request {
                allow: vec!["10.1.0.0/16".into(), "2001:db8::1".into()],
                ..Request::default()
            },
            0,
        )
        .expect("valid");
        let gate = Gate::new(&m, vec!["/ready".into()]);
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert!(gate.lets_through(ip("10.1.2.3"), "/x", "/x"));
        assert!(gate.lets_through(ip("2001:db8::1"), "/x", "/x"));
        assert!(!gate.lets_through(ip("10.2.0.1"), "/x", "/x"));
        assert!(!gate.lets_through(None, "/x", "/x"));
        assert!(gate.lets_through(None, "/health", "/health"));
        assert!(gate.lets_through(None, "/health/live", "/health/live"));
        assert!(gate.lets_through(None, "/healthz", "/healthz"));
        assert!(!gate.lets_through(None, "/healthcheck", "/healthcheck"));
        assert!(gate.lets_through(None, "/api/ready", "/ready"));
        assert!(!gate.lets_through(None, "/ready/x", "/ready/x"));
        assert!(gate.pages.is_empty());
    }
}
