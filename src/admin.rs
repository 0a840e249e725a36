//! The admin API: a second pingora service on its own listener, JSON in and out, for deploy tools and `ctl`.
//
// A request goes through four steps, each a plain function so it can be tested in memory:
// `Resource::parse` (path → resource), authentication (unless the resource is open), `route`
// (resource + method → `Action`), `dispatch` (the action, through `control` or `Runtime`).
// Every failure is an `AdminError`, and `AdminError::status` is the one place that turns errors,
// including `ControlError`, into status codes; `error_response` the one place that renders them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::acme::AcmeState;
use crate::config::{
    AccessLogTarget, AdminConfig, Balance, Config, ConfigErrors, RouteOptions, MAX_WEIGHT,
};
use crate::control::{
    self, ControlError, RolloutAction, RolloutRequest, ServiceView, SwitchRequest,
};
use crate::runtime::Runtime;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

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
                ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
                ControlError::NoRollout(_) => StatusCode::NOT_FOUND,
                ControlError::Conflict { .. }
                | ControlError::Unhealthy { .. }
                | ControlError::RolloutOwnsWeights { .. }
                | ControlError::RolloutActive { .. }
                | ControlError::NoActiveRollout(_) => StatusCode::CONFLICT,
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
    let mut body = json!({"error": e.to_string(), "status": status.as_u16()});
    match e {
        AdminError::Control(ControlError::Conflict { current, .. }) => {
            body["generation"] = json!(current);
        }
        AdminError::Control(
            ControlError::RolloutOwnsWeights { id, .. } | ControlError::RolloutActive { id, .. },
        ) => {
            body["rollout"] = json!(id);
        }
        AdminError::Rejected(errors) => {
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            body["errors"] = json!(list);
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

/// A path of the API, before the method is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Services,
    Service(String),
    Weights(String),
    Switch(String),
    Rollouts(String),
    /// `/v1/services/{s}/rollouts/current` (or the current rollout's id).
    Rollout(String),
    RolloutAction(String, RolloutAction),
    RolloutEvents(String),
    Reload,
    Config,
    Live,
    Ready,
    Metrics,
    Certs,
    CertRenew(String),
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
            ["v1", "services", s, "rollouts"] => Resource::Rollouts(segment(s)?),
            ["v1", "services", s, "rollouts", "current"] => Resource::Rollout(segment(s)?),
            ["v1", "services", s, "rollouts", "current", "events"] => {
                Resource::RolloutEvents(segment(s)?)
            }
            ["v1", "services", s, "rollouts", "current", action] => {
                Resource::RolloutAction(segment(s)?, RolloutAction::parse(action)?)
            }
            ["v1", "reload"] => Resource::Reload,
            ["v1", "config"] => Resource::Config,
            ["v1", "certs"] => Resource::Certs,
            ["v1", "certs", n, "renew"] => Resource::CertRenew(segment(n)?),
            ["health", "live"] => Resource::Live,
            ["health", "ready"] => Resource::Ready,
            ["metrics"] => Resource::Metrics,
            _ => return None,
        };
        Some(resource)
    }

    /// The methods the resource answers, for 405's `Allow`.
    pub fn allow(&self) -> &'static [&'static str] {
        match self {
            Resource::CertRenew(_) => &["POST"],
            Resource::Weights(_) => &["PUT", "DELETE"],
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
            Resource::Live | Resource::Ready => true,
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
    StartRollout(String),
    ShowRollout(String),
    ActOnRollout(String, RolloutAction),
    RolloutEvents(String),
    Reload,
    ShowConfig,
    Live,
    Ready,
    Metrics,
    ListCerts,
    RenewCert(String),
}

/// Path and method to an action: 404 for an unknown path, 405 for a method the path lacks.
pub fn route(method: &str, path: &str) -> Result<Action, AdminError> {
    let resource = Resource::parse(path).ok_or_else(|| AdminError::NotFound(path.into()))?;
    let action = match (resource, method) {
        (Resource::Services, "GET") => Action::ListServices,
        (Resource::Service(s), "GET") => Action::ShowService(s),
        (Resource::Weights(s), "PUT") => Action::SetWeights(s),
        (Resource::Weights(s), "DELETE") => Action::ClearWeights(s),
        (Resource::Switch(s), "POST") => Action::Switch(s),
        (Resource::Rollouts(s), "POST") => Action::StartRollout(s),
        (Resource::Rollout(s), "GET") => Action::ShowRollout(s),
        (Resource::RolloutAction(s, a), "POST") => Action::ActOnRollout(s, a),
        (Resource::RolloutEvents(s), "GET") => Action::RolloutEvents(s),
        (Resource::Reload, "POST") => Action::Reload,
        (Resource::Config, "GET") => Action::ShowConfig,
        (Resource::Live, "GET") => Action::Live,
        (Resource::Ready, "GET") => Action::Ready,
        (Resource::Metrics, "GET") => Action::Metrics,
        (Resource::Certs, "GET") => Action::ListCerts,
        (Resource::CertRenew(n), "POST") => Action::RenewCert(n),
        (resource, _) => {
            return Err(AdminError::MethodNotAllowed {
                method: method.into(),
                allow: resource.allow(),
            })
        }
    };
    Ok(action)
}

pub use crate::secret::constant_time_eq;

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

/// `If-Match: 7`, `"7"` or `W/"7"` → `Some(7)`; absent or `*` → `None`; anything else is a 400.
pub fn parse_if_match(raw: Option<&[u8]>) -> Result<Option<u64>, AdminError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let number = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').unwrap_or(""),
        None => tag,
    };
    number.parse::<u64>().map(Some).map_err(|_| {
        AdminError::BadRequest(format!(
            "If-Match must be a generation number such as 7 or \"7\", not {:?}",
            String::from_utf8_lossy(raw)
        ))
    })
}

