//! TLS to upstreams, against Debian's nginx as the HTTPS server: the right CA, a wrong one, the
//! system roots, `verify = false` (warned at every load), SNI and name checks, a client
//! certificate for an nginx that requires one, and health checks over TLS with their own Host.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// nginx with `certs/localhost.crt` (DNS:localhost, IP:127.0.0.1, from the test CA) on `tls`,
/// the same plus a required client certificate from the test CA on `mtls`, and on `named` a
/// server that answers only for Host `health.internal` (421 for any other Host), also on `also`.
fn nginx([tls, mtls, named, also]: [u16; 4]) -> Nginx {
    let servers = format!(
        r#"
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {{certs}}/localhost.crt;
        ssl_certificate_key {{certs}}/localhost.key;
        location / {{ return 200 "tls ok\n"; }}
    }}
    server {{
        listen 127.0.0.1:{mtls} ssl;
        ssl_certificate {{certs}}/localhost.crt;
        ssl_certificate_key {{certs}}/localhost.key;
        ssl_client_certificate {{certs}}/test-ca.crt;
        ssl_verify_client on;
        location / {{ return 200 "mtls ok: $ssl_client_s_dn\n"; }}
    }}
    server {{
        listen 127.0.0.1:{named} ssl default_server;
        listen 127.0.0.1:{also} ssl default_server;
        ssl_certificate {{certs}}/localhost.crt;
        ssl_certificate_key {{certs}}/localhost.key;
        location / {{ return 421 "wrong host\n"; }}
    }}
    server {{
        listen 127.0.0.1:{named} ssl;
        listen 127.0.0.1:{also} ssl;
        server_name health.internal;
        ssl_certificate {{certs}}/localhost.crt;
        ssl_certificate_key {{certs}}/localhost.key;
        location / {{ return 200 "named ok\n"; }}
    }}
"#
    );
    Nginx::start(&servers, &[tls, mtls, named, also])
}

/// A service `name` (routed from host `name.test`) with one pool of one server and `keys` on
/// the pool.
fn service(w: World, name: &str, server: &str, keys: &str) -> World {
    w.route(&format!("{name}.test"), name).toml(&format!(
        "[services.{name}.pools.main]\nservers = [\"{server}\"]\n{keys}\n"
    ))
}

const WARNING: &str = "does not verify its servers' certificates (verify = false)";

#[test]
fn tls_upstreams_verify_against_the_configured_roots() {
    let ports = [port(), port(), port(), port()];
    let nginx = nginx(ports);
    let a = format!("127.0.0.1:{}", ports[0]);
    let ca = "ca = \"{certs}/test-ca.crt\"";
    let mut w = World::new();
    w = service(w, "right", &format!("https://{a}"), ca);
    w = service(w, "wrong", &a, "tls = true\nca = \"{certs}/other-ca.crt\"");
    w = service(w, "system", &a, "tls = true");
    w = service(w, "noverify", &a, "tls = true\nverify = false");
    w = service(
        w,
        "sni",
        &a,
        &format!("tls = true\n{ca}\nsni = \"localhost\""),
    );
    w = service(
        w,
        "badsni",
        &a,
        &format!("tls = true\n{ca}\nsni = \"example.com\""),
    );
    let w = w.start(BIN);
    let client = http1_client();
    let get = |host: &str| {
        let resp = client
            .get(format!("http://{host}:{}/x", w.http()))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap())
    };

    // A CA that did not issue the server's certificate: 502, and a log line that says why.
    let (status, body) = get("wrong.test");
    assert_eq!(status, 502, "{body}");
    assert!(
        w.proxy
            .wait_for_log("UnknownIssuer", Duration::from_secs(5)),
        "no log line names the certificate problem:\n{}",
        w.proxy.stderr()
    );
    assert!(
        w.proxy.stderr().contains(&format!("upstream {a}")),
        "{}",
        w.proxy.stderr()
    );

    // The right CA (`https://` before the address turns TLS on), verified for the address.
    assert_eq!(get("right.test"), (200, "tls ok\n".to_string()));
    // The system roots do not hold the test CA.
    assert_eq!(get("system.test").0, 502);
    // An SNI the certificate covers, and one it does not.
    assert_eq!(get("sni.test"), (200, "tls ok\n".to_string()));
    assert_eq!(get("badsni.test").0, 502);
    assert!(
        nginx.logged(|l| l.contains("sni=localhost")),
        "nginx saw no SNI localhost: {:?}",
        nginx.access_log()
    );

    // verify = false: any certificate, and a warning at every load.
    assert_eq!(get("noverify.test"), (200, "tls ok\n".to_string()));
    assert_eq!(w.proxy.stderr().matches(WARNING).count(), 1);
    w.proxy.sighup();
    assert!(
        wait_until(Duration::from_secs(10), || w
            .proxy
            .stderr()
            .matches(WARNING)
            .count()
            == 2),
        "no warning at the reload:\n{}",
        w.proxy.stderr()
    );
}

