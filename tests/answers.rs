//! The edge's own answers over real sockets: CORS preflights answered at the edge (as browsers and curl send them), CORS and configured headers on every answer (the upstream's and Switchyard's own 404/413/429/502), request headers set and removed with variables, upstream headers removed, and redirects (listener and route, their codes).
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::net::SocketAddr;
use std::process::Command;

use testkit::*;

const BIN: Bin = testkit::bin!();

const APP: &str = "https://app.example.com";
const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Routes with CORS and headers; `{nginx}` is the port of an nginx upstream that says who it is.
const CORS_WORLD: &str = r#"
[limits.zones.tight]
key = "client_ip"
rate = "1r/h"
burst = 0

[defaults]
response_headers = { Strict-Transport-Security = "max-age=63072000; includeSubDomains" }
cors = { origins = ["https://app.example.com"] }

[[routes]]
host = "api.test"
service = "api"
max_body_size = "1KB"
cors = { origins = ["https://app.example.com", "https://*.example.org"], methods = ["GET", "POST", "PUT", "DELETE"], headers = ["Authorization", "Content-Type"], expose = ["X-Request-Id", "X-Seen-Host"], credentials = true, max_age = "10m" }
request_headers = { set = { X-Forwarded-Proto = "$scheme-edge", X-Client = "$client_ip", X-Original = "$request_uri", X-Normal = "$uri", X-Host = "$host", X-Rid = "$request_id", X-Static = "fixed $5" }, remove = ["X-Debug"] }

[routes.response_headers]
X-Seen-Host = "$host"
X-Seen-Uri = "$request_uri"
Strict-Transport-Security = "max-age=63072000; includeSubDomains"

[[routes]]
host = "limited.test"
service = "api"
limits = ["tight"]
cors = { origins = ["*"], methods = ["*"], headers = ["*"] }

[[routes]]
host = "dead.test"
service = "dead"
retry = { tries = 1 }

[[routes]]
host = "nginx.test"
service = "nginx"
response_headers_remove = ["Server", "X-Powered-By"]

[[routes]]
host = "nginx-kept.test"
service = "nginx"
cors = { origins = [] }

[services.dead.pools.main]
weight = 1
servers = ["{closed}"]

[services.nginx.pools.main]
weight = 1
servers = ["127.0.0.1:{nginx}"]
"#;

struct CorsWorld {
    s: Running,
    nginx: Nginx,
}

fn cors_world() -> CorsWorld {
    let nginx_port = port();
    let nginx = Nginx::start(
        &format!(
            "server {{ listen 127.0.0.1:{nginx_port}; location / {{ add_header X-Powered-By \"PHP/8.2\"; return 200 \"hello\\n\"; }} }}"
        ),
        &[nginx_port],
    );
    let s = World::new()
        .backend("blue")
        .pool("api", "blue", 1, &["blue"])
        .dead("closed")
        .toml(&CORS_WORLD.replace("{nginx}", &nginx_port.to_string()))
        .start(BIN);
    CorsWorld { s, nginx }
}

fn addr(s: &Running) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.http()))
}

/// A preflight exactly as Chrome sends it for `fetch(url, {method, headers: {Authorization,
/// Content-Type: application/json}, credentials: "include"})` from `origin`.
fn browser_preflight(s: &Running, host: &str, origin: &str, method: &str) -> RawResponse {
    let request = format!(
        "OPTIONS /v1/items?x=1 HTTP/1.1\r\n\
         Host: {host}\r\n\
         Connection: keep-alive\r\n\
         Accept: */*\r\n\
         Access-Control-Request-Method: {method}\r\n\
         Access-Control-Request-Headers: authorization,content-type\r\n\
         Origin: {origin}\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
         Sec-Fetch-Mode: cors\r\n\
         Sec-Fetch-Site: cross-site\r\n\
         Sec-Fetch-Dest: empty\r\n\
         Referer: {origin}/\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\r\n"
    );
    raw_request(addr(s), request.as_bytes())
}