fn parse_json(body: &[u8]) -> Result<Value, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::BadRequest(
            "the request body is empty; a JSON object is expected".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

/// `{"blue": 90, "green": 10}` as pool weights. Every problem names its pool.
pub fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, u32>, AdminError> {
    let Value::Object(map) = parse_json(body)? else {
        return Err(AdminError::BadRequest(
            "the body must be a JSON object of pool weights, e.g. {\"blue\": 90, \"green\": 10}"
                .into(),
        ));
    };
    let mut weights = BTreeMap::new();
    for (pool, value) in map {
        let bad = |what: String| {
            AdminError::BadRequest(format!(
                "weight of pool \"{pool}\" {what}; weights are integers from 0 to {MAX_WEIGHT}"
            ))
        };
        let weight = match &value {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(w), _) => match u32::try_from(w) {
                    Ok(w) if w <= MAX_WEIGHT => w,
                    _ => return Err(bad(format!("is {w}, above the most"))),
                },
                (None, Some(negative)) => return Err(bad(format!("is {negative}, below 0"))),
                (None, None) => return Err(bad(format!("is {n}, not an integer"))),
            },
            Value::String(_) => return Err(bad("is a string, not a number".into())),
            Value::Null => return Err(bad("is null".into())),
            Value::Bool(_) => return Err(bad("is a boolean, not a number".into())),
            Value::Array(_) | Value::Object(_) => return Err(bad("is not a number".into())),
        };
        weights.insert(pool, weight);
    }
    Ok(weights)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    to: String,
    watch: Option<Value>,
}

/// `{"to": "green", "watch": "30s"}` (watch optional).
pub fn parse_switch(body: &[u8]) -> Result<SwitchRequest, AdminError> {
    let value = parse_json(body)?;
    let req: RawSwitch = serde_json::from_value(value).map_err(|e| {
        AdminError::BadRequest(format!(
            "the body must be {{\"to\": \"<pool>\", \"watch\": \"<duration>\" (optional)}}: {e}"
        ))
    })?;
    Ok(SwitchRequest {
        to: req.to,
        watch: duration_field("watch", req.watch)?,
        ..SwitchRequest::default()
    })
}

