//! Access control over real sockets: allow/deny in the order written (the socket peer and a client
//! named by a trusted proxy's X-Forwarded-For), basic auth against htpasswd files written by
//! Apache's own `htpasswd` in each of its formats (and a changed file picked up at reload), forward
//! auth against nginx as the auth service, ACME challenges exempt from all of it, and config
//! errors with file:line:col.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Runs Apache's `htpasswd` with `args`; it must succeed.
fn htpasswd(args: &[&str]) {
    let tool = peer("htpasswd", "apache2-utils");
    let out = Command::new(tool)
        .args(args)
        .output()
        .expect("run htpasswd");
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(host: &str, port: u16, path: &str) -> reqwest::blocking::RequestBuilder {
    http1_client().get(format!("http://{host}:{port}{path}"))
}

/// The header `name` the echo backend saw, or "" when it saw none.
fn seen_header(body: &serde_json::Value, name: &str) -> String {
    body["headers"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn allow_and_deny_in_the_order_written() {
    let w = World::new()
        .catch_all_blue()
        .route_with(
            Route::new("local.test", "api").set(
                "access",
                vec!["allow 127.0.0.1", "deny all"]
                    .into_iter()
                    .map(toml::Value::from)
                    .collect::<Vec<_>>(),
            ),
        )
        .route_with(
            Route::new("order.test", "api").set(
                "access",
                vec![
                    "allow 198.51.100.7",
                    "deny 198.51.100.0/24",
                    "deny 127.0.0.1",
                ]
                .into_iter()
                .map(toml::Value::from)
                .collect::<Vec<_>>(),
            ),
        )
        .toml(
            r#"
[limits]
trusted_proxies = ["127.0.0.0/8"]

[defaults]
response_headers = { "Strict-Transport-Security" = "max-age=63072000" }
"#,
        )
        .start(BIN);
    let port = w.http();

    // The socket peer 127.0.0.1 is allowed by the first rule.
    let resp = get("local.test", port, "/").send().unwrap();
    assert_eq!(resp.status(), 200);
    // The same socket, but a trusted proxy names another client: the first rule misses, `deny
    // all` refuses it, with the JSON body and the configured headers.
    let resp = get("local.test", port, "/x")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        header(&resp, "strict-transport-security"),
        "max-age=63072000"
    );
    assert_proxy_error(&json_body(resp), 403);

    // First match wins: .7 is allowed before its /24 is denied; 127.0.0.1 is denied by the third.
    let via = |xff: Option<&str>| {
        let mut req = get("order.test", port, "/");
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(via(Some("198.51.100.7")), 200);
    assert_eq!(via(Some("198.51.100.8")), 403);
    assert_eq!(via(None), 403);
    // No rule matches another client: allowed, as nginx does.
    assert_eq!(via(Some("192.0.2.1")), 200);
    // The rightmost untrusted entry is the client: a spoofed left entry does not help.
    assert_eq!(via(Some("198.51.100.7, 198.51.100.8")), 403);

    // ACME HTTP-01 paths pass the rules (no challenge pending: the upstream answers).
    let resp = get("order.test", port, "/.well-known/acme-challenge/token")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body(resp)["backend"], "blue");
}

/// Users made by `htpasswd` in each format it writes, with their passwords.
const USERS: &[(&str, &str, &str)] = &[
    ("md5", "-m", "apr1 pass"),
    ("bcrypt", "-B", "bcrypt pass"),
    ("sha1", "-s", "sha1 pass"),
    ("crypt", "-d", "des8char"),
    ("sha256", "-2", "sha-256 pass"),
    ("sha512", "-5", "sha-512 pass"),
];

fn htpasswd_file(dir: &Path) -> String {
    let file = dir.join("users.htpasswd");
    let file = file.to_str().unwrap().to_string();
    // The first one with `-c` and no format flag: htpasswd's default (MD5, `$apr1$`).
    htpasswd(&["-cb", &file, "default", "default pass"]);
    for (user, flag, password) in USERS {
        htpasswd(&["-b", flag, &file, user, password]);
    }
    file
}

#[test]
fn basic_auth_with_every_htpasswd_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = htpasswd_file(dir.path());
    let text = std::fs::read_to_string(&file).unwrap();
    for prefix in [
        "default:$apr1$",
        "md5:$apr1$",
        "bcrypt:$2y$",
        "sha1:{SHA}",
        "sha256:$5$",
        "sha512:$6$",
    ] {
        assert!(text.contains(prefix), "no {prefix} line in\n{text}");
    }
    let w = World::new()
        .catch_all_blue()
        .toml(&format!(
            r#"
[defaults]
basic_auth = {{ realm = "Staff only", file = "{file}" }}

[[routes]]
host = "open.test"
service = "api"
basic_auth = false
"#
        ))
        .start(BIN);
    let port = w.http();
    let users = USERS
        .iter()
        .map(|(u, _, p)| (*u, *p))
        .chain([("default", "default pass")]);
    for (user, password) in users {
        let resp = get("app.test", port, "/")
            .basic_auth(user, Some(password))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{user} with the right password");
        assert_eq!(json_body(resp)["backend"], "blue");
        let resp = get("app.test", port, "/")
            .basic_auth(user, Some(format!("x{password}")))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 401, "{user} with a wrong password");
    }
    // No credentials, an unknown user, another scheme: 401 with the challenge and the JSON body.
    for req in [
        get("app.test", port, "/"),
        get("app.test", port, "/").basic_auth("nobody", Some("apr1 pass")),
        get("app.test", port, "/").bearer_auth("token"),
    ] {
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            header(&resp, "www-authenticate"),
            "Basic realm=\"Staff only\", charset=\"UTF-8\""
        );
        assert_proxy_error(&json_body(resp), 401);
    }
    // A route that turns the defaults' basic auth off, and an ACME challenge path.
    assert_eq!(get("open.test", port, "/").send().unwrap().status(), 200);
    let resp = get("app.test", port, "/.well-known/acme-challenge/abc")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn reload_picks_up_a_changed_htpasswd_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users").to_str().unwrap().to_string();
    htpasswd(&["-cb", &file, "alice", "old secret"]);
    let mut w = World::new()
        .catch_all_blue()
        .toml(&format!(
            "[defaults]\nbasic_auth = {{ realm = \"r\", file = \"{file}\" }}\n"
        ))
        .start(BIN);
    let port = w.http();
    let status = |password: &str| {
        get("app.test", port, "/")
            .basic_auth("alice", Some(password))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status("old secret"), 200);
    assert_eq!(status("new secret"), 401);
    htpasswd(&["-bB", &file, "alice", "new secret"]);
    // Read at reload, never on the request path.
    assert_eq!(status("old secret"), 200);
    let config = w.config();
    w.proxy.reload_with(&config);
    assert!(
        wait_until(Duration::from_secs(10), || status("new secret") == 200),
        "the changed file was not picked up\n{}",
        w.proxy.stderr()
    );
    assert_eq!(status("old secret"), 401);

    // A file that no longer parses: the reload is rejected and the last good users stay.
    std::fs::write(&file, "alice\n").unwrap();
    w.proxy.reload_with(&config);
    assert!(
        w.proxy
            .wait_for_log("htpasswd file", Duration::from_secs(10)),
        "{}",
        w.proxy.stderr()
    );
    assert!(w.proxy.stderr().contains(": line 1: expected user:hash"));
    assert_eq!(status("new secret"), 200);
}

