//! The admin API client of `ctl`: one blocking reqwest client (rustls on ring), typed answers, the API's errors as `CtlError`s.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::CtlError;
use crate::api::ErrorBody;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a reload of a large config.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted from the admin API.
const MAX_RESPONSE: u64 = 16 << 20;

/// Where the admin API is: `http://` or `https://`, host, port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    /// Scheme, host and port, without a trailing slash.
    pub origin: String,
    /// The path prefix, `""` or `/something` (no trailing slash).
    pub prefix: String,
    pub https: bool,
}

impl AdminUrl {
    /// `http(s)://host[:port][/prefix]`, or `host:port` alone (plain HTTP).
    pub fn parse(text: &str) -> Result<AdminUrl, CtlError> {
        let bad = |reason: &str| CtlError::Url {
            url: text.into(),
            reason: reason.into(),
        };
        if text.contains(['?', '#']) || text.chars().any(char::is_whitespace) {
            return Err(bad("the URL may only have a path prefix"));
        }
        let full = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let url = Url::parse(&full).map_err(|e| bad(&e.to_string()))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("only http:// and https:// URLs are supported")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("user info is not supported; use --token"));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(bad("no host"));
        };
        let origin = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(AdminUrl {
            origin,
            prefix: url.path().trim_end_matches('/').to_string(),
            https,
        })
    }

    /// The full URL of an API path (which starts with `/`).
    fn join(&self, path: &str) -> String {
        format!("{}{}{path}", self.origin, self.prefix)
    }
}

/// A blocking client of the admin API.
pub struct Client {
    http: Http,
    url: AdminUrl,
    /// The URL as given, for messages.
    display: String,
    token: Option<String>,
}

/// A successful answer: the typed view and the body as sent (for --json).
pub struct Reply<T> {
    pub view: T,
    pub body: Vec<u8>,
}

/// How ctl reaches the admin API: its URL, token, extra roots and client certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub url: &'a str,
    pub token: Option<&'a str>,
    /// A PEM file of extra roots for https:// URLs (`--cacert`).
    pub ca: Option<&'a Path>,
    /// The client certificate and its key (`--cert`, `--key`), for an admin API with mTLS.
    pub identity: Option<(&'a Path, &'a Path)>,
}

impl Client {
    /// A client of the admin API at `target.url`.
    pub fn new(target: Target<'_>) -> Result<Client, CtlError> {
        let Target {
            url,
            token,
            ca,
            identity,
        } = target;
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if token.is_some_and(|t| t.bytes().any(|b| b.is_ascii_control())) {
            return Err(CtlError::Token);
        }
        let admin = AdminUrl::parse(url)?;
        let mut builder = Http::builder()
            .use_rustls_tls()
            // The admin API is addressed directly; an HTTP(S)_PROXY meant for the web is not for it.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(IO_TIMEOUT)
            .user_agent(concat!("switchyard-ctl/", env!("CARGO_PKG_VERSION")))
            // The system's roots are read only when they can matter.
            .tls_built_in_native_certs(admin.https);
        if let Some(path) = ca {
            for cert in read_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = identity {
            builder = builder.identity(read_identity(cert, key)?);
        }
        let http = builder.build().map_err(|e| CtlError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&e),
        })?;
        Ok(Client {
            http,
            url: admin,
            display: url.to_string(),
            token: token.map(str::to_string),
        })
    }

    /// Sends a request and returns the typed body of a 2xx answer; anything else is an error with
    /// the API's own message.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Reply<T>, CtlError> {
        let (status, raw) = self.send(method, path, body, if_match)?;
        if (200..300).contains(&status) {
            let view = decode(&raw).map_err(|reason| self.protocol(&reason))?;
            return Ok(Reply { view, body: raw });
        }
        Err(self.api_error(status, &raw))
    }

    /// An error answer: the API's message and config errors; an answer that is not the API's
    /// JSON error (a proxy's 502 page) means the API was not reached.
    fn api_error(&self, status: u16, raw: &[u8]) -> CtlError {
        api_error(status, raw).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(raw);
            self.protocol(&format!("HTTP {status}: {}", text.trim()))
        })
    }

    fn protocol(&self, reason: &str) -> CtlError {
        CtlError::Protocol {
            url: self.display.clone(),
            reason: reason.into(),
        }
    }

    fn unreachable(&self, e: &dyn std::error::Error) -> CtlError {
        CtlError::Unreachable {
            url: self.display.clone(),
            reason: root_cause(e),
        }
    }

    /// One exchange: the status and the whole body (at most [`MAX_RESPONSE`]).
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<(u16, Vec<u8>), CtlError> {
        let is_get = method == Method::GET;
        let mut request: RequestBuilder = self
            .http
            .request(method, self.url.join(path))
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(generation) = if_match {
            request = request.header(IF_MATCH, format!("\"{generation}\""));
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        } else if !is_get {
            // An explicit empty body: `Content-Length: 0` on every POST, PUT and DELETE.
            request = request.body(Vec::new());
        }
        let response = request.send().map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let mut raw = Vec::new();
        response
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut raw)
            .map_err(|e| self.unreachable(&e))?;
        if raw.len() as u64 > MAX_RESPONSE {
            return Err(self.protocol("the response is larger than 16 MiB"));
        }
        Ok((status, raw))
    }
}