/// A duration in a request body: `"30s"`, `"500ms"`, or a number of seconds; errors name `field`.
fn duration_field(
    field: &str,
    v: Option<Value>,
) -> Result<Option<std::time::Duration>, AdminError> {
    let bad = |why: String| AdminError::BadRequest(format!("\"{field}\": {why}"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::config::values::Duration::parse(&s)
            .map(|d| Some(d.0))
            .map_err(bad),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
            .map(|s| Some(std::time::Duration::from_secs_f64(s)))
            .ok_or_else(|| bad(format!("{n} is not a number of seconds"))),
        Some(other) => Err(bad(format!("{other} is not a duration like \"30s\""))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRolloutRequest {
    canary: String,
    stable: Option<String>,
    steps: Option<Vec<u32>>,
    interval: Option<Value>,
    max_error_rate: Option<f64>,
    max_p99: Option<Value>,
    min_requests: Option<u64>,
    shield: Option<bool>,
}

/// The body of `POST /v1/services/{s}/rollouts`.
pub fn parse_rollout(body: &[u8]) -> Result<RolloutRequest, AdminError> {
    let value = parse_json(body)?;
    let r: RawRolloutRequest = serde_json::from_value(value).map_err(|e| {
        AdminError::BadRequest(format!(
            "the body must be {{\"canary\": \"<pool>\", ...}} (see docs/rollouts.md): {e}"
        ))
    })?;
    Ok(RolloutRequest {
        canary: r.canary,
        stable: r.stable,
        steps: r.steps,
        interval: duration_field("interval", r.interval)?,
        max_error_rate: r.max_error_rate,
        max_p99: duration_field("max_p99", r.max_p99)?,
        min_requests: r.min_requests,
        shield: r.shield,
    })
}

/// `?force=true` (or `force=1`) in a query string.
pub fn forced(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "force" | "force=true" | "force=1"))
    })
}

/// What the handler needs of a request head, copied out of the session.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<Vec<u8>>,
    pub if_match: Option<Vec<u8>>,
    /// Who asked, for the log.
    pub peer: String,
}

/// The admin application; one per process, shared by every admin connection.
pub struct AdminApp {
    runtime: Arc<Runtime>,
    /// Certificate statuses and renewal requests.
    acme: Arc<AcmeState>,
    /// The `[admin]` settings the listener started with. The token and `metrics_require_token`
    /// follow the current config (a reload rotates the token); these apply when a reload dropped
    /// `[admin]`, or dropped the token while the listener is not on loopback.
    startup: AdminConfig,
}

impl AdminApp {
    pub fn new(runtime: Arc<Runtime>, acme: Arc<AcmeState>, admin: &AdminConfig) -> AdminApp {
        AdminApp {
            runtime,
            acme,
            startup: admin.clone(),
        }
    }