/// nginx as the auth service: `Bearer good` passes as user alice (and the service says what it
/// saw of the original request); anything else is refused with a challenge, a cookie and a body.
fn auth_service(port: u16) -> Nginx {
    Nginx::start(
        &format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        location = /auth {{
            if ($http_authorization = "Bearer good") {{
                add_header X-User alice;
                add_header X-Auth-Saw "$http_x_forwarded_method $http_x_forwarded_proto $http_x_forwarded_host $http_x_forwarded_uri $http_x_forwarded_for $http_cookie $http_x_tenant";
                add_header X-Ignored yes;
                return 200 "ok";
            }}
            add_header WWW-Authenticate 'Bearer realm="test"' always;
            add_header Set-Cookie "next=/app" always;
            add_header X-Ignored yes always;
            return 401 "login first\n";
        }}
        location = /forbidden {{
            return 403 "not you\n";
        }}
        location = /broken {{
            return 302 "/elsewhere";
        }}
    }}
"#
        ),
        &[port],
    )
}

#[test]
fn forward_auth_against_a_real_auth_service() {
    let auth_port = port();
    let _nginx = auth_service(auth_port);
    let slow = Backend::builder("slow")
        .delay(Duration::from_secs(3))
        .spawn()
        .unwrap();
    // An echo backend as an auth service that lets everything through: it counts connections.
    let counting = Backend::spawn("counting").unwrap();
    let fa = |path: &str, extra: &str| {
        format!(
            "{{ url = \"http://127.0.0.1:{auth_port}{path}\", response_headers = [\"X-User\", \"X-Auth-Saw\"], request_headers = [\"X-Tenant\"]{extra} }}"
        )
    };
    let w = World::new()
        .catch_all_blue()
        .toml(&format!(
            r#"
[defaults]
response_headers = {{ "X-Frame-Options" = "DENY" }}

[[routes]]
host = "app.test"
service = "api"
forward_auth = {}

[[routes]]
host = "forbidden.test"
service = "api"
forward_auth = {}

[[routes]]
host = "broken.test"
service = "api"
forward_auth = {}

[[routes]]
host = "down.test"
service = "api"
forward_auth = {{ url = "http://{}/auth" }}

[[routes]]
host = "kept.test"
service = "api"
forward_auth = {{ url = "http://{}/check" }}

[[routes]]
host = "slow.test"
service = "api"
forward_auth = {{ url = "http://{}/", timeout = "300ms" }}
"#,
            fa("/auth", ""),
            fa("/forbidden", ""),
            fa("/broken", ""),
            closed_addr(),
            counting.addr,
            slow.addr,
        ))
        .start(BIN);
    let port = w.http();

    // 2xx: through, with the chosen headers copied over any the client sent; others not copied.
    let resp = http1_client()
        .post(format!("http://app.test:{port}/orders/7?full=1"))
        .bearer_auth("good")
        .header("cookie", "sid=42")
        .header("x-tenant", "acme")
        .header("x-user", "mallory")
        .body("payload")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = json_body(resp);
    assert_eq!(body["backend"], "blue");
    assert_eq!(seen_header(&body, "x-user"), "alice");
    assert_eq!(
        seen_header(&body, "x-auth-saw"),
        format!("POST http app.test:{port} /orders/7?full=1 127.0.0.1 sid=42 acme")
    );
    assert_eq!(seen_header(&body, "x-ignored"), "");
    assert_eq!(body["body_bytes"], 7);

    // 401: the auth service's answer goes back, with its challenge and cookie (and our headers).
    let resp = get("app.test", port, "/orders")
        .bearer_auth("bad")
        .header("x-user", "mallory")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "www-authenticate"), "Bearer realm=\"test\"");
    assert_eq!(header(&resp, "set-cookie"), "next=/app");
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    assert_eq!(header(&resp, "x-ignored"), "");
    assert!(is_request_id(&header(&resp, "x-request-id")));
    assert_eq!(resp.text().unwrap(), "login first\n");

    // 403 likewise.
    let resp = get("forbidden.test", port, "/").send().unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.text().unwrap(), "not you\n");

    // Another answer, no answer, too slow an answer: 500, as nginx's auth_request answers.
    for (host, why) in [
        ("broken.test", "answered 302"),
        ("down.test", "unreachable"),
        ("slow.test", "no answer within"),
    ] {
        let resp = get(host, port, "/").send().unwrap();
        assert_eq!(resp.status(), 500, "{host}");
        let body = json_body(resp);
        assert_proxy_error(&body, 500);
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(why), "{host}: {error}");
    }

    // The subrequests reuse their connection to the auth service.
    for _ in 0..5 {
        assert_eq!(get("kept.test", port, "/").send().unwrap().status(), 200);
    }
    assert_eq!(counting.requests(), 5);
    assert_eq!(counting.connections(), 1);

    // ACME challenges never ask the auth service.
    let resp = get("down.test", port, "/.well-known/acme-challenge/abc")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A config for `check` with `route` as its one route's extra settings.
