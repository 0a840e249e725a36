//! HTTP clients for talking to the proxy (any host name resolves to 127.0.0.1, only the test CA is trusted) and checks on what they get back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::template::CERTS;

/// Resolves every host name to 127.0.0.1 (the port comes from the URL).
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async {
            let addrs: reqwest::dns::Addrs =
                Box::new(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0))));
            Ok(addrs)
        })
    }
}

/// The test CA as a reqwest root certificate.
pub fn test_ca() -> reqwest::Certificate {
    let pem = std::fs::read(format!("{CERTS}/test-ca.crt")).expect("read certs/test-ca.crt");
    reqwest::Certificate::from_pem(&pem).expect("parse certs/test-ca.crt")
}

/// A blocking client: any host name goes to 127.0.0.1, only the test CA is trusted, no proxy from
/// the environment, redirects are not followed, 10 s timeout.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(Loopback))
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(test_ca())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
}

/// HTTP/1.1 only (plain or TLS).
pub fn http1_client() -> reqwest::blocking::Client {
    client_builder().http1_only().build().expect("build client")
}

/// HTTP/2 without negotiation (h2c on plain listeners).
pub fn h2c_client() -> reqwest::blocking::Client {
    client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("build client")
}

/// HTTPS offering h2 and http/1.1 over ALPN.
pub fn https_client() -> reqwest::blocking::Client {
    client_builder().build().expect("build client")
}

/// A response body parsed as JSON, with the status and text in the panic message if it is not.
pub fn json_body(resp: reqwest::blocking::Response) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().expect("read body");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"))
}

/// The value of a response header as a string ("" when absent).
pub fn header(resp: &reqwest::blocking::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("header is not ASCII").to_string())
        .unwrap_or_default()
}

/// Whether `s` looks like a generated request id: 32 lowercase hex characters.
pub fn is_request_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Asserts that `body` is the proxy's own error JSON for `status`:
/// `{"error": "...", "status": N, "request_id": "..."}`.
pub fn assert_proxy_error(body: &serde_json::Value, status: u16) {
    assert_eq!(body["status"], status, "error body: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty(),
        "error body without an error text: {body}"
    );
    let id = body["request_id"].as_str().unwrap_or_default();
    assert!(
        is_request_id(id),
        "error body without a generated request_id: {body}"
    );
    assert!(
        body.get("backend").is_none(),
        "error came from a backend, not the proxy: {body}"
    );
}

/// Which backend answers one request through a proxy listener on 127.0.0.1:`http`.
pub fn backend_via(client: &reqwest::blocking::Client, http: u16, host: &str) -> String {
    let resp = client
        .get(format!("http://{host}:{http}/probe"))
        .send()
        .expect("request through the proxy");
    assert_eq!(resp.status(), 200, "request through the proxy failed");
    json_body(resp)["backend"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