    /// The token (if any) and whether `/metrics` needs it, as the current config says.
    fn auth_settings(&self) -> (Option<String>, bool) {
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
            check_bearer(head.authorization.as_deref(), token)?;
        }
        route(&head.method, &head.path)
    }

    /// Carries out an authorized action.
    pub async fn dispatch(
        &self,
        action: Action,
        head: &Head,
        body: &[u8],
    ) -> Result<Response<Vec<u8>>, AdminError> {
        let rt = self.runtime.clone();
        match action {
            Action::ListServices => {
                #[derive(Serialize)]
                struct Services {
                    generation: u64,
                    services: Vec<ServiceView>,
                }
                let snap = rt.snapshot();
                let body = Services {
                    generation: snap.generation,
                    services: control::services(&snap),
                };
                Ok(json_response(StatusCode::OK, &body))
            }
            Action::ShowService(name) => {
                service_response(&control::service(&rt.snapshot(), &name)?)
            }
            Action::SetWeights(name) => {
                let weights = parse_weights(body)?;
                let if_match = parse_if_match(head.if_match.as_deref())?;
                let (svc, w) = (name.clone(), weights.clone());
                let force = forced(head.query.as_deref());
                let snap =
                    blocking(move || control::set_weights(&rt, &svc, &w, if_match, force)).await?;
                let list: Vec<String> = weights.iter().map(|(p, w)| format!("{p}={w}")).collect();
                log::info!(
                    "admin ({}): weights of service \"{name}\" set to {} (generation {})",
                    head.peer,
                    list.join(" "),
                    snap.generation
                );
                service_response(&control::service(&snap, &name)?)
            }
            Action::ClearWeights(name) => {
                let if_match = parse_if_match(head.if_match.as_deref())?;
                let svc = name.clone();
                let force = forced(head.query.as_deref());
                let snap =
                    blocking(move || control::clear_weights(&rt, &svc, if_match, force)).await?;
                log::info!(
                    "admin ({}): weight overrides of service \"{name}\" cleared, the config's weights apply (generation {})",
                    head.peer,
                    snap.generation
                );
                service_response(&control::service(&snap, &name)?)
            }
            Action::Switch(name) => {
                let mut req = parse_switch(body)?;
                req.if_match = parse_if_match(head.if_match.as_deref())?;
                req.force = forced(head.query.as_deref());
                let to = req.to.clone();
                let svc = name.clone();
                let (snap, watch) = blocking(move || control::switch(&rt, &svc, &req)).await?;
                log::info!(
                    "admin ({}): service \"{name}\" switched to pool \"{to}\" (generation {}){}",
                    head.peer,
                    snap.generation,
                    if watch.is_some() { ", watched" } else { "" }
                );
                let view = control::service(&snap, &name)?;
                match watch {
                    None => service_response(&view),
                    Some(rollout) => {
                        let mut body = serde_json::to_value(&view)
                            .map_err(|e| AdminError::Internal(e.to_string()))?;
                        body["rollout"] = json!(rollout);
                        Ok(json_response(StatusCode::OK, &body))
                    }
                }
            }
            Action::StartRollout(name) => {
                let req = parse_rollout(body)?;
                let svc = name.clone();
                let view = blocking(move || control::start_rollout(&rt, &svc, &req)).await?;
                log::info!(
                    "admin ({}): rollout {} of \"{}\" started on service \"{name}\"",
                    head.peer,
                    view.id,
                    view.canary
                );
                Ok(json_response(StatusCode::CREATED, &view))
            }
            Action::ShowRollout(name) => Ok(json_response(
                StatusCode::OK,
                &control::rollout_view(&rt.snapshot(), &name)?,
            )),
            Action::ActOnRollout(name, action) => {
                let svc = name.clone();
                let view = blocking(move || control::act_on_rollout(&rt, &svc, action)).await?;
                log::info!(
                    "admin ({}): rollout {} of service \"{name}\": {action:?} → {}",
                    head.peer,
                    view.id,
                    view.state.as_str()
                );
                Ok(json_response(StatusCode::OK, &view))
            }
            Action::RolloutEvents(name) => Ok(json_response(
                StatusCode::OK,
                &json!({"events": control::rollout_events(&rt.snapshot(), &name)?}),
            )),
            Action::Reload => {
                let via = format!(" via the admin API ({})", head.peer);
                let generation = blocking(move || rt.reload(&via)).await?.generation;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"status": "reloaded", "generation": generation}),
                ))
            }
            Action::ShowConfig => {
                let snap = rt.snapshot();
                let mut view = config_view(&snap.config);
                view["generation"] = json!(snap.generation);
                Ok(json_response(StatusCode::OK, &view))
            }
            Action::Live => Ok(json_response(StatusCode::OK, &json!({"status": "live"}))),
            Action::Ready => Ok(json_response(
                StatusCode::OK,
                &json!({"status": "ready", "generation": rt.snapshot().generation}),
            )),
            Action::ListCerts => Ok(json_response(
                StatusCode::OK,
                &json!({"certificates": self.acme.certificates()}),
            )),
            Action::RenewCert(name) => {
                let id = self
                    .acme
                    .request_renewal(&name)
                    .ok_or(AdminError::UnknownCertificate(name))?;
                log::info!(
                    "admin ({}): renewal of certificate \"{id}\" requested",
                    head.peer
                );
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({"status": "renewal requested", "certificate": id}),
                ))
            }
            Action::Metrics => Ok(text_response(
                StatusCode::OK,
                METRICS_CONTENT_TYPE,
                rt.render_metrics().into_bytes(),
            )),
        }
    }
}