fn with_route(route: &str) -> String {
    format!(
        r#"[server]
threads = 1

[[listeners]]
name = "http"
address = "127.0.0.1:18080"

[[routes]]
host = "*"
service = "api"
{route}

[services.api.pools.blue]
weight = 1
servers = ["127.0.0.1:9001"]
"#
    )
}

#[test]
fn config_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.htpasswd");
    std::fs::write(
        &bad,
        "# staff\nalice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbob:plaintext\n",
    )
    .unwrap();
    let missing = dir.path().join("missing");
    let cases = [
        (
            r#"access = ["allow 10.0.0.0/8", "permit 10.1.0.0/16"]"#.to_string(),
            "11:31: unknown access verb \"permit\"",
        ),
        (
            r#"access = ["deny 10.0.0.0/33"]"#.to_string(),
            "11:11: invalid network \"10.0.0.0/33\"",
        ),
        (
            format!(
                r#"basic_auth = {{ realm = "x", file = "{}" }}"#,
                missing.display()
            ),
            "11:36: cannot read htpasswd file",
        ),
        (
            format!(r#"basic_auth = {{ file = "{}" }}"#, bad.display()),
            "11:23: htpasswd file",
        ),
        (
            r#"forward_auth = { url = "ftp://auth/" }"#.to_string(),
            "11:24: invalid forward_auth url",
        ),
        (
            r#"forward_auth = { url = "http://auth/", response_headers = ["Content-Length"] }"#
                .to_string(),
            "11:60: header \"content-length\" cannot be copied",
        ),
        (
            r#"basic_auth = { realm = "x" }"#.to_string(),
            "11:14: basic_auth needs `file`",
        ),
    ];
    for (route, expected) in cases {
        let (code, _, stderr) = check(BIN, &with_route(&route));
        assert_eq!(code, 1, "{route}\n{stderr}");
        assert!(
            stderr.contains(&format!("switchyard.toml:{expected}")),
            "{route}: expected {expected:?} in\n{stderr}"
        );
    }
    let (_, _, stderr) = check(
        BIN,
        &with_route(&format!(r#"basic_auth = {{ file = "{}" }}"#, bad.display())),
    );
    assert!(
        stderr.contains(": line 3: unknown password hash"),
        "{stderr}"
    );
    let (code, stdout, stderr) = check(
        BIN,
        &with_route(r#"access = ["allow 2001:db8::/32", "deny all"]"#),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}