fn vary_has(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[test]
fn preflight_is_answered_at_the_edge_as_a_browser_expects() {
    let w = cors_world();
    let s = &w.s;
    let blue = s.backend("blue");
    let r = browser_preflight(s, "api.test", APP, "PUT");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let vary = r.header("vary").unwrap_or_default();
    for token in [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ] {
        assert!(vary_has(vary, token), "Vary {vary:?} lacks {token}");
    }
    assert_eq!(r.header("strict-transport-security"), Some(HSTS));
    assert!(r.body.is_empty());

    // One wildcard label matches; two labels, another domain or another method do not: 403
    // without any CORS header.
    let r = browser_preflight(s, "api.test", "https://shop.example.org", "DELETE");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example.org")
    );
    for (origin, method) in [
        ("https://a.b.example.org", "PUT"),
        ("https://app.example.com.evil.test", "PUT"),
        ("http://app.example.com", "PUT"),
        (APP, "PATCH"),
    ] {
        let r = browser_preflight(s, "api.test", origin, method);
        assert_eq!(r.status, 403, "{origin} {method}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(r.header("access-control-allow-methods"), None, "{origin}");
        assert_eq!(r.json()["status"], 403);
    }

    // `["*"]` lists echo what the browser asks for; without credentials the origin is `*`.
    let r = browser_preflight(s, "limited.test", "https://anyone.test", "PATCH");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-methods"), Some("PATCH"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);

    // curl sends the same preflight and sees the same answer.
    let curl = peer("curl", "curl");
    let out = Command::new(curl)
        .args(["-sS", "-i", "-X", "OPTIONS", "--max-time", "10"])
        .args(["-H", &format!("Origin: {APP}")])
        .args(["-H", "Access-Control-Request-Method: POST"])
        .args([
            "-H",
            "Access-Control-Request-Headers: content-type,authorization",
        ])
        .args([
            "-H",
            "Sec-Fetch-Mode: cors",
            "-H",
            "Sec-Fetch-Site: cross-site",
        ])
        .args(["-H", "Sec-Fetch-Dest: empty"])
        .args(["--resolve", &format!("api.test:{}:127.0.0.1", s.http())])
        .arg(format!("http://api.test:{}/v1/items", s.http()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 204"), "curl: {text}");
    assert!(
        text.contains(&format!("access-control-allow-origin: {APP}")),
        "curl: {text}"
    );
    assert!(
        text.contains("access-control-allow-credentials: true"),
        "curl: {text}"
    );

    // None of the preflights reached the upstream; a plain OPTIONS (no Origin) does.
    assert_eq!(blue.requests(), 0, "a preflight reached the upstream");
    let resp = http1_client()
        .request(reqwest::Method::OPTIONS, s.url("api.test", "/v1/items"))
        .send()
        .unwrap();
    assert_eq!(json_body(resp)["method"], "OPTIONS");
    assert_eq!(blue.requests(), 1);
}

#[test]
fn actual_requests_get_cors_headers_for_allowed_origins_only() {
    let w = cors_world();
    let s = &w.s;
    let client = http1_client();
    let get = |origin: Option<&str>| {
        let mut req = client.get(s.url("api.test", "/v1/items"));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send().unwrap()
    };
    let resp = get(Some(APP));
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), APP);
    assert_eq!(header(&resp, "access-control-allow-credentials"), "true");
    assert_eq!(
        header(&resp, "access-control-expose-headers"),
        "x-request-id, x-seen-host"
    );
    assert!(vary_has(&header(&resp, "vary"), "Origin"));
    assert_eq!(json_body(resp)["backend"], "blue");

    for origin in [Some("https://evil.test"), None] {
        let resp = get(origin);
        assert_eq!(resp.status(), 200);
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        ] {
            assert_eq!(header(&resp, name), "", "{origin:?}: {name}");
        }
        // The answer depends on the Origin, so caches must know even when there was none.
        assert!(vary_has(&header(&resp, "vary"), "Origin"), "{origin:?}");
    }
}