/// Runs a change off the async threads: changes fsync the state file and reloads read the config.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, AdminError>
where
    T: Send + 'static,
    E: Send + 'static,
    AdminError: From<E>,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(AdminError::from),
        Err(e) => Err(AdminError::Internal(format!(
            "the change did not complete: {e}"
        ))),
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let head = Head {
            method: req.method.as_str().to_string(),
            path: req.uri.path().to_string(),
            query: req.uri.query().map(str::to_string),
            authorization: req
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec()),
            if_match: req
                .headers
                .get(header::IF_MATCH)
                .map(|v| v.as_bytes().to_vec()),
            peer: session
                .client_addr()
                .map_or_else(|| "unknown peer".into(), ToString::to_string),
        };
        let result = match self.authorize(&head) {
            Ok(action) => match read_body(session).await {
                Ok(body) => self.dispatch(action, &head, &body).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => resp,
            Err(e) => {
                // Whatever body was not read is not drained for a refused request: close instead.
                if !session.is_body_done() {
                    session.set_keepalive(None);
                }
                error_response(&e)
            }
        }
    }
}

/// Reads the whole request body, refusing more than [`MAX_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, AdminError> {
    let headers = &session.req_header().headers;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(AdminError::TooLarge);
    }
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|e| AdminError::BadRequest(format!("cannot answer Expect: {e}")))?;
    }
    session.set_read_timeout(Some(BODY_TIMEOUT));
    let mut body = Vec::new();
    loop {
        let chunk = session
            .read_request_body()
            .await
            .map_err(|e| AdminError::BadRequest(format!("cannot read the request body: {e}")))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > MAX_BODY {
            return Err(AdminError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}

fn service_response(view: &ServiceView) -> Result<Response<Vec<u8>>, AdminError> {
    let mut resp = json_response(StatusCode::OK, view);
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", view.generation)) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    Ok(resp)
}

/// Pretty JSON (people read it with curl), fields in declaration order.
fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Vec<u8>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            text_response(status, "application/json", body)
        }
        Err(e) => {
            let body = json!({"error": format!("cannot render the response: {e}"), "status": 500});
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                body.to_string().into_bytes(),
            )
        }
    }
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `"30s"`, or `"500ms"` when not whole seconds: the way the config file writes durations.
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn balance(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConn => "least_conn",
    }
}

fn route_options(o: &RouteOptions) -> Value {
    let headers: BTreeMap<&str, String> = o
        .response_headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    json!({
        "connect_timeout": duration(o.connect_timeout),
        "read_timeout": duration(o.read_timeout),
        "send_timeout": duration(o.send_timeout),
        "max_body_size": o.max_body_size,
        "redirect_https": o.redirect_https,
        "compression": o.compression,
        "websocket": o.websocket,
        "response_headers": headers,
        "limits": o.limits,
    })
}

/// The effective validated config as JSON, written out by hand so that secrets (the admin token,
/// private keys) can never slip in through a derive.
pub fn config_view(cfg: &Config) -> Value {
    let s = &cfg.server;
    let access_log = match &s.access_log {
        AccessLogTarget::Off => "off".to_string(),
        AccessLogTarget::Stdout => "stdout".to_string(),
        AccessLogTarget::Stderr => "stderr".to_string(),
        AccessLogTarget::File(p) => p.display().to_string(),
    };
    let listeners: Vec<Value> = cfg
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "address": l.address.to_string(),
                "tls": l.tls,
                "h2": l.h2,
                "redirect_https": l.redirect_https,
                "https_port": l.https_port,
            })
        })
        .collect();
    let certificates: Vec<Value> = cfg
        .certificates
        .iter()
        .map(|c| {
            json!({
                "cert": c.cert_path.display().to_string(),
                "names": c.names,
                "fallback": c.fallback,
            })
        })
        .collect();
    let routes: Vec<Value> = cfg
        .routes
        .iter()
        .map(|r| {
            json!({
                "host": r.host.to_string(),
                "path": r.path,
                "strip_prefix": r.strip_prefix,
                "service": r.service,
                "options": route_options(&r.options),
            })
        })
        .collect();
    let services: Vec<Value> = cfg
        .services
        .iter()
        .map(|svc| {
            let health = svc.health.as_ref().map(health_view);
            let pools: Vec<Value> = svc
                .pools
                .iter()
                .map(|p| {
                    let servers: Vec<Value> = p
                        .servers
                        .iter()
                        .map(|s| json!({"address": s.address.to_string(), "weight": s.weight}))
                        .collect();
                    json!({
                        "name": p.name,
                        "weight": p.weight,
                        "servers": servers,
                        "health": p.health.as_ref().map(health_view),
                    })
                })
                .collect();
            json!({
                "name": svc.name,
                "balance": balance(svc.balance),
                "health": health,
                "passive": {
                    "max_fails": svc.passive.max_fails,
                    "fail_timeout": duration(svc.passive.fail_timeout),
                },
                "pools": pools,
            })
        })
        .collect();
    let admin = cfg.admin.as_ref().map(|a| {
        json!({
            "address": a.address.to_string(),
            "token": a.token.as_ref().map(|_| "<redacted>"),
            "metrics_require_token": a.metrics_require_token,
        })
    });
    json!({
        "source": cfg.source.display().to_string(),
        "server": {
            "threads": s.threads,
            "drain_timeout": duration(s.drain_timeout),
            "access_log": access_log,
            "upgrade_socket": s.upgrade_socket,
            "pid_file": s.pid_file,
            "state_dir": s.state_dir.display().to_string(),
            "metrics": s.metrics,
        },
        "limits": limits_view(&cfg.limits),
        "listeners": listeners,
        "certificates": certificates,
        "routes": routes,
        "services": services,
        "admin": admin,
    })
}