/// A 2xx body as the view `T`, or why it is not one.
pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|_| "the response body is not JSON".to_string())?;
    serde_json::from_value(value).map_err(|e| format!("the response is not what ctl expects: {e}"))
}

/// The API's own error answer (its JSON error body), if `raw` is one.
fn api_error(status: u16, raw: &[u8]) -> Option<CtlError> {
    let err = serde_json::from_slice::<ErrorBody>(raw).ok()?;
    let mut message = err.error;
    if status == 401 {
        message.push_str(" (set --token or SWITCHYARD_TOKEN)");
    }
    Some(CtlError::Api {
        status,
        message,
        errors: err.errors.unwrap_or_default(),
    })
}

/// The client certificate of `--cert` and `--key`, checked to belong together; files that are
/// not a matching pair are a usage error.
fn read_identity(cert: &Path, key: &Path) -> Result<reqwest::Identity, CtlError> {
    let bad = |reason: String| CtlError::Identity { reason };
    switchyard_core::config::certs::load_certified_key(cert, key)
        .map_err(|e| bad(e.to_string()))?;
    let mut pem = std::fs::read(cert).map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(key).map_err(|e| bad(format!("{}: {e}", key.display())))?);
    reqwest::Identity::from_pem(&pem).map_err(|e| bad(root_cause(&e)))
}

/// The CA certificates of a PEM file (`--ca`); a file without one is a usage error.
fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, CtlError> {
    let bad = |reason: String| CtlError::Ca {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(root_cause(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_string()));
    }
    Ok(certs)
}

/// The innermost error of a chain: `Connection refused (os error 111)` rather than reqwest's
/// `error sending request for url (...)`.
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RolloutView, ServiceView};

    #[test]
    fn parses_admin_urls() {
        let url = |s: &str| AdminUrl::parse(s).expect(s);
        assert_eq!(
            url("http://127.0.0.1:9900"),
            AdminUrl {
                origin: "http://127.0.0.1:9900".into(),
                prefix: String::new(),
                https: false,
            }
        );
        let prefixed = url("http://admin.internal/switchyard/");
        assert_eq!(prefixed.prefix, "/switchyard");
        assert_eq!(
            prefixed.join("/v1/reload"),
            "http://admin.internal/switchyard/v1/reload"
        );
        assert_eq!(url("http://admin.internal").origin, "http://admin.internal");
        assert_eq!(url("localhost:9901").origin, "http://localhost:9901");
        assert_eq!(url("http://[::1]:9900").origin, "http://[::1]:9900");
        let https = url("https://admin.example.com/sy");
        assert!(https.https);
        assert_eq!(
            https.join("/v1/services"),
            "https://admin.example.com/sy/v1/services"
        );
        for bad in [
            "ftp://x",
            "http://:9900",
            "http://x:port",
            "http://u@x:1",
            "http://x:1/a?b",
            "http://x:1/a b",
        ] {
            assert!(AdminUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_decode_into_views_or_say_why_not() {
        assert_eq!(
            decode::<ServiceView>(b"not json").expect_err("not JSON"),
            "the response body is not JSON"
        );
        // Missing fields are a protocol error, never a panic.
        let err = decode::<RolloutView>(br#"{"id": 1}"#).expect_err("sparse");
        assert!(
            err.starts_with("the response is not what ctl expects"),
            "{err}"
        );
    }

    #[test]
    fn error_answers_carry_the_api_message() {
        let e = api_error(
            400,
            br#"{"error": "config rejected", "errors": ["a.toml:1:2: bad"], "status": 400}"#,
        )
        .expect("the API's error");
        match e {
            CtlError::Api {
                status,
                message,
                errors,
            } => {
                assert_eq!((status, message.as_str()), (400, "config rejected"));
                assert_eq!(errors, ["a.toml:1:2: bad"]);
            }
            other => panic!("{other:?}"),
        }
        let e = api_error(401, br#"{"error": "missing bearer token", "status": 401}"#)
            .expect("the API's error");
        assert!(
            e.to_string().ends_with("(set --token or SWITCHYARD_TOKEN)"),
            "{e}"
        );
        // A proxy's page is not the API saying no.
        assert!(api_error(502, b"<html>bad gateway</html>").is_none());
    }
}
