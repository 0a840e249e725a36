//! What can go wrong with an admin request, and the one place each error becomes a status and a body.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{json_response, MAX_BODY};
use crate::api;
use crate::config::ConfigErrors;
use crate::control::ControlError;
use crate::runtime::{ChangeError, FleetError};

/// Everything that can go wrong with an admin request; [`AdminError::status`] maps each to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method {method} is not allowed on this endpoint (allowed: {})", .allow.join(", "))]
    MethodNotAllowed {
        method: String,
        allow: &'static [&'static str],
    },
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error("config rejected")]
    Rejected(#[from] ConfigErrors),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("no ACME certificate covers \"{0}\"")]
    UnknownCertificate(String),
}

impl AdminError {
    /// The one mapping from errors to status codes.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Control(c) => match c {
                ControlError::UnknownService(_) | ControlError::UnknownPool { .. } => {
                    StatusCode::NOT_FOUND
                }
                ControlError::Invalid(_) | ControlError::Maintenance(_) => StatusCode::BAD_REQUEST,
                ControlError::NoRollout(_) => StatusCode::NOT_FOUND,
                ControlError::Conflict { .. }
                | ControlError::Unhealthy { .. }
                | ControlError::RolloutOwnsWeights { .. }
                | ControlError::RolloutActive { .. }
                | ControlError::NoActiveRollout(_) => StatusCode::CONFLICT,
                ControlError::Change(ChangeError::Fleet(FleetError::Unavailable(_))) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ControlError::Change(ChangeError::Fleet(FleetError::Conflict { .. })) => {
                    StatusCode::CONFLICT
                }
                ControlError::Change(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::UnknownCertificate(_) => StatusCode::NOT_FOUND,
        }
    }
}

/// `{"error": "...", "status": N}`, plus what a client needs to act on it: the current generation
/// on a conflict, every config error on a rejected reload, `Allow` and `WWW-Authenticate` headers.
pub fn error_response(e: &AdminError) -> Response<Vec<u8>> {
    let status = e.status();
    let mut body = api::ErrorBody {
        error: e.to_string(),
        errors: None,
        generation: None,
        rollout: None,
        status: status.as_u16(),
    };
    match e {
        AdminError::Control(ControlError::Conflict { current, .. })
        | AdminError::Control(ControlError::Change(ChangeError::Fleet(FleetError::Conflict {
            current,
            ..
        }))) => {
            body.generation = Some(*current);
        }
        AdminError::Control(
            ControlError::RolloutOwnsWeights { id, .. } | ControlError::RolloutActive { id, .. },
        ) => {
            body.rollout = Some(*id);
        }
        AdminError::Rejected(errors) => {
            body.errors = Some(errors.0.iter().map(ToString::to_string).collect());
        }
        _ => {}
    }
    let mut resp = json_response(status, &body);
    let headers = resp.headers_mut();
    match e {
        AdminError::Unauthorized(_) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        AdminError::MethodNotAllowed { allow, .. } => {
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                headers.insert(header::ALLOW, v);
            }
        }
        _ => {}
    }
    resp
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn control_errors_map_to_statuses() {
        let status = |e: ControlError| AdminError::from(e).status().as_u16();
        assert_eq!(status(ControlError::UnknownService("x".into())), 404);
        let pool = ControlError::UnknownPool {
            service: "s".into(),
            pool: "p".into(),
        };
        assert_eq!(status(pool), 404);
        assert_eq!(status(ControlError::Invalid("x".into())), 400);
        let conflict = ControlError::Conflict {
            expected: 3,
            current: 5,
        };
        let resp = error_response(&AdminError::from(conflict));
        assert_eq!(resp.status(), 409);
        let body: Value = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!(body["generation"], 5);
        let unhealthy = ControlError::Unhealthy {
            service: "s".into(),
            pool: "p".into(),
        };
        assert_eq!(status(unhealthy), 409);
    }
}
