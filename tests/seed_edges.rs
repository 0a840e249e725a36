//! The four seed edges of ../shared/seed-edges.md, each served by its config/examples/ file as written, against real backends, checked row by row.
//!
//! A test changes only what a test machine must: listen and admin addresses, the state dir, the
//! log and upgrade-socket paths, the DNS server (a real one, pebble-challtestsrv, answers the
//! examples' backend names with loopback addresses where echo backends listen), the backends'
//! port, and file paths outside the repository. Each change names the exact text it replaces and
//! fails when the example no longer has it, so an example cannot drift from what is tested.

#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// An example config, changed line by line for the test machine.
struct Example {
    file: &'static str,
    text: String,
}

impl Example {
    fn load(file: &'static str) -> Example {
        let path = Path::new(REPO).join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Example { file, text }
    }

    /// Replaces `from`, which must occur exactly once, with `to`.
    fn swap(self, from: &str, to: impl Display) -> Example {
        self.swap_n(1, from, to)
    }

    /// Replaces the `n` occurrences of `from` (there must be exactly `n`) with `to`.
    fn swap_n(mut self, n: usize, from: &str, to: impl Display) -> Example {
        let found = self.text.matches(from).count();
        assert_eq!(
            found, n,
            "{} has {found} times {from:?}, the test expects {n}: update the test with the example",
            self.file
        );
        self.text = self.text.replace(from, &to.to_string());
        self
    }

    /// The test machine's `[server]` paths: state, access log and upgrade socket in the proxy's
    /// temp dir, a short drain.
    fn on_test_machine(self) -> Example {
        let drain = if self.text.contains("\ndrain_timeout = ") {
            ""
        } else {
            "drain_timeout = \"1s\"\n"
        };
        self.swap(
            "state_dir = \"/var/lib/switchyard\"",
            "state_dir = \"{tmp}/state\"",
        )
        .swap(
            "[server]\n",
            format!("[server]\nupgrade_socket = \"{{tmp}}/upgrade.sock\"\n{drain}"),
        )
    }

    fn start(self) -> Proxy {
        Proxy::start(BIN, &self.text)
    }
}

/// Echo backends named `{name}-1`, `{name}-2`, ... on `ips` at `port`, and `name` answering
/// those addresses in `dns`: a Compose service with one container per address.
fn replicas(dns: &Dns, name: &str, ips: &[[u8; 4]], port: u16) -> Vec<Backend> {
    let addresses: Vec<String> = ips
        .iter()
        .map(|ip| std::net::Ipv4Addr::from(*ip).to_string())
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    dns.set_a(name, &refs);
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let label = if ips.len() == 1 {
                name.to_string()
            } else {
                format!("{name}-{}", i + 1)
            };
            Backend::spawn_on(SocketAddr::from((*ip, port)), &label)
                .unwrap_or_else(|e| panic!("backend {label} on {ip:?}:{port}: {e}"))
        })
        .collect()
}

