//! The admin API: a second pingora service on its own listener, JSON in and out, for deploy tools and `ctl`.
//!
//! A request goes through four steps, each a plain function so it can be tested in memory:
//! `Resource::parse` (path → resource), authentication unless the resource is open (`auth`),
//! `route` (resource + method → `Action`), `dispatch` (the action, through `control` or
//! `Runtime`, with bodies parsed by `parse_*`). The parsing of paths, tokens and bodies is the
//! core's `admin_request` (without I/O, fuzzed on its own), re-exported here; its
//! `RequestError` becomes `AdminError::Request`. Every failure is an `AdminError`, and
//! `AdminError::status` (`error`) is the one place that turns errors, including `ControlError`,
//! into status codes; `error_response` the one place that renders them.

mod auth;
mod dashboard;
mod error;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde::Serialize;
use serde_json::json;

pub use crate::admin_request::{
    check_bearer, forced, parse_if_match, parse_maintenance, parse_rollout, parse_switch,
    parse_weights, route, Action, Asset, RequestError, Resource,
};
pub use error::{error_response, AdminError};

use crate::acme::AcmeState;
use crate::api::{self, ServiceView};
use crate::config::{AdminConfig, Config};
use crate::control;
use crate::runtime::Runtime;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

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
                let snap = rt.snapshot();
                let body = api::Services {
                    generation: snap.generation,
                    services: control::services(&snap),
                    cluster: rt.cluster.enabled().then(|| match rt.cluster.degraded() {
                        None => "ok".to_string(),
                        Some(why) => format!("degraded: {why}"),
                    }),
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
                        // Through a `Value`, as it always was: its keys go out sorted.
                        let body = serde_json::to_value(api::Switched {
                            service: view,
                            rollout: Some(rollout),
                        })
                        .map_err(|e| AdminError::Internal(e.to_string()))?;
                        Ok(json_response(StatusCode::OK, &body))
                    }
                }
            }
            Action::SetMaintenance(name) => {
                let req = parse_maintenance(body)?;
                let svc = name.clone();
                let snap = blocking(move || control::set_maintenance(&rt, &svc, req)).await?;
                let view = control::service(&snap, &name)?;
                if let Some(m) = &view.maintenance {
                    log::warn!(
                        "admin ({}): service \"{name}\" in maintenance: 503 with Retry-After {}s, {} page, {} allowed network(s), exempt {:?} (generation {})",
                        head.peer,
                        m.retry_after_seconds,
                        match (m.page_bytes, m.json_bytes) {
                            (None, None) => "the error pages' or the JSON",
                            (Some(_), None) => "an HTML",
                            (None, Some(_)) => "a JSON",
                            (Some(_), Some(_)) => "an HTML and a JSON",
                        },
                        m.allow.len(),
                        m.exempt,
                        snap.generation
                    );
                }
                service_response(&view)
            }
            Action::ClearMaintenance(name) => {
                let svc = name.clone();
                let snap = blocking(move || control::clear_maintenance(&rt, &svc)).await?;
                log::warn!(
                    "admin ({}): service \"{name}\" out of maintenance (generation {})",
                    head.peer,
                    snap.generation
                );
                service_response(&control::service(&snap, &name)?)
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
                // Through a `Value` (`json!`), as it always was: its keys go out sorted.
                &json!(api::Events {
                    events: control::rollout_events(&rt.snapshot(), &name)?
                }),
            )),
            Action::ShowTraffic(name) => Ok(json_response(
                StatusCode::OK,
                &control::traffic(&rt.snapshot(), &rt.traffic, &name)?,
            )),
            Action::Dashboard(asset) => Ok(dashboard::response(asset)),
            Action::Reload => {
                let via = format!(" via the admin API ({})", head.peer);
                let generation = blocking(move || rt.reload(&via)).await?.generation;
                Ok(json_response(
                    StatusCode::OK,
                    &api::Reloaded {
                        generation,
                        status: "reloaded".into(),
                    },
                ))
            }
            Action::ShowConfig => {
                /// The config in force and its generation; secrets serialize as `"<redacted>"`.
                #[derive(Serialize)]
                struct ConfigView<'a> {
                    generation: u64,
                    #[serde(flatten)]
                    config: &'a Config,
                }
                let snap = rt.snapshot();
                let view = ConfigView {
                    generation: snap.generation,
                    config: &snap.config,
                };
                Ok(json_response(StatusCode::OK, &view))
            }
            Action::Live => Ok(json_response(StatusCode::OK, &json!({"status": "live"}))),
            Action::Ready => {
                let mut body = json!({"status": "ready", "generation": rt.snapshot().generation});
                if rt.cluster.enabled() {
                    // Still ready: a degraded node serves its last state; it only refuses writes.
                    body["cluster"] = match rt.cluster.degraded() {
                        None => json!("ok"),
                        Some(_) => json!("degraded"),
                    };
                }
                Ok(json_response(StatusCode::OK, &body))
            }
            Action::ShowCluster => match rt.cluster.view() {
                Some(view) => Ok(json_response(StatusCode::OK, &view)),
                None => Err(RequestError::NotFound(
                    "/v1/cluster: this node has no [cluster]".into(),
                )
                .into()),
            },
            Action::ListCerts => Ok(json_response(
                StatusCode::OK,
                // Through a `Value` (`json!`), as it always was: its keys go out sorted.
                &json!(api::Certificates {
                    certificates: self.acme.certificates(),
                    files: control::file_certificates(&rt.snapshot()),
                }),
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
                    &api::RenewalRequested {
                        certificate: id,
                        status: "renewal requested".into(),
                    },
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
            .map_err(|e| RequestError::BadRequest(format!("cannot answer Expect: {e}")))?;
    }
    session.set_read_timeout(Some(BODY_TIMEOUT));
    let mut body = Vec::new();
    loop {
        let chunk = session
            .read_request_body()
            .await
            .map_err(|e| RequestError::BadRequest(format!("cannot read the request body: {e}")))?;
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

/// The admin API as a pingora service listening on `admin.address`: HTTP/1.1, over TLS when
/// `[admin] tls` is set (with client certificates required when it has a `client_ca`).
pub fn service(
    runtime: Arc<Runtime>,
    acme: Arc<AcmeState>,
    admin: &AdminConfig,
) -> Service<HttpServer<AdminApp>> {
    let app = HttpServer::new_app(AdminApp::new(runtime, acme, admin));
    let mut svc = Service::new("admin".to_string(), app);
    // Admin traffic is a few requests a minute: one thread, apart from the proxy's.
    svc.threads = Some(1);
    let address = admin.address.to_string();
    let (scheme, client) = match &admin.tls {
        Some(tls) => {
            // The config was built when the file was read (`config::AdminTls`); like the
            // address, it stays until a restart.
            let cell = Arc::new(arc_swap::ArcSwap::new(tls.config.clone()));
            svc.add_listener(ListenerConfig::tcp(address).tls(TlsSettings::from_config_cell(cell)));
            let client = if tls.client_ca.is_some() {
                "client certificate required, "
            } else {
                ""
            };
            ("https", client)
        }
        None => {
            svc.add_tcp(&address);
            ("http", "")
        }
    };
    log::info!(
        "admin API on {scheme}://{} ({client}{})",
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
    use serde_json::Value;

    fn app() -> AdminApp {
        let config = format!(
            "{}\n[admin]\naddress = \"127.0.0.1:4\"\ntoken = \"t0ken\"\n",
            crate::runtime::TEST_CONFIG
        );
        let rt = Runtime::for_tests(&config);
        let admin = rt.snapshot().config.admin.clone().expect("has [admin]");
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
        // The whole model, with the generation it belongs to.
        assert_eq!(body["generation"], 2);
        let steps = &body["services"][0]["rollout"]["steps"];
        assert_eq!(steps, &json!([1, 5, 25, 50, 100]));
        assert_eq!(body["services"][0]["sticky"], Value::Null);
        assert_eq!(body["acme"], Value::Null);
    }
}
