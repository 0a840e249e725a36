//! TLS termination: certificate choice by SNI, the fallback certificate, protocol versions, and HTTP/2 over ALPN.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion};
use switchyard::config::transport::NoVerification;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// A TLS listener (h2 offered or not) with two certificates, other.test's the fallback, in front
/// of backend "blue"; one route with a body limit.
fn start(h2: bool) -> Running {
    World::bare()
        .https()
        .listener_option("https", "h2", h2)
        .certificate("example.com")
        .fallback_certificate("other.test")
        .catch_all_blue()
        .route_with(Route::new("limits.example.com", "api").set("max_body_size", "1KB"))
        .start(BIN)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The leaf (first) certificate of a PEM file in certs/.
fn leaf(file: &str) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(format!("{CERTS}/{file}"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A rustls client limited to `versions`; verifying against the test CA, or accepting anything.
fn client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    verify: bool,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(leaf("test-ca.crt")).unwrap();
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            // Any server certificate (signatures are still checked), so a test can look at
            // what it got.
            .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider())))
            .with_no_client_auth()
    };
    Arc::new(config)
}

/// A completed TLS handshake with the proxy.
struct Tls {
    conn: ClientConnection,
    sock: TcpStream,
}

fn handshake(
    port: u16,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> Result<Tls, String> {
    let mut sock = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(Tls { conn, sock })
}

impl Tls {
    fn leaf(&self) -> CertificateDer<'static> {
        self.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// Sends a GET with `Connection: close` and returns the whole response as text.
    fn get(mut self, host: &str, path: &str) -> String {
        let mut stream = rustls::Stream::new(&mut self.conn, &mut self.sock);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        stream.flush().unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // A peer that closes without close_notify ends the stream like this.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("TLS read: {e}"),
            }
        }
        String::from_utf8(out).unwrap()
    }
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

#[test]
fn certificate_chosen_by_sni() {
    let w = start(true);
    let https = w.https();

    // Each certificate covers only its own names, so a verified connection proves the right choice.
    let client = https_client();
    for host in [
        "example.com",
        "www.example.com",
        "other.test",
        "a.other.test",
    ] {
        let resp = client
            .get(format!("https://{host}:{https}/sni"))
            .send()
            .unwrap_or_else(|e| panic!("https://{host}: {e:?}"));
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(json_body(resp)["backend"], "blue");
    }

    // And the served leaf is byte-for-byte the configured one.
    let tls13 = client_config(&[&rustls::version::TLS13], true);
    let example = leaf("example.com.crt");
    let other = leaf("other.test.crt");
    assert_ne!(example, other);
    assert!(
        handshake(https, dns("www.example.com"), tls13.clone())
            .unwrap()
            .leaf()
            == example
    );
    assert!(
        handshake(https, dns("a.other.test"), tls13.clone())
            .unwrap()
            .leaf()
            == other
    );
}

#[test]
fn unknown_sni_gets_fallback_certificate() {
    let w = start(true);
    let https = w.https();
    let any = client_config(&[&rustls::version::TLS13, &rustls::version::TLS12], false);
    let fallback = leaf("other.test.crt");

    let tls = handshake(https, dns("unknown.invalid"), any.clone()).unwrap();
    assert!(
        tls.leaf() == fallback,
        "unknown SNI must get the certificate marked fallback"
    );
    let response = tls.get("unknown.invalid", "/fallback");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"backend\":\"blue\""), "{response}");

    // No SNI at all (connecting by IP address) gets the fallback too.
    let tls = handshake(
        https,
        ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        any,
    )
    .unwrap();
    assert!(
        tls.leaf() == fallback,
        "a handshake without SNI must get the fallback certificate"
    );

    // A client that verifies names rejects it for the unknown name.
    let err = https_client()
        .get(format!("https://unknown.invalid:{https}/"))
        .send();
    assert!(
        err.is_err(),
        "the fallback certificate must not verify for unknown.invalid"
    );
}

