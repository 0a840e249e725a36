//! Automatic TLS against a real ACME CA: Debian's pebble and pebble-challtestsrv, started here.
//!
//! Every test starts its own pebble (directory TLS certificate generated here, the issuing root
//! read from pebble's management API) and pebble-challtestsrv (the DNS pebble resolves with: any
//! name is 127.0.0.1; TXT records for DNS-01) on ports of its own (`testkit::port`), and stops
//! them by PID when it ends. pebble's validation authority dials the proxy's own listeners (`httpPort`, `tlsPort`).
//! Clients verify the served chain against pebble's root.
//!
//! pebble comes from Debian's `pebble` package (scripts/test.sh installs it). When missing, the
//! test fails with what to install; it never skips.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;

use testkit::pebble::{EAB_KEY, EAB_KID, NORMAL};
use testkit::*;

const BIN: Bin = testkit::bin!();

// ------------------------------------------------------------------------------------------------
// pebble and pebble-challtestsrv
// ------------------------------------------------------------------------------------------------

/// pebble and the pebble-challtestsrv it resolves with (any name is 127.0.0.1; TXT records for
/// DNS-01), both stopped on drop.
struct Ca {
    pebble: Pebble,
    dns: Dns,
}

impl Ca {
    /// Starts both; pebble validates by connecting to 127.0.0.1:`http_port` / `tls_port`.
    fn start(http_port: u16, tls_port: u16, options: CaOptions) -> Ca {
        let dns = Dns::start_with_default("127.0.0.1");
        let pebble = Pebble::start(dns.port(), http_port, tls_port, options);
        Ca { pebble, dns }
    }

    /// (Re)starts pebble on the same ports. A new pebble has a new root and forgets every
    /// account and order.
    fn start_pebble(&mut self, options: CaOptions) {
        self.pebble.restart(options);
    }

    fn stop_pebble(&mut self) {
        self.pebble.stop();
    }

    fn challtestsrv_url(&self) -> String {
        self.dns.management_url()
    }
}

impl std::ops::Deref for Ca {
    type Target = Pebble;

    fn deref(&self) -> &Pebble {
        &self.pebble
    }
}

// ------------------------------------------------------------------------------------------------
// The proxy
// ------------------------------------------------------------------------------------------------

struct Setup {
    ca: Ca,
    /// The described world: its backend lives as long as the setup.
    _world: World,
    http: u16,
    https: u16,
    admin: u16,
    config: String,
}

/// pebble plus a proxy config for one ACME certificate, every host routed to backend "blue".
fn setup(names: &[&str], challenge: &str, options: CaOptions) -> Setup {
    setup_with(names, challenge, options, |w| w.route("*", "api"))
}

/// [`setup`] with the routes (and anything else) from `routes`.
fn setup_with(
    names: &[&str],
    challenge: &str,
    options: CaOptions,
    routes: impl FnOnce(World) -> World,
) -> Setup {
    let world = World::new()
        .https()
        .admin()
        .backend("blue")
        .pool("api", "blue", 1, &["blue"]);
    let (http, https, admin) = (world.port("http"), world.port("https"), world.admin_port());
    let ca = Ca::start(http, https, options);
    let mut acme = format!(
        "[acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nemail = \"ops@switchyard.test\"\n\
         backoff_min = \"1s\"\nbackoff_max = \"4s\"\n",
        ca.directory(),
        ca.directory_ca().display()
    );
    if challenge == "dns-01" {
        // The documented example hook, pointed at pebble-challtestsrv by a small wrapper.
        let wrapper = ca.dir().join("dns-hook");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nDNS_HOOK_BACKEND=challtestsrv CHALLTESTSRV_URL={} exec {}/examples/dns-hook.sh \"$@\"\n",
                ca.challtestsrv_url(),
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        acme.push_str(&format!("dns_hook = \"{}\"\n", wrapper.display()));
    }
    if options.eab {
        acme.push_str(&format!(
            "eab = {{ kid = \"{EAB_KID}\", hmac_key = \"{EAB_KEY}\" }}\n"
        ));
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    acme.push_str(&format!(
        "\n[[acme.certificates]]\nnames = [{}]\nchallenge = \"{challenge}\"\n",
        quoted.join(", ")
    ));
    let world = routes(world.toml(&acme));
    Setup {
        ca,
        config: world.config(),
        _world: world,
        http,
        https,
        admin,
    }
}

/// One HTTPS request for `name` on a new connection, verified against `roots`: the leaf's
/// serial (hex), or why it failed.
fn fetch(port: u16, name: &str, roots: &RootCertStore) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("handshake or write: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            // pingora may close without close_notify once the response is complete.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&response);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "unexpected response: {:?}",
            text.lines().next().unwrap_or_default()
        ));
    }
    let leaf = conn.peer_certificates().ok_or("no certificate")?[0].clone();
    Ok(serial(&leaf))
}