/// The echo answer of one request: (status, echo body or `null`).
fn echo(resp: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// The backends that answered `n` GETs of `url`, all of which must succeed.
fn backends_seen(client: &reqwest::blocking::Client, url: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let (status, body) = echo(client.get(url).send().expect("request"));
            assert_eq!(status, 200, "{url}: {body}");
            body["backend"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// How many servers of `service`'s `pool` are healthy, by the admin API.
fn healthy(admin: &Admin, service: &str, pool: &str) -> u64 {
    let view = admin.get(&format!("/v1/services/{service}")).json;
    view["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["healthy_servers"].as_u64())
        .unwrap_or(0)
}

/// What a seed edge runs on here: a DNS server for its backends' names (and DNS-01), an ACME CA
/// resolving with it, and ports for its listeners and admin API.
struct Machine {
    dns: Dns,
    pebble: Pebble,
    http: u16,
    https: u16,
    admin: u16,
}

impl Machine {
    fn new() -> Machine {
        let dns = Dns::start();
        let (http, https, admin) = (port(), port(), port());
        let pebble = Pebble::start(dns.port(), http, https, testkit::pebble::NORMAL);
        Machine {
            dns,
            pebble,
            http,
            https,
            admin,
        }
    }

    /// The changes every seed example needs here: paths, the admin address, the listeners
    /// written as `http_at` and `https_at`, and ACME from this machine's CA (with the
    /// repository's example DNS-01 hook pointed at this machine's DNS server, where it has one).
    /// The backends' port: every `:8080` of the example's `servers` (there must be `servers` of
    /// them) becomes `app`; the DNS server is this machine's.
    fn adapt(
        &self,
        example: Example,
        (http_at, https_at): (&str, &str),
        (servers, app): (usize, u16),
    ) -> Example {
        let hook = self.pebble.dir().join("dns-hook");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nDNS_HOOK_BACKEND=challtestsrv CHALLTESTSRV_URL={} exec {REPO}/examples/dns-hook.sh \"$@\"\n",
                self.dns.management_url()
            ),
        )
        .expect("write the hook");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let listen = |at: &str| format!("address = \"{at}\"");
        let example = if example.text.contains("dns_hook = ") {
            example.swap(
                "dns_hook = \"../../examples/dns-hook.sh\"",
                format!("dns_hook = \"{}\"", hook.display()),
            )
        } else {
            example
        };
        let example = example
            .on_test_machine()
            .swap("access_log = \"stdout\"", "access_log = \"{tmp}/access.log\"")
            .swap(
                "address = \"127.0.0.1:9900\"",
                format!("address = \"127.0.0.1:{}\"", self.admin),
            )
            .swap(&listen(http_at), listen(&format!("127.0.0.1:{}", self.http)))
            .swap(&listen(https_at), listen(&format!("127.0.0.1:{}", self.https)))
            .swap(
                "\n[acme]\n",
                format!(
                    "\n[acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nbackoff_min = \"1s\"\nbackoff_max = \"4s\"\n",
                    self.pebble.directory(),
                    self.pebble.directory_ca().display()
                ),
            );
        let resolver = format!("resolvers = [\"{}\"]", self.dns.resolver());
        let example = if example.text.contains("resolvers = [\"127.0.0.11\"]") {
            example.swap("resolvers = [\"127.0.0.11\"]", resolver)
        } else {
            example.swap("\n[server]\n", format!("\n[server]\n{resolver}\n"))
        };
        example.swap_n(servers, ":8080\"", format!(":{app}\""))
    }
    /// A client trusting the CA's root (and the test CA), every name on 127.0.0.1.
    fn client(&self) -> reqwest::blocking::Client {
        let pem = self.pebble.roots_pem();
        let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("root PEM");
        client_builder()
            .add_root_certificate(root)
            .build()
            .expect("client")
    }

    /// [`Machine::client`] connecting from `ip` (a loopback address): another client to limits.
    fn client_from(&self, ip: [u8; 4]) -> reqwest::blocking::Client {
        let pem = self.pebble.roots_pem();
        let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("root PEM");
        client_builder()
            .add_root_certificate(root)
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .expect("client")
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https)
    }

    /// Waits until `host` is served a certificate from the CA.
    fn wait_certificate(&self, proxy: &Proxy, client: &reqwest::blocking::Client, host: &str) {
        let served = wait_until(Duration::from_secs(90), || {
            client.get(self.url(host, "/")).send().is_ok()
        });
        assert!(
            served,
            "no certificate from the CA for {host}:\n{}\n{}",
            proxy.stderr(),
            self.pebble.log()
        );
    }

    fn admin(&self) -> Admin {
        Admin::new(self.admin, None)
    }

    /// `switchyard ctl ARGS` against this machine's admin API.
    fn ctl(&self, args: &[&str]) -> Outcome {
        let admin = format!("http://127.0.0.1:{}", self.admin);
        BIN.ctl(&[("SWITCHYARD_ADMIN", &admin)], args)
    }
}

// ---------------------------------------------------------------------------------------------
// Tiris: a Go API under Docker Compose, blue/green.

#[test]
fn tiris() {
    let m = Machine::new();
    let app = port();
    let blue = replicas(
        &m.dns,
        "tiris-backend",
        &[[127, 0, 1, 1], [127, 0, 1, 2], [127, 0, 1, 3]],
        app,
    );
    let _green = replicas(&m.dns, "tiris-backend-green", &[[127, 0, 1, 4]], app);
    let _dev = replicas(&m.dns, "tiris-backend-dev", &[[127, 0, 1, 5]], app);
    let example = Example::load("config/examples/tiris.toml");
    let proxy = m
        .adapt(example, ("0.0.0.0:80", "0.0.0.0:443"), (3, app))
        .start();
    let client = m.client();
    let url = |host: &str, path: &str| m.url(host, path);
    let (http, https) = (m.http, m.https);

    // TLS: both wildcards come over DNS-01 from the CA; clients verify them against its root.
    for host in ["api.tiris.example", "status.dev.tiris.example"] {
        m.wait_certificate(&proxy, &client, host);
    }
    // TLS 1.2 and 1.3 only; TLS 1.2 with the ECDHE AES-GCM suites and no other.
    let roots = m.pebble.dir().join("roots.pem");
    std::fs::write(&roots, m.pebble.roots_pem()).unwrap();
    let handshake = |args: &[&str]| {
        Handshake::run(
            m.https,
            "api.tiris.example",
            &roots.to_string_lossy(),
            args,
            None,
        )
    };
    let refused = handshake(&["-tls1_1"]);
    assert_eq!(refused.cipher(), None, "TLS 1.1:\n{}", refused.out);
    let gcm = handshake(&["-tls1_2"]);
    let suite = gcm.cipher().unwrap_or_default();
    assert!(
        suite.starts_with("ECDHE-")
            && (suite.ends_with("-AES128-GCM-SHA256") || suite.ends_with("-AES256-GCM-SHA384")),
        "TLS 1.2 suite {suite:?}:\n{}",
        gcm.out
    );
    assert!(
        gcm.out.contains("Verify return code: 0 (ok)"),
        "{}",
        gcm.out
    );
    for other in [
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
    ] {
        let h = handshake(&["-tls1_2", "-cipher", other]);
        assert_eq!(h.cipher(), None, "{other}:\n{}", h.out);
    }
    let tls13 = handshake(&["-tls1_3"]);
    assert!(tls13.cipher().is_some(), "TLS 1.3:\n{}", tls13.out);

    // h2 over ALPN.
    let resp = client.get(url("api.tiris.example", "/")).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);

    // hosts: the four production hosts go to the running colour, the dev four to dev; others 404.
    let get = |host: &str| echo(client.get(url(host, "/")).send().unwrap());
    for host in ["api", "admin", "docs", "status"] {
        let (status, body) = get(&format!("{host}.tiris.example"));
        assert_eq!(status, 200, "{host}: {body}");
        let backend = body["backend"].as_str().unwrap_or_default();
        assert!(backend.starts_with("tiris-backend-"), "{body}");
        let (status, body) = get(&format!("{host}.dev.tiris.example"));
        assert_eq!(status, 200, "{host}.dev: {body}");
        assert_eq!(body["backend"], "tiris-backend-dev", "{body}");
    }
    assert_eq!(get("www.tiris.example").0, 404);
    // Port 80 sends every host to HTTPS.
    let resp = http1_client()
        .get(format!("http://api.tiris.example:{http}/v1/x?y=1"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        header(&resp, "location"),
        "https://api.tiris.example/v1/x?y=1"
    );

    // upstreams: the Compose name's three containers all take requests.
    let seen = backends_seen(&client, &url("api.tiris.example", "/"), 30);
    let all: BTreeSet<String> = (1..=3).map(|i| format!("tiris-backend-{i}")).collect();
    assert_eq!(seen, all);

    // headers: Host kept; X-Real-IP, X-Forwarded-For appended, X-Forwarded-Proto.
    let (_, body) = echo(
        client
            .get(url("api.tiris.example", "/"))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .unwrap(),
    );
    let h = &body["headers"];
    assert_eq!(h["host"], format!("api.tiris.example:{https}"), "{body}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{body}");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{body}");
    assert_eq!(h["x-forwarded-proto"], "https", "{body}");

    // health: a replica that stops answering takes no traffic.
    let mut blue = blue.into_iter();
    let (_first, stopped, _third) = (
        blue.next().unwrap(),
        blue.next().unwrap(),
        blue.next().unwrap(),
    );
    stopped.stop();
    let admin_api = m.admin();
    let down = wait_until(Duration::from_secs(20), || {
        healthy(&admin_api, "tiris", "blue") == 2
    });
    assert!(down, "{}", admin_api.get("/v1/services/tiris").text);
    let seen = backends_seen(&client, &url("api.tiris.example", "/"), 20);
    assert_eq!(
        seen,
        BTreeSet::from(["tiris-backend-1".to_string(), "tiris-backend-3".to_string()])
    );

    // deploy: the script switches to the healthy green colour, then rolls back.
    let green_up = wait_until(Duration::from_secs(20), || {
        healthy(&admin_api, "tiris", "green") == 1
    });
    assert!(green_up, "{}", admin_api.get("/v1/services/tiris").text);
    let out = m.ctl(&["switch", "tiris", "green"]);
    assert_eq!(out.code, 0, "{out}");
    let seen = backends_seen(&client, &url("docs.tiris.example", "/"), 5);
    assert_eq!(seen, BTreeSet::from(["tiris-backend-green".to_string()]));
    let out = m.ctl(&["switch", "tiris", "blue"]);
    assert_eq!(out.code, 0, "{out}");
    let seen = backends_seen(&client, &url("docs.tiris.example", "/"), 10);
    assert!(
        seen.iter().all(|b| b.starts_with("tiris-backend-"))
            && !seen.contains("tiris-backend-green"),
        "{seen:?}"
    );

    // alerts: the series the shipped rules read (5xx share over 5 minutes above 5 %; memory).
    let rules =
        std::fs::read_to_string(Path::new(REPO).join("config/prometheus/alerts.yml")).unwrap();
    assert!(
        rules.contains("code=~\"5..\"}[5m]") && rules.contains("> 0.05"),
        "{rules}"
    );
    let metrics = admin_api.get("/metrics").text;
    for series in [
        "switchyard_requests_total{",
        "process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(series), "no {series} in /metrics");
    }
}

// ---------------------------------------------------------------------------------------------
// BookKeep: microservices on Kubernetes, formerly behind ingress-nginx.

/// GETs of `url` in a loop on a thread of their own until the flag is set, as 200 clients
/// taking turns (named by X-Forwarded-For, as a load balancer does); how many were sent.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Traffic {
    fn start(client: &reqwest::blocking::Client, url: String) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, flag) = (client.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client
                    .get(&url)
                    .header("x-forwarded-for", format!("203.0.113.{}", sent % 200 + 1))
                    .send()
                    .and_then(|r| r.bytes());
                sent += 1;
            }
            sent
        });
        Traffic { stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn bookkeep() {
    let m = Machine::new();
    let app = port();
    let name = |svc: &str| format!("{svc}.bookkeep.svc.cluster.local");
    let mut backends = Vec::new();
    for (i, svc) in ["auth", "customers", "reports", "invoices"]
        .iter()
        .enumerate()
    {
        let ip = [127, 0, 2, i as u8 + 1];
        backends.extend(replicas(&m.dns, &name(svc), &[ip], app));
    }
    let canary_at = SocketAddr::from(([127, 0, 2, 9], app));
    m.dns.set_a(&name("invoices-canary"), &["127.0.2.9"]);
    let example = Example::load("config/examples/bookkeep.toml");
    let proxy = m
        .adapt(example, ("0.0.0.0:8080", "0.0.0.0:8443"), (5, app))
        // The test's client stands where the load balancer does.
        .swap(
            "trusted_proxies = [\"10.0.0.0/8\"]",
            "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]",
        )
        .start();
    let client = m.client();
    let host = "api.bookkeep.example";

    // TLS: the wildcard from the CA.
    m.wait_certificate(&proxy, &client, host);

    // routing: a prefix per service, the path kept.
    for svc in ["auth", "customers", "reports", "invoices"] {
        let path = format!("/v1/{svc}/42?full=1");
        let (status, body) = echo(client.get(m.url(host, &path)).send().unwrap());
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["backend"], name(svc), "{body}");
        assert_eq!(body["path"], path, "{body}");
    }
    assert_eq!(
        client
            .get(m.url(host, "/v1/payroll"))
            .send()
            .unwrap()
            .status(),
        404
    );

    // real client IP: the load balancer's X-Forwarded-For names the client.
    let (_, body) = echo(
        client
            .get(m.url(host, "/v1/auth/me"))
            .header("x-forwarded-for", "198.51.100.7")
            .send()
            .unwrap(),
    );
    assert_eq!(body["headers"]["x-real-ip"], "198.51.100.7", "{body}");

    // limits: 100 requests in a minute per client (the client the load balancer names): the
    // 101st is refused, while another client still gets through.
    let from = |client_ip: &str| {
        client
            .get(m.url(host, "/v1/customers"))
            .header("x-forwarded-for", client_ip)
            .send()
            .unwrap()
    };
    // The real-client-IP request above counted for 198.51.100.7.
    for i in 2..=100 {
        let status = from("198.51.100.7").status();
        assert_eq!(status, 200, "request {i} of the minute");
    }
    let refused = from("198.51.100.7");
    assert_eq!(refused.status(), 429);
    let wait: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(from("198.51.100.8").status(), 200);

    // deploy: a canary that fails is rolled back; a good one is promoted.
    let rollout = || {
        m.ctl(&[
            "rollout",
            "start",
            "invoices",
            "--canary",
            "canary",
            "--interval",
            "1s",
            "--min-requests",
            "5",
            "--wait",
        ])
    };
    let admin = m.admin();
    let weight = |pool: &str| admin.get("/v1/services/invoices").weight(pool);
    let bad = Backend::builder(&name("invoices-canary"))
        .addr(canary_at)
        .fail_ratio(1.0)
        .spawn()
        .unwrap();
    let traffic = Traffic::start(&client, m.url(host, "/v1/invoices/list"));
    let out = rollout();
    assert_eq!(out.code, 1, "a failing canary is rolled back: {out}");
    assert_eq!((weight("stable"), weight("canary")), (100, 0), "{out}");
    bad.stop();
    let _good = Backend::spawn_on(canary_at, &name("invoices-canary")).unwrap();
    // The fixed version goes out once the canary's live window has forgotten the bad one.
    let forgotten = wait_until(Duration::from_secs(30), || {
        admin.get("/v1/services/invoices").pool("canary")["live"]["errors"] == 0
    });
    assert!(forgotten, "{}", admin.get("/v1/services/invoices").text);
    let out = rollout();
    assert_eq!(out.code, 0, "a good canary is promoted: {out}");
    assert_eq!((weight("stable"), weight("canary")), (0, 100), "{out}");
    assert!(traffic.finish() > 0);

    // alerts: the histogram has a 2 s bound for a p99-above-2-s rule.
    let metrics = admin.get("/metrics").text;
    assert!(
        metrics.contains("switchyard_request_duration_seconds_bucket{pool=\"canary\",service=\"invoices\",le=\"2\"}"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tchat: Go microservices on Kubernetes behind one gateway service.

/// A websocket opened over TLS (HTTP/1.1 by ALPN) to `host` on the machine's HTTPS listener,
/// trusting the CA's root: the 101 head and the stream.
fn websocket_over_tls(
    m: &Machine,
    host: &str,
) -> (
    String,
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
) {
    use rustls::pki_types::pem::PemObject;
    use std::io::Write;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(m.pebble.roots_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", m.https)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut tls, &mut byte).unwrap();
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), tls)
}

#[test]
fn tchat() {
    let m = Machine::new();
    let app = port();
    let gateway = replicas(
        &m.dns,
        "gateway.tchat.svc.cluster.local",
        &[[127, 0, 3, 1]],
        app,
    );
    // The CA validates HTTP-01 at the address the name has.
    m.dns.set_a("api.tchat.example", &["127.0.0.1"]);
    let example = Example::load("config/examples/tchat.toml");
    let proxy = m
        .adapt(example, ("0.0.0.0:80", "0.0.0.0:443"), (1, app))
        .start();
    let client = m.client();
    let host = "api.tchat.example";

    // TLS: the certificate comes over HTTP-01 through the listener that redirects everything
    // else to HTTPS.
    m.wait_certificate(&proxy, &client, host);
    let resp = http1_client()
        .post(format!("http://{host}:{}/v1/messages?room=7", m.http))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        header(&resp, "location"),
        format!("https://{host}/v1/messages?room=7")
    );

    // routing: the host goes to the gateway.
    let (status, body) = echo(client.get(m.url(host, "/v1/rooms")).send().unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "gateway.tchat.svc.cluster.local", "{body}");

    // CORS: a preflight as a browser sends it is answered here and never reaches the gateway.
    let before = gateway[0].requests();
    let preflight = client
        .request(reqwest::Method::OPTIONS, m.url(host, "/v1/messages/9"))
        .header("origin", "https://web.tchat.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "same-site")
        .header("sec-fetch-dest", "empty")
        .send()
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        "https://web.tchat.example"
    );
    let methods = header(&preflight, "access-control-allow-methods");
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = header(&preflight, "access-control-allow-headers").to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert_eq!(
        header(&preflight, "access-control-allow-credentials"),
        "true"
    );
    assert_eq!(
        gateway[0].requests(),
        before,
        "the preflight reached the gateway"
    );
    // The call itself: the origin echoed, Vary: Origin; another site's origin gets no CORS.
    let call = |origin: &str| {
        client
            .put(m.url(host, "/v1/messages/9"))
            .header("origin", origin)
            .send()
            .unwrap()
    };
    let allowed = call("https://web.tchat.example");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        "https://web.tchat.example"
    );
    assert!(header(&allowed, "vary")
        .to_ascii_lowercase()
        .contains("origin"));
    let other = call("https://evil.example");
    assert_eq!(other.status(), 200);
    assert_eq!(header(&other, "access-control-allow-origin"), "");

    // websockets: upgraded over TLS and echoed both ways.
    let (head, mut ws) = websocket_over_tls(&m, host);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    {
        use std::io::{Read, Write};
        ws.write_all(b"hello tchat").unwrap();
        let mut echoed = [0u8; 11];
        ws.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"hello tchat");
    }

    // limits: 100 r/s per client with a burst of 500 served at once: of 1,000 requests sent as
    // fast as four connections go, at most 500 + 100 per second spent (and one for the
    // first) pass, and the rest get 429.
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), m.url(host, "/v1/rooms"));
            std::thread::spawn(move || {
                (0..250)
                    .map(|_| client.get(&url).send().unwrap().status().as_u16())
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let spent = started.elapsed().as_secs_f64();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(passed + limited, 1000, "only 200 and 429 expected");
    let most = 501.0 + 100.0 * (spent + 1.0);
    eprintln!("{passed} passed, {limited} limited in {spent:.2}s (at most {most:.0} may pass)");
    assert!(
        passed >= 500,
        "the burst passes: {passed} of 1000 in {spent:.1}s"
    );
    assert!(
        (passed as f64) <= most,
        "{passed} passed in {spent:.1}s, at most {most:.0} allowed"
    );
    if most < 1000.0 {
        assert!(limited > 0, "none limited in {spent:.1}s");
    }
    // A 429 carries the CORS headers, so the app can read it and back off. Asked from four
    // connections at once: one at a time, on a busy machine, may not outpace the refill.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let refused = std::thread::scope(|s| {
        let probes: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    use std::sync::atomic::Ordering::Relaxed;
                    for _ in 0..600 {
                        if stop.load(Relaxed) {
                            return None;
                        }
                        let r = call("https://web.tchat.example");
                        if r.status() == 429 {
                            stop.store(true, Relaxed);
                            return Some(r);
                        }
                    }
                    None
                })
            })
            .collect();
        probes.into_iter().find_map(|p| p.join().unwrap())
    })
    .expect("a 429 within 4 × 600 more requests");
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        "https://web.tchat.example"
    );
}

