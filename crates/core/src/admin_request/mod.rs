//! The admin API's requests parsed without I/O (path and method, bearer token, JSON bodies), so that the parsing of untrusted input stands apart from the server and is fuzzed on its own.
//!
//! The `admin` module of the `switchyard` crate serves the API: it reads the request, calls these
//! functions, and turns a [`RequestError`] into a status and a JSON body (`AdminError`, the one
//! place where admin errors become responses).

mod bodies;
mod routes;

use std::time::Duration;

use crate::config::{Share, Steps};
use crate::secret::constant_time_eq;

pub use bodies::{
    forced, parse_if_match, parse_maintenance, parse_rollout, parse_switch, parse_weights,
};
pub use routes::{route, Action, Resource};

/// Why a request is refused before anything acts on it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method {method} is not allowed on this endpoint (allowed: {})", .allow.join(", "))]
    MethodNotAllowed {
        method: String,
        allow: &'static [&'static str],
    },
    #[error("{0}")]
    BadRequest(String),
}

/// Checks an `Authorization: Bearer <token>` header against the token.
pub fn check_bearer(authorization: Option<&[u8]>, token: &str) -> Result<(), RequestError> {
    let raw = authorization.ok_or(RequestError::Unauthorized(
        "missing bearer token (send Authorization: Bearer <token>)",
    ))?;
    let text = std::str::from_utf8(raw).unwrap_or_default().trim();
    let presented = match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(RequestError::Unauthorized(
                "the Authorization header is not \"Bearer <token>\"",
            ))
        }
    };
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(RequestError::Unauthorized("wrong bearer token"))
    }
}

/// A file of the dashboard (the `admin` module serves its content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `/`
    Page,
    /// `/dashboard/app.js`
    Script,
    /// `/dashboard/app.css`
    Style,
}

impl Asset {
    /// The file named by the last segment of `/dashboard/{file}`.
    pub fn parse(file: &str) -> Option<Asset> {
        match file {
            "app.js" => Some(Asset::Script),
            "app.css" => Some(Asset::Style),
            _ => None,
        }
    }
}

/// A blue/green switch, optionally watched.
#[derive(Debug, Clone, Default)]
pub struct SwitchRequest {
    pub to: String,
    /// Watch the new pool this long and switch back on a breach.
    pub watch: Option<Duration>,
    pub if_match: Option<u64>,
    pub force: bool,
}

/// `POST /v1/services/{service}/rollouts`: what differs from the service's rollout defaults.
#[derive(Debug, Clone, Default)]
pub struct RolloutRequest {
    pub canary: String,
    pub stable: Option<String>,
    pub steps: Option<Steps>,
    pub interval: Option<Duration>,
    pub max_error_rate: Option<Share>,
    pub max_p99: Option<Duration>,
    pub min_requests: Option<u64>,
    pub shield: Option<bool>,
}

/// What an operator does to an active rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl RolloutAction {
    pub fn parse(s: &str) -> Option<RolloutAction> {
        Some(match s {
            "pause" => RolloutAction::Pause,
            "resume" => RolloutAction::Resume,
            "promote" => RolloutAction::Promote,
            "abort" => RolloutAction::Abort,
            _ => return None,
        })
    }
}
