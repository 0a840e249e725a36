//! What can go wrong with an admin request, and the one place each error becomes a status and a body.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{json_response, RequestError, MAX_BODY};
use crate::api;
use crate::config::ConfigErrors;
use crate::control::ControlError;
use crate::runtime::{ChangeError, FleetError};

/// Everything that can go wrong with an admin request; [`AdminError::status`] maps each to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Refused by the request's own parse: token, path, method or body.
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
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
            AdminError::Request(r) => match r {
                RequestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                RequestError::NotFound(_) => StatusCode::NOT_FOUND,
                RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
                RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            },
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
        AdminError::Request(RequestError::Unauthorized(_)) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        AdminError::Request(RequestError::MethodNotAllowed { allow, .. }) => {
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
    use crate::admin_request::{parse_if_match, parse_switch, parse_weights, route};
    use serde_json::Value;

    #[test]
    fn request_errors_map_to_statuses_and_headers() {
        let status = |e: RequestError| AdminError::from(e).status().as_u16();
        let not_found = route("GET", "/v2/services").expect_err("unknown path");
        assert_eq!(status(not_found), 404);
        let bad = [
            parse_if_match(Some(b"abc")).expect_err("If-Match"),
            parse_weights(b"{\"blue\": -5}").expect_err("weights"),
            parse_switch(b"{}").expect_err("switch"),
        ];
        for e in bad {
            assert_eq!(status(e), 400);
        }
        let method = AdminError::from(route("GET", "/v1/services/api/weights").expect_err("405"));
        assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
        let resp = error_response(&method);
        assert_eq!(resp.headers()[header::ALLOW], "PUT, DELETE");
        let body: Value = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!(body["status"], 405);
        assert!(body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed: PUT, DELETE"));
        let unauthorized = AdminError::from(RequestError::Unauthorized("wrong bearer token"));
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(unauthorized.to_string(), "wrong bearer token");
    }

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