fn health_view(h: &crate::config::HealthCheck) -> Value {
    json!({
        "path": h.path,
        "expect_status": h.expect_status,
        "interval": duration(h.interval),
        "timeout": duration(h.timeout),
        "healthy_threshold": h.healthy_threshold,
        "unhealthy_threshold": h.unhealthy_threshold,
    })
}

fn limits_view(l: &crate::config::LimitsConfig) -> Value {
    use crate::limits::KeyKind;
    let zones: Vec<Value> = l
        .zones
        .iter()
        .map(|z| {
            let key = match &z.key {
                KeyKind::ClientIp => "client_ip".to_string(),
                KeyKind::ClientIpRoute => "client_ip_route".to_string(),
                KeyKind::Header(h) => format!("header:{h}"),
            };
            json!({
                "name": z.name,
                "key": key,
                "requests": z.rate.requests,
                "per": duration(z.rate.per),
                "burst": z.burst,
                "max_keys": z.max_keys,
            })
        })
        .collect();
    json!({
        "trusted_proxies": l.trusted_proxies.0.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "max_connections": l.connections.total,
        "max_connections_per_ip": l.connections.per_ip,
        "exempt_paths": l.exempt_paths,
        "rate_limit_headers": l.rate_limit_headers,
        "zones": zones,
    })
}

