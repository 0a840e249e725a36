//! Who may use the admin API: the bearer token (checked in constant time by the core's `admin_request::check_bearer`) on every resource that is not open.

use super::{check_bearer, route, Action, AdminApp, AdminError, Head, Resource};
use crate::secret::Secret;

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
        Ok(route(&head.method, &head.path)?)
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
            let e = AdminError::from(check_bearer(Some(bad), "t0ken").expect_err("refused"));
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
        let e = AdminError::from(check_bearer(None, "t0ken").expect_err("missing"));
        let resp = error_response(&e);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body: Value = serde_json::from_slice(resp.body()).expect("json");
        assert_eq!(body["status"], 401);
    }
}
