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
        self.swap(
            "state_dir = \"/var/lib/switchyard\"",
            "state_dir = \"{tmp}/state\"",
        )
        .swap(
            "[server]\n",
            "[server]\nupgrade_socket = \"{tmp}/upgrade.sock\"\ndrain_timeout = \"1s\"\n",
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

/// A script that runs the repository's example DNS-01 hook against `dns`'s management API.
fn dns_hook(dir: &Path, dns: &Dns) -> String {
    let path = dir.join("dns-hook");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nDNS_HOOK_BACKEND=challtestsrv CHALLTESTSRV_URL={} exec {REPO}/examples/dns-hook.sh \"$@\"\n",
            dns.management_url()
        ),
    )
    .expect("write the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

/// A client trusting `pebble`'s root (and the test CA), every name on 127.0.0.1.
fn acme_client(pebble: &Pebble) -> reqwest::blocking::Client {
    let root = reqwest::Certificate::from_pem(pebble.roots_pem().as_bytes()).expect("root PEM");
    client_builder()
        .add_root_certificate(root)
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------------
// Tiris: a Go API under Docker Compose, blue/green.

#[test]
fn tiris() {
    let dns = Dns::start();
    let (http, https, admin) = (port(), port(), port());
    let pebble = Pebble::start(dns.port(), http, https, testkit::pebble::NORMAL);
    let app = port();
    let blue = replicas(
        &dns,
        "tiris-backend",
        &[[127, 0, 1, 1], [127, 0, 1, 2], [127, 0, 1, 3]],
        app,
    );
    let _green = replicas(&dns, "tiris-backend-green", &[[127, 0, 1, 4]], app);
    let _dev = replicas(&dns, "tiris-backend-dev", &[[127, 0, 1, 5]], app);
    let hook = dns_hook(pebble.dir(), &dns);
    let proxy = Example::load("config/examples/tiris.toml")
        .on_test_machine()
        .swap("resolvers = [\"127.0.0.11\"]", format!("resolvers = [\"{}\"]", dns.resolver()))
        .swap("access_log = \"stdout\"", "access_log = \"{tmp}/access.log\"")
        .swap("address = \"127.0.0.1:9900\"", format!("address = \"127.0.0.1:{admin}\""))
        .swap("address = \"0.0.0.0:80\"", format!("address = \"127.0.0.1:{http}\""))
        .swap("address = \"0.0.0.0:443\"", format!("address = \"127.0.0.1:{https}\""))
        .swap_n(3, ":8080\"", format!(":{app}\""))
        .swap(
            "dns_hook = \"../../examples/dns-hook.sh\"",
            format!("dns_hook = \"{hook}\""),
        )
        .swap(
            "\n[acme]\n",
            format!(
                "\n[acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nbackoff_min = \"1s\"\nbackoff_max = \"4s\"\n",
                pebble.directory(),
                pebble.directory_ca().display()
            ),
        )
        .start();
    let client = acme_client(&pebble);
    let url = |host: &str, path: &str| format!("https://{host}:{https}{path}");

    // TLS: both wildcards come over DNS-01 from the CA; clients verify them against its root.
    for host in ["api.tiris.example", "status.dev.tiris.example"] {
        let served = wait_until(Duration::from_secs(90), || {
            client.get(url(host, "/")).send().is_ok()
        });
        assert!(
            served,
            "no certificate from the CA for {host}:\n{}\n{}",
            proxy.stderr(),
            pebble.log()
        );
    }
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
    let admin_api = Admin::new(admin, None);
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
    let env = [("SWITCHYARD_ADMIN", format!("http://127.0.0.1:{admin}"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let green_up = wait_until(Duration::from_secs(20), || {
        healthy(&admin_api, "tiris", "green") == 1
    });
    assert!(green_up, "{}", admin_api.get("/v1/services/tiris").text);
    let out = BIN.ctl(&env, &["switch", "tiris", "green"]);
    assert_eq!(out.code, 0, "{out}");
    let seen = backends_seen(&client, &url("docs.tiris.example", "/"), 5);
    assert_eq!(seen, BTreeSet::from(["tiris-backend-green".to_string()]));
    let out = BIN.ctl(&env, &["switch", "tiris", "blue"]);
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
