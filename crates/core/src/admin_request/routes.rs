//! Paths and methods of the admin API: which resource a path names, which action a method asks of it.

use super::{Asset, RequestError, RolloutAction};

/// A path of the API, before the method is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Services,
    Service(String),
    Weights(String),
    Switch(String),
    Maintenance(String),
    Rollouts(String),
    /// `/v1/services/{s}/rollouts/current` (or the current rollout's id).
    Rollout(String),
    RolloutAction(String, RolloutAction),
    RolloutEvents(String),
    /// `/v1/services/{s}/traffic`: requests per pool over the last minutes.
    Traffic(String),
    Reload,
    Config,
    Cluster,
    Live,
    Ready,
    Metrics,
    Certs,
    CertRenew(String),
    /// The dashboard page (`/`) and its script and style (`/dashboard/...`).
    Dashboard(Asset),
}

impl Resource {
    /// `None` for a path the API does not have. One trailing slash is ignored; service names are
    /// percent-decoded.
    pub fn parse(path: &str) -> Option<Resource> {
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let resource = match segments.as_slice() {
            ["v1", "services"] => Resource::Services,
            ["v1", "services", s] => Resource::Service(segment(s)?),
            ["v1", "services", s, "weights"] => Resource::Weights(segment(s)?),
            ["v1", "services", s, "switch"] => Resource::Switch(segment(s)?),
            ["v1", "services", s, "maintenance"] => Resource::Maintenance(segment(s)?),
            ["v1", "services", s, "rollouts"] => Resource::Rollouts(segment(s)?),
            ["v1", "services", s, "rollouts", "current"] => Resource::Rollout(segment(s)?),
            ["v1", "services", s, "rollouts", "current", "events"] => {
                Resource::RolloutEvents(segment(s)?)
            }
            ["v1", "services", s, "traffic"] => Resource::Traffic(segment(s)?),
            ["v1", "services", s, "rollouts", "current", action] => {
                Resource::RolloutAction(segment(s)?, RolloutAction::parse(action)?)
            }
            ["v1", "reload"] => Resource::Reload,
            ["v1", "config"] => Resource::Config,
            ["v1", "cluster"] => Resource::Cluster,
            ["v1", "certs"] => Resource::Certs,
            ["v1", "certs", n, "renew"] => Resource::CertRenew(segment(n)?),
            ["health", "live"] => Resource::Live,
            ["health", "ready"] => Resource::Ready,
            ["metrics"] => Resource::Metrics,
            [""] => Resource::Dashboard(Asset::Page),
            ["dashboard", file] => Resource::Dashboard(Asset::parse(file)?),
            _ => return None,
        };
        Some(resource)
    }

    /// The methods the resource answers, for 405's `Allow`.
    pub fn allow(&self) -> &'static [&'static str] {
        match self {
            Resource::CertRenew(_) => &["POST"],
            Resource::Weights(_) | Resource::Maintenance(_) => &["PUT", "DELETE"],
            Resource::Switch(_)
            | Resource::Reload
            | Resource::Rollouts(_)
            | Resource::RolloutAction(..) => &["POST"],
            _ => &["GET"],
        }
    }

    /// Whether the resource is served without the token.
    pub fn is_open(&self, metrics_require_token: bool) -> bool {
        match self {
            // The dashboard's files hold no data: the page asks for the token, then reads the API.
            Resource::Live | Resource::Ready | Resource::Dashboard(_) => true,
            Resource::Metrics => !metrics_require_token,
            _ => false,
        }
    }
}

/// A non-empty, percent-decoded UTF-8 path segment.
fn segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

/// What a request asks for, once path and method are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ListServices,
    ShowService(String),
    SetWeights(String),
    ClearWeights(String),
    Switch(String),
    SetMaintenance(String),
    ClearMaintenance(String),
    StartRollout(String),
    ShowRollout(String),
    ActOnRollout(String, RolloutAction),
    RolloutEvents(String),
    ShowTraffic(String),
    Reload,
    ShowConfig,
    ShowCluster,
    Live,
    Ready,
    Metrics,
    ListCerts,
    RenewCert(String),
    Dashboard(Asset),
}