fn serial(cert: &CertificateDer<'_>) -> String {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).unwrap();
    x509.raw_serial_as_string().replace(':', "")
}

/// Waits until every name is served a certificate that verifies against `roots`; returns the
/// serial of the first name's certificate.
fn wait_served(port: u16, names: &[&str], roots: &RootCertStore, timeout: Duration) -> String {
    let mut last = String::new();
    let ok = wait_until(timeout, || {
        names.iter().all(|n| match fetch(port, n, roots) {
            Ok(s) => {
                last = s;
                true
            }
            Err(e) => {
                last = e;
                false
            }
        })
    });
    assert!(
        ok,
        "{names:?} not served a valid certificate within {timeout:?}: {last}"
    );
    fetch(port, names[0], roots).unwrap()
}

fn certs(admin: &Admin) -> Vec<serde_json::Value> {
    let reply = admin.get("/v1/certs");
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["certificates"].as_array().unwrap().clone()
}

fn metrics(admin: &Admin) -> String {
    admin.get("/metrics").text
}

/// Obtains a first certificate for `names` through `challenge`: served to a verifying client,
/// shown as valid by the API and the metrics, stored with a 0600 key. Returns the time from
/// start to a served certificate.
fn first_certificate(names: &[&str], challenge: &str) -> Duration {
    let s = setup(names, challenge, NORMAL);
    let roots = s.ca.roots();
    let started = Instant::now();
    let proxy = Proxy::start(BIN, &s.config);
    wait_served(s.https, names, &roots, Duration::from_secs(30));
    let elapsed = started.elapsed();
    eprintln!("{challenge} {names:?}: first certificate served {elapsed:?} after start");

    let admin = Admin::new(s.admin, None);
    let list = certs(&admin);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "valid", "{list:?}");
    assert_eq!(list[0]["challenge"], challenge);
    assert!(
        list[0]["issuer"].as_str().unwrap().contains("Pebble"),
        "{list:?}"
    );
    let text = metrics(&admin);
    for name in names {
        let expiry = metric(
            &text,
            "switchyard_cert_expiry_timestamp_seconds",
            &[("name", name)],
        );
        assert!(
            expiry.is_some_and(|t| t > 0.0),
            "no expiry for {name}:\n{text}"
        );
        let next = metric(
            &text,
            "switchyard_cert_next_renewal_timestamp_seconds",
            &[("name", name)],
        );
        assert!(
            next.is_some_and(|n| n < expiry.unwrap()),
            "next renewal for {name}"
        );
        assert_eq!(
            metric(&text, "switchyard_cert_pending", &[("name", name)]),
            Some(0.0)
        );
    }
    assert_eq!(
        metric(
            &text,
            "switchyard_acme_orders_total",
            &[("challenge", challenge), ("result", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(s.ca.new_orders(), 1);
    // The waiting period was logged, and the files are where docs/acme.md says, key 0600.
    assert!(proxy.stderr().contains("wait(s) for a first certificate"));
    if challenge == "tls-alpn-01" {
        // Answered by the pre-TLS hook, once per name.
        let answered = proxy
            .stderr()
            .matches("answered a TLS-ALPN-01 challenge")
            .count();
        assert!(answered >= names.len(), "{}", proxy.stderr());
    }
    let id = names[0].replace('*', "_wildcard");
    let base = proxy.dir().join("state/acme/certs").join(&id);
    let current: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("current.json")).unwrap()).unwrap();
    let key = base
        .join(current["serial"].as_str().unwrap())
        .join("key.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    elapsed
}

// ------------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------------

#[test]
fn two_names_through_http01_within_the_target_time() {
    let elapsed = first_certificate(&["one.switchyard.test", "two.switchyard.test"], "http-01");
    // Target: 2 s with PEBBLE_VA_NOSLEEP; generous bound for a loaded test machine.
    assert!(
        elapsed < Duration::from_secs(10),
        "first certificate after {elapsed:?}"
    );
}

#[test]
fn two_names_through_tls_alpn01() {
    first_certificate(
        &["alpn1.switchyard.test", "alpn2.switchyard.test"],
        "tls-alpn-01",
    );
}

#[test]
fn two_names_through_dns01_with_the_example_hook() {
    first_certificate(&["dns1.switchyard.test", "dns2.switchyard.test"], "dns-01");
}

#[test]
fn a_wildcard_through_dns01() {
    let s = setup(
        &["*.wild.switchyard.test", "wild.switchyard.test"],
        "dns-01",
        NORMAL,
    );
    let roots = s.ca.roots();
    let _proxy = Proxy::start(BIN, &s.config);
    wait_served(
        s.https,
        &["anything.wild.switchyard.test", "wild.switchyard.test"],
        &roots,
        Duration::from_secs(30),
    );
    // One label only: a deeper name is not covered (the fallback answers, which does not verify).
    assert!(fetch(s.https, "a.b.wild.switchyard.test", &roots).is_err());
}

#[test]
fn http01_is_answered_before_redirects_and_routing() {
    // Every plain request is redirected to HTTPS and no route matches the ACME host, yet the
    // challenge is answered: the certificate is issued through HTTP-01.
    let s = setup_with(&["redirected.switchyard.test"], "http-01", NORMAL, |w| {
        w.route("only.this.host", "api")
            .listener_option("http", "redirect_https", true)
    });
    let roots = s.ca.roots();
    let _proxy = Proxy::start(BIN, &s.config);
    let admin = Admin::new(s.admin, None);
    let valid = wait_until(Duration::from_secs(30), || {
        certs(&admin)[0]["status"] == "valid"
    });
    assert!(valid, "{:?}", certs(&admin));
    // Without a route the proxy answers 404 over TLS, but the handshake verifies.
    let err = fetch(s.https, "redirected.switchyard.test", &roots).unwrap_err();
    assert!(err.contains("404"), "{err}");
}

#[test]
fn http01_is_answered_before_rate_limits() {
    // Every request to the name is limited to 1 a minute per client IP, and the test uses up
    // the allowance of 127.0.0.1 (the CA's address too) before the CA comes up.
    let mut s = setup_with(&["limited.switchyard.test"], "http-01", NORMAL, |w| {
        w.route_with(Route::new("*", "api").set("limits", vec!["tight"]))
            .toml("[limits.zones.tight]\nkey = \"client_ip\"\nrate = \"1r/m\"\nburst = 0\n")
    });
    s.ca.stop_pebble();
    let _proxy = Proxy::start(BIN, &s.config);
    let client = http1_client();
    let url = format!("http://limited.switchyard.test:{}/", s.http);
    let statuses: Vec<u16> = (0..3)
        .map(|_| client.get(&url).send().unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses[1..], [429, 429], "{statuses:?}");
    s.ca.start_pebble(NORMAL);
    let roots = s.ca.roots();
    let admin = Admin::new(s.admin, None);
    let valid = wait_until(Duration::from_secs(20), || {
        certs(&admin)[0]["status"] == "valid"
    });
    assert!(valid, "{:?}", certs(&admin));
    // Requests are still refused, over a handshake that verifies against the CA's root.
    assert_eq!(client.get(&url).send().unwrap().status(), 429);
    let err = fetch(s.https, "limited.switchyard.test", &roots).unwrap_err();
    assert!(err.contains("429"), "{err}");
}

#[test]
fn http01_is_answered_for_a_service_in_maintenance() {
    // The only service is in maintenance (put there before the CA comes up): its routes answer
    // 503, yet the challenge is answered and the certificate issued.
    let mut s = setup(&["down.switchyard.test"], "http-01", NORMAL);
    s.ca.stop_pebble();
    let _proxy = Proxy::start(BIN, &s.config);
    let admin = Admin::new(s.admin, None);
    let r = admin.send("PUT", "/v1/services/api/maintenance", Some("{}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    let url = format!("http://down.switchyard.test:{}/", s.http);
    let client = http1_client();
    assert_eq!(client.get(&url).send().unwrap().status(), 503);
    s.ca.start_pebble(NORMAL);
    let roots = s.ca.roots();
    let valid = wait_until(Duration::from_secs(20), || {
        certs(&admin)[0]["status"] == "valid"
    });
    assert!(valid, "{:?}", certs(&admin));
    // Requests are still refused, over a handshake that verifies against the CA's root.
    assert_eq!(client.get(&url).send().unwrap().status(), 503);
    let err = fetch(s.https, "down.switchyard.test", &roots).unwrap_err();
    assert!(err.contains("503"), "{err}");
}

#[test]
fn renewal_swaps_the_certificate_without_a_failed_request() {
    // pebble issues 10-second certificates: renewal is due every ~6.7 s.
    let s = setup(
        &["renew.switchyard.test"],
        "http-01",
        CaOptions {
            validity: Some(10),
            ..NORMAL
        },
    );
    let roots = s.ca.roots();
    let _proxy = Proxy::start(BIN, &s.config);
    let first = wait_served(
        s.https,
        &["renew.switchyard.test"],
        &roots,
        Duration::from_secs(30),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let serials = Arc::new(Mutex::new(BTreeSet::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, requests, failures, serials, roots) = (
                stop.clone(),
                requests.clone(),
                failures.clone(),
                serials.clone(),
                roots.clone(),
            );
            let port = s.https;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    requests.fetch_add(1, Ordering::Relaxed);
                    match fetch(port, "renew.switchyard.test", &roots) {
                        Ok(serial) => {
                            serials.lock().unwrap().insert(serial);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    // Long enough for at least two renewals.
    let admin = Admin::new(s.admin, None);
    let renewed_twice = wait_until(Duration::from_secs(40), || {
        serials.lock().unwrap().len() >= 3
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let serials = serials.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    let total = requests.load(Ordering::Relaxed);
    eprintln!(
        "renewal under load: {total} requests, {} failed, {} serials seen (first {first})",
        failures.len(),
        serials.len()
    );
    assert!(renewed_twice, "serials seen: {serials:?}");
    assert!(serials.contains(&first));
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let text = metrics(&admin);
    assert!(
        metric_sum(
            &text,
            "switchyard_acme_orders_total",
            &[("result", "success")]
        ) >= 3.0,
        "{text}"
    );
}

#[test]
fn ca_failures_back_off_while_the_old_certificate_serves() {
    let mut s = setup(&["backoff.switchyard.test"], "http-01", NORMAL);
    let old_roots = s.ca.roots();
    let proxy = Proxy::start(BIN, &s.config);
    let name = ["backoff.switchyard.test"];
    let first = wait_served(s.https, &name, &old_roots, Duration::from_secs(30));
    let admin = Admin::new(s.admin, None);
    let failures = |reason: &str| {
        metric(
            &metrics(&admin),
            "switchyard_acme_failures_total",
            &[("challenge", "http-01"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    let account_file = || {
        let dir = proxy.dir().join("state/acme/accounts");
        let entry = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        json
    };
    let account_before = account_file();

    // 1. pebble gone: forced renewal fails, retries back off (1 s, 2 s, 4 s, 4 s...).
    s.ca.stop_pebble();
    let reply = admin.send("POST", "/v1/certs/backoff.switchyard.test/renew", None, &[]);
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json["certificate"], "backoff.switchyard.test");
    assert!(wait_until(Duration::from_secs(10), || failures(
        "ca_unreachable"
    ) >= 1.0));
    let watch_start = Instant::now();
    while watch_start.elapsed() < Duration::from_secs(7) {
        assert_eq!(fetch(s.https, name[0], &old_roots).unwrap(), first);
        std::thread::sleep(Duration::from_millis(250));
    }
    let down = failures("ca_unreachable");
    // Retrying without backoff would make hundreds of attempts in 7 s; with it, 1 + 2 + 4 s.
    assert!((2.0..=6.0).contains(&down), "{down} failures in 7 s");
    // Read between two retries: while one is under way (and until its failure is saved) the
    // certificate shows "renewing".
    let mut status = serde_json::Value::Null;
    let failing = wait_until(Duration::from_secs(10), || {
        status = certs(&admin)[0].clone();
        status["status"] == "failing"
    });
    assert!(failing, "{status}");
    assert!(status["last_error"].as_str().is_some(), "{status}");
    let admin_url = format!("http://127.0.0.1:{}", s.admin);
    let mut ctl = None;
    let failing = wait_until(Duration::from_secs(10), || {
        let table = BIN.ctl(&[], &["--admin", &admin_url, "certs"]);
        let shown = table.code == 0 && table.stdout.contains("failing");
        ctl = Some(table);
        shown
    });
    let ctl = ctl.expect("ctl ran");
    assert!(failing, "{ctl}");
    let table = &ctl.stdout;
    assert!(table.contains("backoff.switchyard.test"), "{table}");

    // 2. pebble back, refusing every nonce: orders fail with bad_nonce; the old one serves.
    s.ca.start_pebble(CaOptions {
        nonce_reject: 100,
        ..NORMAL
    });
    assert!(
        wait_until(Duration::from_secs(15), || failures("bad_nonce") >= 1.0),
        "{}",
        metrics(&admin)
    );
    assert_eq!(fetch(s.https, name[0], &old_roots).unwrap(), first);

    // 3. A healthy pebble (a new one: it forgot our account): the next retry registers the
    //    same key again and obtains a certificate under the new root.
    s.ca.stop_pebble();
    s.ca.start_pebble(NORMAL);
    let new_roots = s.ca.roots();
    let renewed = wait_served(s.https, &name, &new_roots, Duration::from_secs(20));
    assert_ne!(renewed, first);
    let account_after = account_file();
    assert_eq!(
        account_before["key_pkcs8"], account_after["key_pkcs8"],
        "the account key was kept"
    );
    assert_eq!(certs(&admin)[0]["status"], "valid");
}

#[test]
fn a_name_is_pending_on_a_self_signed_certificate_until_the_ca_answers() {
    let mut s = setup(&["pending.switchyard.test"], "http-01", NORMAL);
    s.ca.stop_pebble();
    let proxy = Proxy::start(BIN, &s.config);
    let admin = Admin::new(s.admin, None);
    // Read between two orders: the retry (after 1 s) shows "renewing" while it runs, and a read
    // after the one that saw the error can meet it on a busy machine.
    let mut seen = None;
    let failed = wait_until(Duration::from_secs(10), || {
        let status = certs(&admin)[0].clone();
        let between = status["last_error"].is_string() && status["status"] != "renewing";
        seen = Some(status);
        between
    });
    assert!(failed, "{seen:?}");
    let status = seen.expect("read");
    assert_eq!(status["status"], "pending", "{status}");
    assert!(status["not_after"].is_null(), "{status}");
    let text = metrics(&admin);
    assert_eq!(
        metric(
            &text,
            "switchyard_cert_pending",
            &[("name", "pending.switchyard.test")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(proxy
        .stderr()
        .contains("pending.switchyard.test wait(s) for a first certificate"));
    // The CA comes up: the next retry (backoff 1 s to 4 s) creates the account and the certificate.
    s.ca.start_pebble(NORMAL);
    let roots = s.ca.roots();
    wait_served(
        s.https,
        &["pending.switchyard.test"],
        &roots,
        Duration::from_secs(20),
    );
    assert_eq!(certs(&admin)[0]["status"], "valid");
    assert_eq!(
        metric(
            &metrics(&admin),
            "switchyard_cert_pending",
            &[("name", "pending.switchyard.test")]
        ),
        Some(0.0)
    );
}

#[test]
fn a_restart_keeps_the_backoff_of_failed_orders() {
    let mut s = setup_with(&["crashloop.switchyard.test"], "http-01", NORMAL, |w| {
        w.route("*", "api")
            .toml("[acme]\nbackoff_min = \"30s\"\nbackoff_max = \"60s\"")
    });
    s.ca.stop_pebble();
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::new(s.admin, None);
    let retry = dir
        .path()
        .join("state/acme/certs/crashloop.switchyard.test/retry.json");
    {
        let _proxy = Proxy::start_in(BIN, dir.path(), &s.config);
        let failed = wait_until(Duration::from_secs(10), || {
            certs(&admin)[0]["failures"] == 1
        });
        assert!(failed, "{:?}", certs(&admin));
        // A status that shows the failure is on disk already: killed right now, nothing is lost.
        assert!(retry.exists(), "{} missing", retry.display());
    }
    // Restarted (as a crash loop would): the failure is remembered, no order is placed before
    // the backoff ends.
    let proxy = Proxy::start_in(BIN, dir.path(), &s.config);
    let status = certs(&admin)[0].clone();
    assert_eq!(status["failures"], 1, "{status}");
    assert!(status["last_error"].is_string(), "{status}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let next = status["next_attempt_unix"].as_u64().unwrap();
    assert!(next > now + 10, "next attempt {next}, now {now}");
    assert!(
        proxy.stderr().contains("failed order(s) in a row"),
        "{}",
        proxy.stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        metric_sum(&metrics(&admin), "switchyard_acme_orders_total", &[]),
        0.0
    );
    // An operator may still force an order; success clears the saved backoff.
    s.ca.start_pebble(NORMAL);
    let reply = admin.send(
        "POST",
        "/v1/certs/crashloop.switchyard.test/renew",
        None,
        &[],
    );
    assert_eq!(reply.status, 202, "{}", reply.text);
    let roots = s.ca.roots();
    wait_served(
        s.https,
        &["crashloop.switchyard.test"],
        &roots,
        Duration::from_secs(20),
    );
    assert!(wait_until(Duration::from_secs(5), || !retry.exists()));
}

#[test]
fn external_account_binding() {
    let s = setup(
        &["eab.switchyard.test"],
        "http-01",
        CaOptions {
            eab: true,
            ..NORMAL
        },
    );
    let roots = s.ca.roots();
    let _proxy = Proxy::start(BIN, &s.config);
    // pebble refuses accounts without a valid binding: a certificate proves it was sent.
    wait_served(
        s.https,
        &["eab.switchyard.test"],
        &roots,
        Duration::from_secs(30),
    );
}

#[test]
fn reload_adds_and_removes_acme_certificates() {
    let s = setup(&["first.switchyard.test"], "http-01", NORMAL);
    let roots = s.ca.roots();
    let mut proxy = Proxy::start(BIN, &s.config);
    wait_served(
        s.https,
        &["first.switchyard.test"],
        &roots,
        Duration::from_secs(30),
    );
    let second = s.config.replace(
        "names = [\"first.switchyard.test\"]",
        "names = [\"second.switchyard.test\"]",
    );
    assert_ne!(second, s.config);
    proxy.reload_with(&second);
    wait_served(
        s.https,
        &["second.switchyard.test"],
        &roots,
        Duration::from_secs(30),
    );
    // The removed certificate is no longer served (the fallback does not verify).
    assert!(fetch(s.https, "first.switchyard.test", &roots).is_err());
    let admin = Admin::new(s.admin, None);
    let list = certs(&admin);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], "second.switchyard.test");
    let text = metrics(&admin);
    assert!(
        metric(
            &text,
            "switchyard_cert_expiry_timestamp_seconds",
            &[("name", "first.switchyard.test")]
        )
        .is_none(),
        "{text}"
    );
}

#[test]
fn restarts_place_no_new_order() {
    let s = setup(&["restart.switchyard.test"], "tls-alpn-01", NORMAL);
    let roots = s.ca.roots();
    let dir = tempfile::tempdir().unwrap();
    let (first, first_log) = {
        let proxy = Proxy::start_in(BIN, dir.path(), &s.config);
        let serial = wait_served(
            s.https,
            &["restart.switchyard.test"],
            &roots,
            Duration::from_secs(30),
        );
        (serial, proxy.stderr())
    };
    // Normally 1; a first order that failed and was retried would show here. Rounds alternate a
    // crash (SIGKILL) and a clean stop (SIGTERM).
    let orders = s.ca.new_orders();
    if orders != 1 {
        eprintln!("{orders} orders for the first certificate:\n{first_log}");
    }
    for round in 0..10 {
        let proxy = Proxy::start_in(BIN, dir.path(), &s.config);
        // Served from disk as soon as the listeners accept.
        assert_eq!(
            fetch(s.https, "restart.switchyard.test", &roots).unwrap(),
            first,
            "restart {round}"
        );
        let admin = Admin::new(s.admin, None);
        assert_eq!(certs(&admin)[0]["status"], "valid");
        let text = metrics(&admin);
        assert_eq!(
            metric_sum(&text, "switchyard_acme_orders_total", &[]),
            0.0,
            "restart {round}: {text}"
        );
        assert!(
            proxy
                .stderr()
                .contains("loaded certificate for restart.switchyard.test"),
            "{}",
            proxy.stderr()
        );
        // The loaded certificate's renewal window is asked for (ARI); pebble has none, which
        // leaves the schedule alone.
        assert!(
            proxy.wait_for_log(
                "offers no renewal information (ARI)",
                Duration::from_secs(10)
            ),
            "{}",
            proxy.stderr()
        );
        // Every other round ends in a crash (SIGKILL) rather than a clean stop.
        if round % 2 == 0 {
            proxy.signal("KILL");
        }
    }
    assert_eq!(
        s.ca.new_orders(),
        orders,
        "pebble saw new orders across 10 restarts"
    );
    eprintln!("10 restarts: 0 new orders");
}

#[test]
fn renew_endpoint_and_ctl_for_unknown_names() {
    let s = setup(&["known.switchyard.test"], "http-01", NORMAL);
    let _proxy = Proxy::start(BIN, &s.config);
    let admin = Admin::new(s.admin, None);
    let reply = admin.send("POST", "/v1/certs/unknown.switchyard.test/renew", None, &[]);
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = admin.get("/v1/certs/known.switchyard.test/renew");
    assert_eq!(reply.status, 405);
    let admin_url = format!("http://127.0.0.1:{}", s.admin);
    let ctl = BIN.ctl(
        &[],
        &[
            "--admin",
            &admin_url,
            "certs",
            "--renew",
            "unknown.switchyard.test",
        ],
    );
    assert_eq!(ctl.code, 1, "{ctl}");
    assert!(ctl.stderr.contains("no ACME certificate covers"), "{ctl}");
}

// ------------------------------------------------------------------------------------------------
// `switchyard check`
// ------------------------------------------------------------------------------------------------

const CHECK: &str = r#"{server}
{http_listener}
{catch_all_blue}

[acme]
{acme}
"#;

fn check_acme(acme: &str) -> (i32, String) {
    let config = fill(
        CHECK,
        &[("http", &8080), ("blue", &"127.0.0.1:9"), ("acme", &acme)],
    );
    let (code, _, stderr) = check(BIN, &config);
    (code, stderr)
}

#[test]
fn check_reports_names_that_cannot_be_issued_with_their_location() {
    let (code, err) = check_acme(
        r#"email = "ops@switchyard.test"

[[acme.certificates]]
names = ["*.wild.example.com", "10.0.0.1", "localhost", "ok.example.com"]

[[acme.certificates]]
names = ["ok.example.com"]
challenge = "dns-01"

[[acme.certificates]]
names = ["tls.example.com"]
challenge = "tls-alpn-01"

[[acme.certificates]]
names = ["x.example.com"]
challenge = "http-02"
"#,
    );
    assert_eq!(code, 1, "{err}");
    let expect = [
        // line:col of each problem in the filled-in file.
        "wildcard \"*.wild.example.com\" can only be issued through dns-01, not http-01",
        "\"10.0.0.1\" cannot be issued: IP addresses",
        "\"localhost\" cannot be issued: a CA issues only for fully qualified names",
        "\"ok.example.com\" is listed in more than one ACME certificate",
        "dns-01 needs `dns_hook` in [acme]",
        "tls-alpn-01 needs a TLS listener",
        "unknown ACME challenge \"http-02\"",
    ];
    for e in expect {
        let line = err
            .lines()
            .find(|l| l.contains(e))
            .unwrap_or_else(|| panic!("missing {e:?} in:\n{err}"));
        let (location, _) = line.split_once(": ").unwrap();
        let parts: Vec<&str> = location.split(':').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!(parts[0], "switchyard.toml", "{line}");
        assert!(parts[1].parse::<usize>().unwrap() > 1, "{line}");
    }
}

#[test]
fn check_reports_bad_acme_settings() {
    let (code, err) = check_acme(
        r#"directory = "http://insecure.example/dir"
staging = true
email = "not-an-email"
ca_root = "/nonexistent/root.pem"
dns_hook = "/nonexistent/hook"
eab = { kid = "k", hmac_key = "not base64!" }
backoff_min = "10s"
backoff_max = "1s"
"#,
    );
    assert_eq!(code, 1);
    for e in [
        "set either `directory` or `staging = true`, not both",
        "invalid contact email \"not-an-email\"",
        "cannot read ca_root \"/nonexistent/root.pem\"",
        "dns_hook \"/nonexistent/hook\" cannot be used",
        "eab.hmac_key must be base64url",
        "backoff_max must be at least backoff_min",
        "[acme] lists no certificates",
    ] {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
    let (code, err) = check_acme("bogus = 1\n[[acme.certificates]]\nnames = [\"a.example.com\"]\n");
    assert_eq!(code, 1);
    assert!(err.contains("unknown field `bogus`"), "{err}");
}