#[test]
fn client_certificates_reach_an_nginx_that_requires_one() {
    let ports = [port(), port(), port(), port()];
    let nginx = nginx(ports);
    let m = format!("https://127.0.0.1:{}", ports[1]);
    let ca = "ca = \"{certs}/test-ca.crt\"";
    let mut w = World::new();
    w = service(w, "nocert", &m, ca);
    w = service(
        w,
        "mtls",
        &m,
        &format!(
            "{ca}\nclient_cert = \"{{certs}}/client.crt\"\nclient_key = \"{{certs}}/client.key\""
        ),
    );
    let w = w.start(BIN);
    let client = http1_client();
    let get = |host: &str| {
        let resp = client
            .get(format!("http://{host}:{}/", w.http()))
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    let (status, body) = get("nocert.test");
    assert_eq!(
        status, 400,
        "nginx refuses a client without a certificate: {body}"
    );
    assert!(
        body.contains("No required SSL certificate was sent"),
        "{body}"
    );
    let (status, body) = get("mtls.test");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("CN=client,O=Switchyard Test"), "{body}");
    assert!(
        nginx.logged(|l| l.contains("client=CN=client,O=Switchyard Test")),
        "{:?}",
        nginx.access_log()
    );
}

#[test]
fn health_checks_speak_tls_and_send_the_configured_host() {
    let ports = [port(), port(), port(), port()];
    let nginx = nginx(ports);
    // Two addresses of the one nginx server: health verdicts are kept per address.
    let n = format!("https://127.0.0.1:{}", ports[2]);
    let n2 = format!("https://127.0.0.1:{}", ports[3]);
    let check = |host: &str| {
        format!(
            "ca = \"{{certs}}/test-ca.crt\"\n[services.{{svc}}.pools.main.health]\npath = \"/health\"\n\
             interval = \"100ms\"\ntimeout = \"1s\"\n{host}"
        )
    };
    let mut w = World::new();
    w = service(
        w,
        "named",
        &n,
        &check("host = \"health.internal\"").replace("{svc}", "named"),
    );
    w = service(w, "unnamed", &n2, &check("").replace("{svc}", "unnamed"));
    let w = w.start(BIN);
    // The check without a host sends the server's own (127.0.0.1:port), which this nginx
    // refuses: that server goes down.
    assert!(
        w.proxy.wait_for_log(
            "of service \"unnamed\" is unhealthy: status 421",
            Duration::from_secs(10)
        ),
        "{}",
        w.proxy.stderr()
    );
    assert!(
        nginx.logged(
            |l| l.starts_with("host=127.0.0.1 sni=- ") && l.contains("GET /health HTTP/1.1")
        ),
        "{:?}",
        nginx.access_log()
    );
    let client = http1_client();
    let status = |host: &str| {
        client
            .get(format!("http://{host}:{}/", w.http()))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status("unnamed.test"), 503);
    // With `host`, the probes reach the named server over TLS: healthy, and traffic flows.
    assert!(
        nginx.logged(|l| l.starts_with("host=health.internal ") && l.ends_with(" 200")),
        "{:?}",
        nginx.access_log()
    );
    assert!(
        !w.proxy
            .stderr()
            .contains("of service \"named\" is unhealthy"),
        "{}",
        w.proxy.stderr()
    );
    assert_eq!(status("named.test"), 421, "requests keep their own Host");
}

#[test]
fn a_named_server_is_called_by_its_name() {
    let ports = [port(), port(), port(), port()];
    let nginx = nginx(ports);
    // `localhost` resolves (hosts file) to 127.0.0.1, where nginx listens (and perhaps also to
    // ::1, where nothing does: its check takes that address out).
    let w = service(
        World::new(),
        "byname",
        &format!("https://localhost:{}", ports[0]),
        "ca = \"{certs}/test-ca.crt\"\n[services.byname.health]\npath = \"/health\"\n\
         interval = \"100ms\"\ntimeout = \"1s\"",
    )
    .start(BIN);
    // The probes: SNI and Host from the name (the certificate is verified for `localhost`).
    assert!(
        nginx.logged(|l| l == "host=localhost sni=localhost client=- \"GET /health HTTP/1.1\" 200"),
        "{:?}",
        nginx.access_log()
    );
    let resp = http1_client()
        .get(format!("http://byname.test:{}/", w.http()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "tls ok\n");
    assert!(
        nginx.logged(|l| l == "host=byname.test sni=localhost client=- \"GET / HTTP/1.1\" 200"),
        "{:?}",
        nginx.access_log()
    );
}
