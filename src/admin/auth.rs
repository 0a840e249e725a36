//! Who may use the admin API: the bearer token, checked in constant time, on every resource that is not open.

use super::{route, Action, AdminApp, AdminError, Head, Resource};
use crate::secret::{constant_time_eq, Secret};

/// Checks an `Authorization: Bearer <token>` header against the token.
pub fn check_bearer(authorization: Option<&[u8]>, token: &str) -> Result<(), AdminError> {
    let raw = authorization.ok_or(AdminError::Unauthorized(
        "missing bearer token (send Authorization: Bearer <token>)",
    ))?;
    let text = std::str::from_utf8(raw).unwrap_or_default().trim();
    let presented = match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(AdminError::Unauthorized(
                "the Authorization header is not \"Bearer <token>\"",
            ))
        }
    };
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(AdminError::Unauthorized("wrong bearer token"))
    }
}

impl AdminApp {
    /// The token (if any) and whether `/metrics` needs it, as the current config says.
    fn auth_settings(&self) -> (Option<Secret>, bool) {
        let snap = self.runtime.snapshot();
        match &snap.config.admin {
            Some(a) if a.token.is_some() || self.startup.address.ip().is_loopback() => {
                (a.token.clone(), a.metrics_require_token)
            }
            _ => (
                self.startup.token.clone(),
                self.startup.metrics_require_token,
            ),
        }
    }

    /// Authentication and routing: everything that is decided before the body is read.
    pub fn authorize(&self, head: &Head) -> Result<Action, AdminError> {
        let (token, metrics_require_token) = self.auth_settings();
        let open = Resource::parse(&head.path).is_some_and(|r| r.is_open(metrics_require_token));
        if let (false, Some(token)) = (open, &token) {
            check_bearer(head.authorization.as_deref(), token.expose())?;
        }
        route(&head.method, &head.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::error_response;
    use http::{header, StatusCode};
    use serde_json::Value;

    #[test]
    fn bearer_header() {
        assert!(check_bearer(Some(b"Bearer t0ken"), "t0ken").is_ok());
        assert!(check_bearer(Some(b"bearer  t0ken "), "t0ken").is_ok());
        for bad in [
            &b"Bearer wrong"[..],
            b"Basic dDBrZW4=",
            b"t0ken",
            b"Bearer",
            b"\xff",
        ] {
            let e = check_bearer(Some(bad), "t0ken").expect_err("refused");
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
        let e = check_bearer(None, "t0ken").expect_err("missing");
        let resp = error_response(&e);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body: Value = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!(body["status"], 401);
    }
}