#[test]
fn own_answers_carry_cors_and_configured_headers() {
    let w = cors_world();
    let s = &w.s;
    let client = http1_client();

    // 413: the declared body is over the route's 1 KB.
    let resp = client
        .post(s.url("api.test", "/upload?big=1"))
        .header("Origin", APP)
        .body(vec![b'x'; 2048])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(header(&resp, "access-control-allow-origin"), APP);
    assert_eq!(header(&resp, "access-control-allow-credentials"), "true");
    assert_eq!(header(&resp, "strict-transport-security"), HSTS);
    // Variables render on own answers too.
    assert_eq!(header(&resp, "x-seen-host"), "api.test");
    assert_eq!(header(&resp, "x-seen-uri"), "/upload?big=1");

    // 429: the second request in the hour.
    let limited = |origin: &str| {
        client
            .get(s.url("limited.test", "/"))
            .header("Origin", origin)
            .send()
            .unwrap()
    };
    assert_eq!(limited("https://one.test").status(), 200);
    let resp = limited("https://two.test");
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert_eq!(header(&resp, "strict-transport-security"), HSTS);
    assert!(!header(&resp, "retry-after").is_empty());

    // 404 (no route): `[defaults]` CORS and headers.
    let resp = client
        .get(s.url("nowhere.test", "/"))
        .header("Origin", APP)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "access-control-allow-origin"), APP);
    assert_eq!(header(&resp, "strict-transport-security"), HSTS);

    // 502: the upstream refuses connections.
    let resp = client
        .get(s.url("dead.test", "/"))
        .header("Origin", APP)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(header(&resp, "access-control-allow-origin"), APP);
    assert_eq!(header(&resp, "strict-transport-security"), HSTS);
    assert_proxy_error(&json_body(resp), 502);

    // A disallowed origin gets the error without CORS headers.
    let resp = client
        .get(s.url("dead.test", "/"))
        .header("Origin", "https://evil.test")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(header(&resp, "access-control-allow-origin"), "");
}

#[test]
fn request_headers_are_set_and_removed_with_variables() {
    let w = cors_world();
    let s = &w.s;
    let request = format!(
        "GET /x//y/%7Euser?q=1&r HTTP/1.1\r\nHost: API.test:{}\r\nX-Debug: 1\r\nX-Request-Id: rid-42\r\nConnection: close\r\n\r\n",
        s.http()
    );
    let r = raw_request(addr(s), request.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let h = &body["headers"];
    assert_eq!(
        h["x-forwarded-proto"], "http-edge",
        "the route replaces ours"
    );
    assert_eq!(h["x-client"], "127.0.0.1");
    assert_eq!(h["x-original"], "/x//y/%7Euser?q=1&r");
    assert_eq!(h["x-normal"], "/x/y/~user");
    assert_eq!(h["x-host"], "api.test");
    assert_eq!(h["x-rid"], "rid-42");
    assert_eq!(h["x-static"], "fixed $5");
    assert!(h.get("x-debug").is_none(), "X-Debug must be removed: {h}");
    // Switchyard's own forwarding headers are still there.
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(r.header("x-seen-host"), Some("api.test"));
    assert_eq!(r.header("x-seen-uri"), Some("/x//y/%7Euser?q=1&r"));
}

#[test]
fn upstream_response_headers_are_removed() {
    let w = cors_world();
    let s = &w.s;
    let client = http1_client();
    let kept = client.get(s.url("nginx-kept.test", "/")).send().unwrap();
    assert_eq!(kept.status(), 200);
    assert!(header(&kept, "server").starts_with("nginx"), "{kept:?}");
    assert_eq!(header(&kept, "x-powered-by"), "PHP/8.2");
    // `cors = { origins = [] }` turned `[defaults]`' CORS off for this route.
    assert!(!vary_has(&header(&kept, "vary"), "Origin"));

    let resp = client.get(s.url("nginx.test", "/")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "server"), "");
    assert_eq!(header(&resp, "x-powered-by"), "");
    assert_eq!(header(&resp, "strict-transport-security"), HSTS);
    assert_eq!(resp.text().unwrap(), "hello\n");
    assert!(w.nginx.logged(|l| l.contains("\"GET / HTTP/1.1\" 200")));
}