/// The admin API as a pingora service listening on `admin.address` (plain HTTP/1.1).
pub fn service(
    runtime: Arc<Runtime>,
    acme: Arc<AcmeState>,
    admin: &AdminConfig,
) -> Service<HttpServer<AdminApp>> {
    let app = HttpServer::new_app(AdminApp::new(runtime, acme, admin));
    let mut svc = Service::new("admin".to_string(), app);
    // Admin traffic is a few requests a minute: one thread, apart from the proxy's.
    svc.threads = Some(1);
    svc.add_tcp(&admin.address.to_string());
    log::info!(
        "admin API on http://{} ({})",
        admin.address,
        if admin.token.is_some() {
            "bearer token required"
        } else {
            "no token configured: loopback only"
        }
    );
    svc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::AccessLog;

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
        assert_eq!(ok("POST", "/v1/reload"), Action::Reload);
        assert_eq!(ok("GET", "/v1/certs"), Action::ListCerts);
        assert_eq!(
            ok("POST", "/v1/certs/*.example.com/renew"),
            Action::RenewCert("*.example.com".into())
        );
        assert_eq!(ok("GET", "/v1/config"), Action::ShowConfig);
        assert_eq!(ok("GET", "/health/live"), Action::Live);
        assert_eq!(ok("GET", "/health/ready"), Action::Ready);
        assert_eq!(ok("GET", "/metrics"), Action::Metrics);

        for path in [
            "/",
            "",
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
            assert_eq!(e.status(), StatusCode::NOT_FOUND, "{path}");
        }

        let e = route("GET", "/v1/services/api/weights").expect_err("405");
        assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED);
        let resp = error_response(&e);
        assert_eq!(resp.headers()[header::ALLOW], "PUT, DELETE");
        for (m, p) in [
            ("POST", "/v1/services"),
            ("GET", "/v1/reload"),
            ("PUT", "/v1/services/api"),
            ("GET", "/v1/services/api/switch"),
            ("DELETE", "/metrics"),
        ] {
            assert_eq!(
                route(m, p).expect_err(p).status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {p}"
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
    }

    #[test]
    fn parses_if_match() {
        let p = |v: &[u8]| parse_if_match(Some(v));
        assert_eq!(parse_if_match(None).expect("absent"), None);
        assert_eq!(p(b"7").expect("bare"), Some(7));
        assert_eq!(p(b"\"7\"").expect("quoted"), Some(7));
        assert_eq!(p(b" \"12\" ").expect("spaces"), Some(12));
        assert_eq!(p(b"W/\"7\"").expect("weak"), Some(7));
        assert_eq!(p(b"*").expect("any"), None);
        for bad in [
            &b""[..],
            b"\"7",
            b"7\"",
            b"abc",
            b"-1",
            b"7, 8",
            b"\"\"",
            b"\xff",
        ] {
            let e = p(bad).expect_err("invalid");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(e.to_string().contains("If-Match"), "{e}");
        }
    }

    #[test]
    fn validates_weight_json() {
        let w = parse_weights(br#"{"blue": 90, "green": 0}"#).expect("valid");
        assert_eq!(
            w,
            BTreeMap::from([("blue".into(), 90), ("green".into(), 0)])
        );
        let max = format!("{{\"blue\": {MAX_WEIGHT}}}");
        assert_eq!(
            parse_weights(max.as_bytes()).expect("max")["blue"],
            MAX_WEIGHT
        );

        let err = |body: &str| {
            let e = parse_weights(body.as_bytes()).expect_err(body);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body}");
            e.to_string()
        };
        assert!(err(r#"{"blue": -5}"#).contains("pool \"blue\" is -5, below 0"));
        assert!(err(r#"{"blue": 1.5}"#).contains("pool \"blue\" is 1.5, not an integer"));
        assert!(err(r#"{"blue": "50"}"#).contains("pool \"blue\" is a string"));
        assert!(err(r#"{"blue": null}"#).contains("pool \"blue\" is null"));
        assert!(err(r#"{"blue": true}"#).contains("pool \"blue\""));
        assert!(err(r#"{"blue": [1]}"#).contains("pool \"blue\""));
        assert!(err(r#"{"blue": 1000001}"#).contains("pool \"blue\" is 1000001"));
        assert!(err(r#"{"blue": 99999999999}"#).contains("pool \"blue\""));
        assert!(err(r#"[90, 10]"#).contains("JSON object"));
        assert!(err(r#""blue""#).contains("JSON object"));
        assert!(err(r#"{"blue": 90"#).contains("not valid JSON"));
        assert!(err("").contains("empty"));
        // An empty object parses; `control::set_weights` refuses it with its own message.
        assert!(parse_weights(b"{}").expect("empty object").is_empty());
    }

    #[test]
    fn parses_switch_body() {
        assert_eq!(
            parse_switch(br#"{"to": "green"}"#).expect("valid").to,
            "green"
        );
        let watched = parse_switch(br#"{"to": "green", "watch": "30s"}"#).expect("valid");
        assert_eq!(watched.watch, Some(std::time::Duration::from_secs(30)));
        let seconds = parse_switch(br#"{"to": "green", "watch": 1.5}"#).expect("valid");
        assert_eq!(seconds.watch, Some(std::time::Duration::from_millis(1500)));
        for bad in [
            r#"{}"#,
            r#"{"to": 1}"#,
            r#"{"to": "g", "x": 1}"#,
            r#"{"to": "g", "watch": "soon"}"#,
            r#"{"to": "g", "watch": -1}"#,
            r#""green""#,
            "",
        ] {
            let e = parse_switch(bad.as_bytes()).expect_err(bad);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret-tokeN", b"s3cret-token"));
        assert!(!constant_time_eq(b"X3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b"s3cret-token"));
        assert!(!constant_time_eq(b"x", b""));
        // A shorter input whose missing bytes would compare equal to the zero padding.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

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

    const CONFIG: &str = r#"
[[listeners]]
name = "http"
address = "127.0.0.1:1"

[[routes]]
host = "*"
service = "api"

[services.api.pools.blue]
weight = 100
servers = ["127.0.0.1:2"]

[services.api.pools.green]
weight = 0
servers = ["127.0.0.1:3"]

[admin]
address = "127.0.0.1:4"
token = "t0ken"
"#;

    fn app() -> AdminApp {
        let path = std::path::Path::new("/nonexistent/switchyard.toml");
        let config = crate::config::parse(CONFIG, path).expect("test config is valid");
        let admin = config.admin.clone().expect("has [admin]");
        let fallback = crate::tls::self_signed(&["switchyard.invalid"]).expect("self-signed cert");
        let log = AccessLog::open(&AccessLogTarget::Off).expect("access log off");
        let rt = Runtime::new(config, path.into(), fallback, log, None).expect("runtime");
        AdminApp::new(
            rt,
            crate::acme::AcmeState::new(&prometheus::Registry::new()),
            &admin,
        )
    }

    fn head(method: &str, path: &str, token: Option<&str>) -> Head {
        Head {
            method: method.into(),
            path: path.into(),
            authorization: token.map(|t| format!("Bearer {t}").into_bytes()),
            ..Head::default()
        }
    }

    #[test]
    fn authorizes_before_routing() {
        let app = app();
        let status = |h: Head| app.authorize(&h).map_err(|e| e.status().as_u16());
        assert_eq!(status(head("GET", "/v1/services", None)), Err(401));
        assert_eq!(status(head("GET", "/v1/services", Some("nope"))), Err(401));
        // Unknown paths and wrong methods do not reveal themselves without the token.
        assert_eq!(status(head("GET", "/v1/secret", None)), Err(401));
        assert_eq!(status(head("GET", "/v1/secret", Some("t0ken"))), Err(404));
        assert_eq!(status(head("POST", "/v1/config", Some("t0ken"))), Err(405));
        assert_eq!(
            status(head("GET", "/v1/services", Some("t0ken"))),
            Ok(Action::ListServices)
        );
        assert_eq!(status(head("GET", "/health/live", None)), Ok(Action::Live));
        assert_eq!(status(head("GET", "/metrics", None)), Ok(Action::Metrics));
    }

    #[tokio::test]
    async fn weights_if_match_and_config_view() {
        let app = app();
        let json = |r: Response<Vec<u8>>| -> (u16, Value) {
            let status = r.status().as_u16();
            (status, serde_json::from_slice(r.body()).expect("json body"))
        };
        let mut h = head("PUT", "/v1/services/api/weights", Some("t0ken"));
        h.if_match = Some(b"\"1\"".to_vec());
        let action = app.authorize(&h).expect("authorized");
        let resp = app
            .dispatch(action.clone(), &h, br#"{"blue": 0, "green": 100}"#)
            .await
            .expect("applied");
        assert_eq!(resp.headers()[header::ETAG], "\"2\"");
        let (status, body) = json(resp);
        assert_eq!(status, 200);
        assert_eq!(body["generation"], 2);
        assert_eq!(body["pools"][1]["weight"], 100);
        assert_eq!(body["pools"][1]["overridden"], true);

        // The same If-Match again is stale now.
        let e = app
            .dispatch(action, &h, br#"{"blue": 100}"#)
            .await
            .expect_err("conflict");
        let (status, body) = json(error_response(&e));
        assert_eq!((status, body["generation"].clone()), (409, json!(2)));

        let h = head("GET", "/v1/config", Some("t0ken"));
        let (status, body) = json(
            app.dispatch(Action::ShowConfig, &h, b"")
                .await
                .expect("config"),
        );
        assert_eq!(status, 200);
        assert_eq!(body["admin"]["token"], "<redacted>");
        assert_eq!(body["services"][0]["pools"][0]["weight"], 100);
        assert!(!body.to_string().contains("t0ken"));
    }
}