#[test]
fn without_a_fallback_unknown_sni_gets_a_generated_certificate() {
    let w = World::bare()
        .https()
        .certificate("example.com")
        .catch_all_blue()
        .start(BIN);
    let https = w.https();
    let any = client_config(&[&rustls::version::TLS13], false);
    let served = handshake(https, dns("unknown.invalid"), any)
        .unwrap()
        .leaf();
    assert!(served != leaf("example.com.crt") && served != leaf("other.test.crt"));
    let verified = client_config(&[&rustls::version::TLS13], true);
    assert!(
        handshake(https, dns("www.example.com"), verified)
            .unwrap()
            .leaf()
            == leaf("example.com.crt"),
        "a known name still gets its certificate"
    );
}

#[test]
fn tls12_and_tls13_are_accepted() {
    let w = start(true);
    let https = w.https();
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let tls = handshake(
            https,
            dns("www.example.com"),
            client_config(&[version], true),
        )
        .unwrap_or_else(|e| panic!("{expected:?} handshake failed: {e}"));
        assert_eq!(tls.conn.protocol_version(), Some(expected));
        let response = tls.get("www.example.com", "/version");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{expected:?}: {response}"
        );
        assert!(
            response.contains("\"path\":\"/version\""),
            "{expected:?}: {response}"
        );
    }
}

#[test]
fn h2_negotiated_over_alpn() {
    let w = start(true);
    let https = w.https();
    let resp = https_client()
        .post(format!("https://h2.example.com:{https}/hello?x=1"))
        .body("four")
        .send()
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-backend"), "blue");
    assert!(is_request_id(&header(&resp, "x-request-id")));
    let body = json_body(resp);
    assert_eq!(body["backend"], "blue");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/hello?x=1");
    assert_eq!(body["body_bytes"], 4);
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        body["headers"]["host"],
        format!("h2.example.com:{https}"),
        "Host from :authority"
    );
}

#[test]
fn h2_can_be_turned_off() {
    let w = start(false);
    let https = w.https();
    let resp = https_client()
        .get(format!("https://h2.example.com:{https}/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_11,
        "h2 = false must not offer h2 over ALPN"
    );
}

#[test]
fn h2_follows_a_reload_for_new_connections() {
    let mut w = start(false);
    let https = w.https();
    let version = || {
        // A new client: a new connection and a new handshake.
        let resp = https_client()
            .get(format!("https://h2.example.com:{https}/"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.version()
    };
    assert_eq!(version(), reqwest::Version::HTTP_11);
    let config = w.config_with(|world| world.listener_option("https", "h2", true));
    w.proxy.reload_with(&config);
    assert!(w
        .proxy
        .wait_for_log("(generation 2)", Duration::from_secs(10)));
    assert_eq!(version(), reqwest::Version::HTTP_2);
}

#[test]
fn h2_body_over_limit_is_413() {
    let w = start(true);
    let (https, blue) = (w.https(), w.backend("blue"));
    let client = https_client();
    let url = format!("https://limits.example.com:{https}/upload");

    let resp = client.post(&url).body(vec![b'a'; 1000]).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body(resp)["body_bytes"], 1000);

    // With a content-length.
    let resp = client.post(&url).body(vec![b'a'; 4096]).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 413);
    assert_proxy_error(&json_body(resp), 413);
    assert_eq!(blue.requests(), 1);

    // Streamed without a length: the limit is enforced on the DATA frames.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'b'; 4096]));
    let resp = client.post(&url).body(body).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 413);
}

#[test]
fn an_ip_address_sent_as_sni_is_not_logged_per_handshake() {
    // wrk and some health checkers send the IP they connect to as SNI (RFC 6066 forbids it);
    // rustls ignores it. Its warning would be one log line per handshake.
    let w = start(false);
    let ca = format!("{CERTS}/test-ca.crt");
    for _ in 0..3 {
        let hs = Handshake::run(w.https(), "127.0.0.1", &ca, &[], None);
        assert!(hs.cipher().is_some(), "{}", hs.out);
    }
    let stderr = w.proxy.stderr();
    assert!(!stderr.contains("Illegal SNI"), "{stderr}");
}