/// Listeners: "plain" redirects everything to "https" with 301; "http" redirects only its
/// routes that ask, with 307.
fn redirect_world() -> Running {
    let w = World::bare()
        .listener("plain", false)
        .http()
        .https()
        .fallback_certificate("example.com")
        .backend("blue")
        .pool("api", "blue", 1, &["blue"]);
    let https = w.port("https");
    w.listener_option("plain", "redirect_https", true)
        .listener_option("plain", "https_port", i64::from(https))
        .listener_option("plain", "redirect_code", 301)
        .listener_option("http", "redirect_code", 307)
        .toml(
            r#"
[defaults]
response_headers = { Strict-Transport-Security = "max-age=63072000; includeSubDomains" }

[[routes]]
host = "www.example.com"
redirect = { to = "https://example.com$request_uri" }

[[routes]]
host = "old.example.com"
path = "/docs"
redirect = { to = "https://docs.example.com/manual$path$is_args$args", code = 308 }

[[routes]]
host = "temp.example.com"
redirect = { to = "/maintenance", code = 302 }

[[routes]]
host = "secure.example.com"
service = "api"
redirect_https = true

[[routes]]
host = "example.com"
service = "api"
"#,
        )
        .start(BIN)
}

#[test]
fn redirects_on_routes_and_listeners_with_their_codes() {
    let s = redirect_world();
    let client = http1_client();
    let (http, plain, https) = (s.http(), s.port("plain"), s.https());
    let cases = [
        (
            http,
            "www.example.com",
            "/a/b?c=1",
            301,
            "https://example.com/a/b?c=1".to_string(),
        ),
        (
            http,
            "old.example.com",
            "/docs/guide/x?v=2",
            308,
            "https://docs.example.com/manual/guide/x?v=2".to_string(),
        ),
        (
            http,
            "old.example.com",
            "/docs",
            308,
            "https://docs.example.com/manual/".to_string(),
        ),
        (
            http,
            "temp.example.com",
            "/anything",
            302,
            "/maintenance".to_string(),
        ),
        // A route's redirect_https takes its listener's redirect_code.
        (
            http,
            "secure.example.com",
            "/p?q",
            307,
            "https://secure.example.com/p?q".to_string(),
        ),
        // A redirecting listener redirects every host, routed or not.
        (
            plain,
            "example.com",
            "/x?y=1",
            301,
            format!("https://example.com:{https}/x?y=1"),
        ),
        (
            plain,
            "unrouted.test",
            "/z",
            301,
            format!("https://unrouted.test:{https}/z"),
        ),
    ];
    for (port, host, path, code, location) in cases {
        let resp = client
            .get(format!("http://{host}:{port}{path}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), code, "{host}{path}");
        assert_eq!(header(&resp, "location"), location, "{host}{path}");
        assert_eq!(header(&resp, "strict-transport-security"), HSTS, "{host}");
    }
    // An unrouted host on a listener that does not redirect is still a 404.
    let resp = client
        .get(format!("http://unrouted.test:{http}/z"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        s.backend("blue").requests(),
        0,
        "a redirect reached the upstream"
    );
    let resp = client
        .get(format!("http://example.com:{http}/ok"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body(resp)["path"], "/ok");
}

#[test]
fn cors_and_header_templates_follow_a_reload() {
    let mut s = World::new()
        .catch_all_blue()
        .toml(
            "[defaults]\ncors = { origins = [\"https://a.test\"] }\n\
             response_headers = { X-Edge = \"one $host\" }",
        )
        .start(BIN);
    let client = http1_client();
    let url = s.url("x.test", "/");
    let allowed = |origin: &str| {
        let resp = client.get(&url).header("Origin", origin).send().unwrap();
        (
            header(&resp, "access-control-allow-origin"),
            header(&resp, "x-edge"),
        )
    };
    assert_eq!(
        allowed("https://a.test"),
        ("https://a.test".into(), "one x.test".into())
    );
    assert_eq!(allowed("https://b.test").0, "");
    let config = s.config_with(|w| {
        w.toml(
            "[defaults]\ncors = { origins = [\"https://b.test\"] }\n\
             response_headers = { X-Edge = \"two $request_uri\" }",
        )
    });
    s.proxy.reload_with(&config);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || allowed(
            "https://b.test"
        )
        .0
            == "https://b.test"),
        "the reload did not bring the new origin"
    );
    assert_eq!(allowed("https://b.test").1, "two /");
    assert_eq!(allowed("https://a.test").0, "");
}