// ---------------------------------------------------------------------------------------------
// Gorax: a Go API and a single-page app, nginx in Docker Compose (or an AWS ALB).

/// The API host's six security headers, on `resp` whatever its status.
fn assert_six_headers(resp: &reqwest::blocking::Response) {
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains; preload",
        ),
        ("x-xss-protection", "1; mode=block"),
        (
            "content-security-policy",
            "default-src 'self'; connect-src 'self' wss:",
        ),
    ] {
        assert_eq!(header(resp, name), value, "{name} on a {}", resp.status());
    }
}

#[test]
fn gorax() {
    let m = Machine::new();
    let app = port();
    let names = ["api-1", "api-2", "api-3"].map(|n| format!("{n}.gorax.internal"));
    let mut api = Vec::new();
    for (i, name) in names.iter().enumerate() {
        api.extend(replicas(&m.dns, name, &[[127, 0, 4, i as u8 + 1]], app));
    }
    // The CA validates HTTP-01 at the addresses the names have.
    m.dns.set_a("api.gorax.example", &["127.0.0.1"]);
    m.dns.set_a("app.gorax.example", &["127.0.0.1"]);
    let example = Example::load("config/examples/gorax.toml");
    let proxy = m
        .adapt(example, ("0.0.0.0:80", "0.0.0.0:443"), (3, app))
        .swap(
            "root = \"gorax-app\"",
            format!("root = \"{REPO}/config/examples/gorax-app\""),
        )
        .start();
    let client = m.client();
    let api_host = "api.gorax.example";
    let app_host = "app.gorax.example";
    for host in [api_host, app_host] {
        m.wait_certificate(&proxy, &client, host);
    }

    // port 80: every host, routed or not, 301 to https://$host$request_uri.
    for host in [api_host, "old.gorax.example"] {
        let resp = http1_client()
            .get(format!("http://{host}:{}/a/b?c=d", m.http))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 301, "{host}");
        assert_eq!(header(&resp, "location"), format!("https://{host}/a/b?c=d"));
    }

    // TLS: 1.2 and 1.3 only, ECDHE AES-GCM, sessions resumed, h2; OCSP: the CA's certificate
    // names no responder, so it is served unstapled and that is said once.
    let roots = m.pebble.dir().join("roots.pem");
    std::fs::write(&roots, m.pebble.roots_pem()).unwrap();
    let roots = roots.to_string_lossy().into_owned();
    let handshake = |args: &[&str]| Handshake::run(m.https, api_host, &roots, args, None);
    assert_eq!(handshake(&["-tls1_1"]).cipher(), None);
    let h = handshake(&["-tls1_2"]);
    let suite = h.cipher().unwrap_or_default().to_string();
    assert!(
        suite.starts_with("ECDHE-") && suite.contains("-GCM-"),
        "{suite}:\n{}",
        h.out
    );
    let session = m.pebble.dir().join("session.pem");
    let session = session.to_string_lossy();
    let first = handshake(&["-tls1_2", "-sess_out", &session]);
    assert!(first.out.contains("New, "), "{}", first.out);
    let again = handshake(&["-tls1_2", "-sess_in", &session]);
    assert!(again.out.contains("Reused, "), "{}", again.out);
    assert!(
        proxy.wait_for_log("names no OCSP responder", Duration::from_secs(10)),
        "{}",
        proxy.stderr()
    );
    let resp = client.get(m.url(api_host, "/api/me")).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);

    // api. headers: all six on the API's answers.
    assert_eq!(resp.status(), 200);
    assert_six_headers(&resp);

    // bodies: 10 MB at most, 413 also for a client that does not wait for 100-continue.
    let big = m.pebble.dir().join("big.bin");
    std::fs::write(&big, vec![b'x'; 11 << 20]).unwrap();
    for protocol in ["--http2", "--http1.1"] {
        let curl = std::process::Command::new(peer("curl", "curl"))
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Expect:",
            ])
            .args([protocol, "--cacert", &roots, "--resolve"])
            .arg(format!("{api_host}:{}:127.0.0.1", m.https))
            .arg("--data-binary")
            .arg(format!("@{}", big.display()))
            .arg(m.url(api_host, "/api/upload"))
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&curl.stdout);
        assert_eq!(status, "413", "{protocol}: {curl:?}");
    }

    // limits: at most 10 requests in progress per IP (12 at once from 127.0.0.11: 2 refused).
    let from_11 = m.client_from([127, 0, 0, 11]);
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let (c, url) = (from_11.clone(), m.url(api_host, "/delay/3000"));
            std::thread::spawn(move || c.get(&url).send().unwrap().status().as_u16())
        })
        .collect();
    let mut statuses: Vec<u16> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort_unstable();
    let want: Vec<u16> = [200; 10].into_iter().chain([429; 2]).collect();
    assert_eq!(statuses, want);
    // 5 r/m burst 3 on the login (from 127.0.0.12): 4 at once, then 429, with all six headers.
    let from_12 = m.client_from([127, 0, 0, 12]);
    for i in 1..=4 {
        let resp = from_12
            .post(m.url(api_host, "/api/auth/login"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "login {i}");
    }
    let refused = from_12
        .post(m.url(api_host, "/api/auth/login"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_six_headers(&refused);
    // 100 r/m burst 20 on the whole host (from 127.0.0.13): 21 at once, then 429.
    let from_13 = m.client_from([127, 0, 0, 13]);
    let items = || {
        from_13
            .get(m.url(api_host, "/api/items"))
            .send()
            .unwrap()
            .status()
    };
    for i in 1..=21 {
        assert_eq!(items(), 200, "request {i}");
    }
    assert!((0..5).any(|_| items() == 429), "no 429 after the burst");

    // upstream: three servers by name, least connections, nginx's max_fails/fail_timeout and
    // keepalive; the ALB variant's health check and cookie.
    let admin = m.admin();
    let config = admin.get("/v1/config").json;
    let service = config["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "api"))
        .unwrap();
    assert_eq!(service["balance"], "least_conn", "{service}");
    assert_eq!(service["passive"]["max_fails"], 3, "{service}");
    assert_eq!(service["passive"]["fail_timeout"], "30s", "{service}");
    assert_eq!(service["upstream"]["keepalive"], 32, "{service}");
    assert_eq!(service["health"]["interval"], "30s", "{service}");
    assert_eq!(service["health"]["healthy_threshold"], 2, "{service}");
    assert_eq!(service["health"]["unhealthy_threshold"], 3, "{service}");
    assert_eq!(config["server"]["drain_timeout"], "30s", "{config}");
    let up = wait_until(Duration::from_secs(10), || {
        healthy(&admin, "api", "main") == 3
    });
    assert!(up, "{}", admin.get("/v1/services/api").text);
    // timeouts: connect 30 s, send and read 60 s; the websocket's a week.
    let routes = config["routes"].as_array().unwrap();
    let ws = routes.iter().find(|r| r["path"] == "/ws").unwrap();
    assert_eq!(ws["options"]["read_timeout"], "604800s", "{ws}");
    assert_eq!(ws["options"]["send_timeout"], "604800s", "{ws}");
    let api_route = routes
        .iter()
        .find(|r| r["host"] == api_host && r["path"] == "/")
        .unwrap();
    for (key, value) in [
        ("connect_timeout", "30s"),
        ("send_timeout", "60s"),
        ("read_timeout", "60s"),
    ] {
        assert_eq!(api_route["options"][key], value, "{api_route}");
    }
    let (head, mut ws) = websocket_over_tls(&m, api_host);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    {
        use std::io::{Read, Write};
        ws.write_all(b"ping").unwrap();
        let mut echoed = [0u8; 4];
        ws.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"ping");
    }
    // The load balancer's cookie keeps a client on one server for 24 h.
    let first = client.get(m.url(api_host, "/health")).send().unwrap();
    let cookie = header(&first, "set-cookie");
    assert!(
        cookie.starts_with("GORAXLB=") && cookie.contains("Max-Age=86400"),
        "{cookie}"
    );
    let (_, body) = echo(first);
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..5 {
        let resp = client
            .get(m.url(api_host, "/health"))
            .header("cookie", &pair)
            .send()
            .unwrap();
        assert_eq!(echo(resp).1["backend"], body["backend"]);
    }

    // gzip: JSON and JavaScript compressed for a client that asks.
    for url in [
        m.url(api_host, "/api/items-gz"),
        m.url(app_host, "/assets/app.3f2a1c.js"),
    ] {
        let resp = client
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .unwrap();
        assert_eq!(header(&resp, "content-encoding"), "gzip", "{url}");
    }

    // app.: a file if it exists, else index.html; assets cached a year; three headers only.
    let js = client
        .get(m.url(app_host, "/assets/app.3f2a1c.js"))
        .send()
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(
        header(&js, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&js, "x-frame-options"), "DENY");
    assert_eq!(header(&js, "strict-transport-security"), "");
    let page = client.get(m.url(app_host, "/invoices/42")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert!(page.text().unwrap().contains("<div id=\"app\">"));
    let dotfile = client.get(m.url(app_host, "/.env")).send().unwrap();
    assert_eq!(dotfile.status(), 404);

    // access log: combined + X-Forwarded-For + times; /health not in it.
    let marker = client
        .get(m.url(api_host, "/api/logged"))
        .header("x-forwarded-for", "198.51.100.20")
        .header("user-agent", "gorax-test")
        .send()
        .unwrap();
    assert_eq!(marker.status(), 200);
    let log_path = proxy.dir().join("access.log");
    let lines = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || lines().contains("/api/logged")),
        "{}",
        lines()
    );
    let text = lines();
    let line = text.lines().find(|l| l.contains("/api/logged")).unwrap();
    assert!(
        line.starts_with("127.0.0.1 - - [")
            && line.contains("] \"GET /api/logged HTTP/2.0\" 200 ")
            && line.contains(" \"-\" \"gorax-test\" \"198.51.100.20\" rt=")
            && line.contains(" uct=")
            && line.contains(" uht=")
            && line.contains(" urt="),
        "{line}"
    );
    assert!(!text.contains("GET /health"), "{text}");
}
