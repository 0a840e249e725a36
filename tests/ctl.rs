//! `switchyard ctl` against a real proxy: exit codes 0/1/2/3, reasons on stderr, status output, an admin listener with TLS and mTLS.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

const TOKEN: &str = "ctl-test-token";

/// Service "app" with live pools blue and green and a pool red whose server is a closed port;
/// requests for host red.test reach that port through "red-direct" (beside blue, which can take
/// the traffic: passive checks never eject the last server that can), which ejects it after one
/// failure (server state is shared by address), making red unhealthy. Pool amber is the same
/// with an ejection of only 4 s, so that it turns healthy again while `--wait-healthy` waits.
fn world() -> World {
    World::new()
        .backend("blue")
        .backend("green")
        .dead("red")
        .dead("amber")
        .route("red.test", "red-direct")
        .route("*", "app")
        .route("amber.test", "amber-direct")
        .pool("app", "blue", 100, &["blue"])
        .pool("app", "green", 0, &["green"])
        .pool("app", "red", 0, &["red"])
        .pool("app", "amber", 0, &["amber"])
        .passive("amber-direct", 1, "4s")
        .pool("amber-direct", "only", 1, &["amber", "blue"])
        .passive("red-direct", 1, "60s")
        .pool("red-direct", "only", 1, &["red", "blue"])
        .admin_token(TOKEN)
}

/// Runs `switchyard ctl ARGS` with SWITCHYARD_ADMIN/SWITCHYARD_TOKEN set from `env` only.
fn ctl(env: &[(&str, &str)], args: &[&str]) -> Outcome {
    BIN.ctl(env, args)
}

struct Setup {
    world: Running,
}

impl Setup {
    fn start() -> Setup {
        Setup {
            world: world().start(BIN),
        }
    }

    fn url(&self) -> String {
        self.world.admin_url()
    }

    /// ctl with the admin URL and token from the environment, as a deploy script would.
    fn ctl(&self, args: &[&str]) -> Outcome {
        let url = self.url();
        ctl(
            &[("SWITCHYARD_ADMIN", &url), ("SWITCHYARD_TOKEN", TOKEN)],
            args,
        )
    }

    fn backend_now(&self) -> String {
        backend_via(&http1_client(), self.world.http(), "app.test")
    }