/// Path and method to an action: 404 for an unknown path, 405 for a method the path lacks.
pub fn route(method: &str, path: &str) -> Result<Action, RequestError> {
    let resource = Resource::parse(path).ok_or_else(|| RequestError::NotFound(path.into()))?;
    let action = match (resource, method) {
        (Resource::Services, "GET") => Action::ListServices,
        (Resource::Service(s), "GET") => Action::ShowService(s),
        (Resource::Weights(s), "PUT") => Action::SetWeights(s),
        (Resource::Weights(s), "DELETE") => Action::ClearWeights(s),
        (Resource::Switch(s), "POST") => Action::Switch(s),
        (Resource::Maintenance(s), "PUT") => Action::SetMaintenance(s),
        (Resource::Maintenance(s), "DELETE") => Action::ClearMaintenance(s),
        (Resource::Rollouts(s), "POST") => Action::StartRollout(s),
        (Resource::Rollout(s), "GET") => Action::ShowRollout(s),
        (Resource::RolloutAction(s, a), "POST") => Action::ActOnRollout(s, a),
        (Resource::RolloutEvents(s), "GET") => Action::RolloutEvents(s),
        (Resource::Traffic(s), "GET") => Action::ShowTraffic(s),
        (Resource::Reload, "POST") => Action::Reload,
        (Resource::Config, "GET") => Action::ShowConfig,
        (Resource::Cluster, "GET") => Action::ShowCluster,
        (Resource::Live, "GET") => Action::Live,
        (Resource::Ready, "GET") => Action::Ready,
        (Resource::Metrics, "GET") => Action::Metrics,
        (Resource::Certs, "GET") => Action::ListCerts,
        (Resource::CertRenew(n), "POST") => Action::RenewCert(n),
        (Resource::Dashboard(a), "GET") => Action::Dashboard(a),
        (resource, _) => {
            return Err(RequestError::MethodNotAllowed {
                method: method.into(),
                allow: resource.allow(),
            })
        }
    };
    Ok(action)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths_and_methods() {
        let ok = |m: &str, p: &str| route(m, p).expect("routes");
        assert_eq!(ok("GET", "/v1/services"), Action::ListServices);
        assert_eq!(ok("GET", "/v1/services/"), Action::ListServices);
        assert_eq!(
            ok("GET", "/v1/services/api"),
            Action::ShowService("api".into())
        );
        assert_eq!(
            ok("PUT", "/v1/services/api/weights"),
            Action::SetWeights("api".into())
        );
        assert_eq!(
            ok("DELETE", "/v1/services/api/weights"),
            Action::ClearWeights("api".into())
        );
        assert_eq!(
            ok("POST", "/v1/services/a%20b/switch"),
            Action::Switch("a b".into())
        );
        assert_eq!(
            ok("PUT", "/v1/services/api/maintenance"),
            Action::SetMaintenance("api".into())
        );
        assert_eq!(
            ok("DELETE", "/v1/services/api/maintenance"),
            Action::ClearMaintenance("api".into())
        );
        assert_eq!(ok("POST", "/v1/reload"), Action::Reload);
        assert_eq!(ok("GET", "/v1/certs"), Action::ListCerts);
        assert_eq!(
            ok("POST", "/v1/certs/*.example.com/renew"),
            Action::RenewCert("*.example.com".into())
        );
        assert_eq!(ok("GET", "/v1/config"), Action::ShowConfig);
        assert_eq!(ok("GET", "/v1/cluster"), Action::ShowCluster);
        assert_eq!(ok("GET", "/health/live"), Action::Live);
        assert_eq!(ok("GET", "/health/ready"), Action::Ready);
        assert_eq!(ok("GET", "/metrics"), Action::Metrics);
        assert_eq!(
            ok("GET", "/v1/services/api/traffic"),
            Action::ShowTraffic("api".into())
        );
        assert_eq!(ok("GET", "/"), Action::Dashboard(Asset::Page));
        assert_eq!(
            ok("GET", "/dashboard/app.js"),
            Action::Dashboard(Asset::Script)
        );

        for path in [
            "",
            "/dashboard",
            "/dashboard/other.js",
            "/v1",
            "/v1/servicesx",
            "/v1/services//weights",
            "/v1/services/api/weights/extra",
            "/v1/services/%zz",
            "/v1/services/%ff",
            "/v1/services/%4",
            "/v2/services",
            "v1/services",
        ] {
            let e = route("GET", path).expect_err(path);
            assert!(matches!(e, RequestError::NotFound(_)), "{path}: {e:?}");
        }

        // The admin module answers 405 with these in `Allow` (its error tests).
        let e = route("GET", "/v1/services/api/weights").expect_err("405");
        assert!(
            matches!(&e, RequestError::MethodNotAllowed { allow, .. } if *allow == ["PUT", "DELETE"]),
            "{e:?}"
        );
        for (m, p) in [
            ("POST", "/v1/services"),
            ("GET", "/v1/reload"),
            ("PUT", "/v1/services/api"),
            ("GET", "/v1/services/api/switch"),
            ("DELETE", "/metrics"),
            ("POST", "/"),
            ("POST", "/v1/services/api/traffic"),
        ] {
            let e = route(m, p).expect_err(p);
            assert!(
                matches!(e, RequestError::MethodNotAllowed { .. }),
                "{m} {p}: {e:?}"
            );
        }
    }

    #[test]
    fn open_resources() {
        let open = |p: &str, m: bool| Resource::parse(p).expect(p).is_open(m);
        assert!(open("/health/live", true));
        assert!(open("/health/ready", true));
        assert!(open("/metrics", false));
        assert!(!open("/metrics", true));
        assert!(!open("/v1/services", false));
        assert!(!open("/v1/config", false));
        assert!(open("/", true));
        assert!(open("/dashboard/app.css", true));
        assert!(!open("/v1/services/api/traffic", false));
    }
}