    /// The `status` table row of a pool.
    fn status_row(&self, pool: &str) -> String {
        let run = self.ctl(&["status"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(pool))
            .unwrap_or_else(|| panic!("no row for {pool}:\n{}", run.stdout))
            .to_string()
    }
}

#[test]
fn ctl_changes_weights_and_shows_overrides() {
    let s = Setup::start();
    let run = s.ctl(&["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("service \"app\""), "{}", run.stdout);
    assert!(!run.stdout.contains("(override)"), "{}", run.stdout);
    assert!(
        s.status_row("blue").contains("1/1"),
        "{}",
        s.status_row("blue")
    );

    let run = s.ctl(&["weights", "app", "blue=50", "green=50"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("blue=50 green=50"), "{}", run.stdout);
    let blue = s.status_row("blue");
    assert!(blue.contains("(override)"), "{blue}");
    let cols: Vec<&str> = blue.split_whitespace().collect();
    assert_eq!(
        &cols[..3],
        ["blue", "50", "100"],
        "pool, weight, config weight: {blue}"
    );
    assert!(s.status_row("green").contains("(override)"));
    assert!(!s.status_row("red").contains("(override)"));

    // --json prints the API's JSON; the flag may come before or after the subcommand.
    for args in [
        &["--json", "status", "app"][..],
        &["status", "app", "--json"],
    ] {
        let run = s.ctl(args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let pools = json["pools"].as_array().unwrap();
        let blue = pools.iter().find(|p| p["name"] == "blue").unwrap();
        assert_eq!(
            (&blue["overridden"], &blue["weight"]),
            (&true.into(), &50.into())
        );
    }

    // --if-match: a stale generation is refused (exit 1), the current one applies.
    let generation = {
        let run = s.ctl(&["--json", "status", "app"]);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["generation"]
            .as_u64()
            .unwrap()
    };
    let stale = (generation - 1).to_string();
    let run = s.ctl(&[
        "weights",
        "app",
        "blue=0",
        "green=100",
        "--if-match",
        &stale,
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("generation is {generation}")),
        "{}",
        run.stderr
    );
    let current = generation.to_string();
    let run = s.ctl(&[
        "weights",
        "app",
        "blue=0",
        "green=100",
        "--if-match",
        &current,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.backend_now(), "green");

    let run = s.ctl(&["clear-weights", "app"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!s.ctl(&["status"]).stdout.contains("(override)"));
    assert_eq!(s.backend_now(), "blue");

    // Flags instead of the environment.
    let url = s.url();
    let run = ctl(&[], &["--admin", &url, "--token", TOKEN, "reload"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("reloaded"), "{}", run.stdout);
}

#[test]
fn ctl_switch_waits_for_health_and_is_refused_when_unhealthy() {
    let s = Setup::start();
    // Round robin: the first or the second request to red.test tries the closed port.
    let client = http1_client();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = client.get(s.world.url("red.test", "/")).send().unwrap();
            s.status_row("red").contains("0/1")
        }),
        "red was not ejected: {}",
        s.status_row("red")
    );

    let run = s.ctl(&["switch", "app", "red"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("has no healthy server; switch refused"),
        "{}",
        run.stderr
    );
    assert_eq!(s.backend_now(), "blue");

    let started = Instant::now();
    let run = s.ctl(&["switch", "app", "red", "--wait-healthy", "1s"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(started.elapsed() >= Duration::from_secs(1), "gave up early");
    assert!(
        run.stderr.contains("no healthy server after waiting 1s"),
        "{}",
        run.stderr
    );
    let run = s.ctl(&["switch", "app", "purple", "--wait-healthy", "5s"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no pool \"purple\""), "{}", run.stderr);

    let run = s.ctl(&["switch", "app", "green", "--wait-healthy", "10s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("amber=0 blue=0 green=100 red=0"),
        "{}",
        run.stdout
    );
    for _ in 0..10 {
        assert_eq!(s.backend_now(), "green");
    }

    // --wait-healthy waits while the pool is down and switches once it is back.
    let client = http1_client();
    let mut ejected = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = client.get(s.world.url("amber.test", "/")).send().unwrap();
            ejected = Instant::now();
            s.status_row("amber").contains("0/1")
        }),
        "{}",
        s.status_row("amber")
    );
    let run = s.ctl(&["switch", "app", "amber", "--wait-healthy", "20s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("waiting up to 20s"), "{}", run.stderr);
    assert!(
        ejected.elapsed() >= Duration::from_millis(1500),
        "did not wait for the pool"
    );
    assert!(run.stdout.contains("amber=100"), "{}", run.stdout);
}

#[test]
fn ctl_failures_exit_1_and_an_unreachable_api_3_with_the_reason() {
    let s = Setup::start();
    let url = s.url();
    let run = ctl(&[("SWITCHYARD_ADMIN", &url)], &["status"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("missing bearer token"),
        "{}",
        run.stderr
    );
    let run = ctl(
        &[("SWITCHYARD_ADMIN", &url), ("SWITCHYARD_TOKEN", "wrong")],
        &["status"],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("wrong bearer token"), "{}", run.stderr);

    let run = s.ctl(&["weights", "app", "purple=5"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no pool \"purple\""), "{}", run.stderr);
    let run = s.ctl(&["weights", "app", "blue=0", "green=0", "red=0"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("sum to 0"), "{}", run.stderr);
    let run = s.ctl(&["clear-weights", "nope"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown service \"nope\""),
        "{}",
        run.stderr
    );

    // A rejected reload prints every error as file:line:col.
    let good = s.world.proxy.config();
    std::fs::write(
        s.world.proxy.config_path(),
        good.replace("weight = 100", "weight = -1"),
    )
    .unwrap();
    let run = s.ctl(&["reload"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("config rejected"), "{}", run.stderr);
    let location = format!("{}:", s.world.proxy.config_path().display());
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&location)),
        "no file:line:col error in {}",
        run.stderr
    );
    std::fs::write(s.world.proxy.config_path(), good).unwrap();
    assert_eq!(s.ctl(&["reload"]).code, 0);

    // Nothing listening: exit 3, the API could not be reached.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let run = ctl(
        &[("SWITCHYARD_TOKEN", TOKEN)],
        &["--admin", &closed, "status"],
    );
    assert_eq!(run.code, 3, "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the admin API at {closed}")),
        "{}",
        run.stderr
    );
}

#[test]
fn ctl_usage_errors_exit_2() {
    // None of these gets as far as the network.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let env = [("SWITCHYARD_ADMIN", closed.as_str())];
    for args in [
        &["frobnicate"][..],
        &[],
        &["weights", "app"],
        &["weights", "app", "blue"],
        &["weights", "app", "blue=-1"],
        &["weights", "app", "blue=ten"],
        &["weights", "app", "=5"],
        &["switch", "app"],
        &["switch", "app", "green", "--wait-healthy", "soon"],
        &["weights", "app", "blue=1", "--if-match", "x"],
        &["--admin", "ftp://127.0.0.1:9900", "status"],
        &[
            "--admin",
            "https://127.0.0.1:9900",
            "--ca",
            "/nonexistent/ca.pem",
            "status",
        ],
    ] {
        let run = ctl(&env, args);
        assert_eq!(run.code, 2, "ctl {args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "ctl {args:?} said nothing");
    }
    let run = ctl(&env, &["weights", "app", "blue"]);
    assert!(run.stderr.contains("POOL=WEIGHT"), "{}", run.stderr);

    // Every subcommand has help.
    for sub in ["status", "weights", "switch", "reload", "clear-weights"] {
        let run = ctl(&[], &[sub, "--help"]);
        assert_eq!(run.code, 0, "{sub} --help");
        assert!(
            run.stdout.contains("Usage: switchyard ctl"),
            "{}",
            run.stdout
        );
    }
    let run = ctl(&[], &["--help"]);
    assert!(run.stdout.contains("plain HTTP"), "{}", run.stdout);
}

/// A TLS listener whose every request goes to the admin API, as nginx or Caddy would put it in
/// front of it; the certificate is `localhost.crt` (DNS:localhost, IP:127.0.0.1) of the test CA.
const TLS_CONFIG: &str = r#"
{server}
[[listeners]]
name = "https"
address = "127.0.0.1:{https}"
tls = true

[[certificates]]
cert = "{certs}/localhost.crt"
key = "{certs}/localhost.key"
# Also for clients without SNI: ctl sends none to https://127.0.0.1:PORT.
fallback = true

[[routes]]
host = "*"
service = "admin"

[services.admin.pools.api]
weight = 1
servers = ["127.0.0.1:{admin}"]

[admin]
address = "127.0.0.1:{admin}"
token = "{token}"
"#;

#[test]
fn ctl_speaks_https_with_a_private_ca() {
    // The admin API behind a TLS-terminating proxy (here switchyard's own TLS listener), trusted
    // through --ca or SWITCHYARD_ADMIN_CA.
    let (https, admin) = (port(), port());
    let _proxy = Proxy::start(
        bin!(),
        &fill(
            TLS_CONFIG,
            &[("https", &https), ("admin", &admin), ("token", &TOKEN)],
        ),
    );
    let ca = format!("{CERTS}/test-ca.crt");

    // --ca, by host name and by IP address (both in the certificate).
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{https}");
        let run = ctl(
            &[("SWITCHYARD_TOKEN", TOKEN)],
            &["--admin", &url, "--cacert", &ca, "status"],
        );
        assert_eq!(run.code, 0, "{url}: {}", run.stderr);
        assert!(
            run.stdout.contains("service \"admin\""),
            "{url}: {}",
            run.stdout
        );
    }

    // SWITCHYARD_ADMIN_CA, with a change through the TLS hop and the API's own error answers.
    let url = format!("https://localhost:{https}");
    let env = [
        ("SWITCHYARD_ADMIN", url.as_str()),
        ("SWITCHYARD_ADMIN_CA", ca.as_str()),
        ("SWITCHYARD_TOKEN", TOKEN),
    ];
    let run = ctl(&env, &["weights", "admin", "api=7"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("weights set: service \"admin\": api=7"),
        "{}",
        run.stdout
    );
    let run = ctl(&env, &["weights", "admin", "nope=1"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("no pool \"nope\""), "{}", run.stderr);
    let run = ctl(&env[..2], &["status"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("(set --token or SWITCHYARD_TOKEN)"),
        "{}",
        run.stderr
    );

    // Without the private CA the certificate is not trusted: exit 3, and the reason.
    let run = ctl(&[("SWITCHYARD_TOKEN", TOKEN)], &["--admin", &url, "status"]);
    assert_eq!(run.code, 3, "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the admin API at {url}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "the reason names the certificate: {}",
        run.stderr
    );

    // A CA file that is not one is a usage error (--ca is the old name of --cacert).
    let not_pem = format!("{CERTS}/README.md");
    let run = ctl(&[], &["--admin", &url, "--ca", &not_pem, "status"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot use the CA file"),
        "{}",
        run.stderr
    );
}

/// The world of [`world`] with the admin listener itself on TLS (`localhost.crt` of the test
/// CA), requiring a client certificate from the test CA when `mtls`.
fn tls_admin(mtls: bool) -> Running {
    let client_ca = if mtls {
        "client_ca = \"{certs}/test-ca.crt\"\n"
    } else {
        ""
    };
    world()
        .toml(&format!(
            "[admin.tls]\ncert = \"{{certs}}/localhost.crt\"\nkey = \"{{certs}}/localhost.key\"\n{client_ca}"
        ))
        .start(BIN)
}

#[test]
fn ctl_talks_to_an_admin_listener_with_tls_and_mtls() {
    let ca = format!("{CERTS}/test-ca.crt");
    let (cert, key) = (format!("{CERTS}/client.crt"), format!("{CERTS}/client.key"));
    let token = [("SWITCHYARD_TOKEN", TOKEN)];

    // TLS: the test CA through --cacert, by name and by address.
    let s = tls_admin(false);
    let port = s.admin_port();
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{port}");
        let run = ctl(&token, &["--admin", &url, "--cacert", &ca, "status", "app"]);
        assert_eq!(run.code, 0, "{url}: {run}");
        assert!(run.stdout.contains("service \"app\""), "{run}");
    }
    let https = format!("https://localhost:{port}");
    // The system's roots alone do not trust the test CA; plain HTTP to a TLS port gets no HTTP
    // answer: both exit 3.
    let run = ctl(&token, &["--admin", &https, "status"]);
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stderr.contains("cannot reach the admin API"), "{run}");
    let plain = format!("http://127.0.0.1:{port}");
    let run = ctl(&token, &["--admin", &plain, "status"]);
    assert_eq!(run.code, 3, "{run}");
    drop(s);

    // mTLS: the client certificate (client.crt, issued by the test CA for clientAuth) is the
    // way in; the bearer token is still checked after the handshake.
    let s = tls_admin(true);
    let https = format!("https://localhost:{}", s.admin_port());
    let env = [
        ("SWITCHYARD_ADMIN", https.as_str()),
        ("SWITCHYARD_ADMIN_CA", ca.as_str()),
        ("SWITCHYARD_TOKEN", TOKEN),
    ];
    let with_cert = |args: &[&str]| {
        let mut all = vec!["--cert", cert.as_str(), "--key", key.as_str()];
        all.extend_from_slice(args);
        ctl(&env, &all)
    };
    let run = with_cert(&["status", "app"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("service \"app\""), "{run}");
    let run = ctl(
        &[
            ("SWITCHYARD_ADMIN", https.as_str()),
            ("SWITCHYARD_ADMIN_CA", ca.as_str()),
            ("SWITCHYARD_ADMIN_CERT", cert.as_str()),
            ("SWITCHYARD_ADMIN_KEY", key.as_str()),
            ("SWITCHYARD_TOKEN", "wrong"),
        ],
        &["status"],
    );
    assert_eq!(run.code, 1, "the API said no: {run}");
    assert!(run.stderr.contains("wrong bearer token"), "{run}");

    // No client certificate: the handshake is refused, exit 3 (could not reach the API), and
    // a plain HTTPS client gets no answer either.
    let run = ctl(&env, &["status"]);
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stderr.contains("cannot reach the admin API"), "{run}");
    let refused = http1_client()
        .get(format!("{https}/health/live"))
        .send()
        .and_then(|r| r.error_for_status());
    assert!(refused.is_err(), "no client certificate, yet: {refused:?}");
    // A certificate of the right CA but not for clients (localhost.crt: serverAuth only).
    let server_cert = format!("{CERTS}/localhost.crt");
    let server_key = format!("{CERTS}/localhost.key");
    let run = ctl(
        &env,
        &["--cert", &server_cert, "--key", &server_key, "status"],
    );
    assert_eq!(run.code, 3, "{run}");

    // Usage: --cert without --key, a key that does not match the certificate.
    let run = ctl(&env, &["--cert", &cert, "status"]);
    assert_eq!(run.code, 2, "{run}");
    let run = ctl(&env, &["--cert", &cert, "--key", &server_key, "status"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("client certificate"), "{run}");

    // `status` shows an active rollout and maintenance, over mTLS.
    let run = with_cert(&[
        "rollout",
        "start",
        "app",
        "--canary",
        "green",
        "--steps",
        "10,100",
        "--interval",
        "1h",
    ]);
    assert_eq!(run.code, 0, "{run}");
    let run = with_cert(&["maintenance", "on", "app", "--allow", "10.0.0.0/8"]);
    assert_eq!(run.code, 0, "{run}");
    let run = with_cert(&["status", "app"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .contains("ROLLOUT 1: progressing, green at 10% (step 1/2), stable \"blue\""),
        "{run}"
    );
    assert!(run.stdout.contains("MAINTENANCE since"), "{run}");
    let run = with_cert(&["rollout", "abort", "app"]);
    assert_eq!(run.code, 0, "{run}");
    let run = with_cert(&["status"]);
    assert!(
        !run.stdout.contains("ROLLOUT"),
        "an ended rollout is not shown: {run}"
    );
}
