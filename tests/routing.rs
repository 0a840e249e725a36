//! Route selection end to end: host matching, path prefixes, strip_prefix, 404s and weighted pools.
#![allow(clippy::unwrap_used)] // tests unwrap freely

mod support;

use support::*;

/// GETs `url`, expects 200 from a backend, and returns (backend name, path the backend saw).
fn hit(client: &reqwest::blocking::Client, url: &str) -> (String, String) {
    let resp = client
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    let via_header = header(&resp, "x-backend");
    let body = json_body(resp);
    let backend = body["backend"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        via_header, backend,
        "x-backend header and body disagree for {url}"
    );
    (
        backend,
        body["path"].as_str().unwrap_or_default().to_string(),
    )
}

/// Starts a proxy with `routes` (its `[[routes]]`) and, for each of `services`, a backend of that
/// name and a service of that name whose one pool is just that backend (see [`one_server_service`]).
/// Returns the proxy's http port, the proxy and the backends, in the order of `services`.
fn start(routes: &str, services: &[&str]) -> (u16, Proxy, Vec<Backend>) {
    let http = free_port();
    let backends: Vec<Backend> = services
        .iter()
        .map(|name| Backend::spawn(name).unwrap())
        .collect();
    let mut config = format!("{{server}}\n{{http_listener}}\n{routes}");
    for (name, backend) in services.iter().zip(&backends) {
        config += &format!("\n{}", one_server_service(name, backend.addr));
    }
    let proxy = Proxy::start(&fill(&config, &[("http", &http)]));
    (http, proxy, backends)
}

const HOSTS: &str = r#"
[[routes]]
host = "exact.example.com"
service = "exact"

[[routes]]
host = "*.example.com"
service = "wild"

[[routes]]
host = "*.deep.example.com"
service = "deep"

[[routes]]
host = "*"
service = "other"
"#;

#[test]
fn exact_wildcard_and_catch_all_hosts() {
    let (http, _proxy, _backends) = start(HOSTS, &["exact", "wild", "deep", "other"]);
    let client = http1_client();
    let cases = [
        ("exact.example.com", "exact"),
        ("a.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("deep.example.com", "wild"),
        ("x.deep.example.com", "deep"),
        ("y.x.deep.example.com", "deep"),
        ("example.com", "other"),
        ("notexample.com", "other"),
        ("unknown.test", "other"),
    ];
    for (host, expected) in cases {
        let (backend, path) = hit(&client, &format!("http://{host}:{http}/where?am=i"));
        assert_eq!(backend, expected, "host {host}");
        assert_eq!(path, "/where?am=i", "host {host}");
    }
}

// The routes are declared neither shortest- nor longest-first, so first-match and last-match
// implementations both fail.
const PATHS: &str = r#"
[[routes]]
host = "api.test"
service = "root"

[[routes]]
host = "api.test"
path = "/v1/auth"
strip_prefix = true
service = "auth"

[[routes]]
host = "api.test"
path = "/v1"
service = "v1"
"#;

#[test]
fn longest_path_prefix_wins_and_strip_prefix() {
    let (http, _proxy, _backends) = start(PATHS, &["root", "auth", "v1"]);
    let client = http1_client();
    let cases = [
        ("/v1/auth/login?user=x", "auth", "/login?user=x"),
        ("/v1/auth/a/b", "auth", "/a/b"),
        ("/v1/auth", "auth", "/"),
        ("/v1/auth/", "auth", "/"),
        ("/v1/authors", "v1", "/v1/authors"),
        ("/v1/x/y?z=1", "v1", "/v1/x/y?z=1"),
        ("/v1", "v1", "/v1"),
        ("/v2", "root", "/v2"),
        ("/", "root", "/"),
    ];
    for (path, expected_backend, expected_path) in cases {
        let (backend, seen) = hit(&client, &format!("http://api.test:{http}{path}"));
        assert_eq!(backend, expected_backend, "request path {path}");
        assert_eq!(seen, expected_path, "path the backend saw for {path}");
    }
}

const ONLY_A: &str = r#"
[[routes]]
host = "a.example.com"
service = "api"
"#;

#[test]
fn no_matching_route_is_a_json_404() {
    let (http, _proxy, backends) = start(ONLY_A, &["api"]);
    let client = http1_client();

    let (backend, _) = hit(&client, &format!("http://a.example.com:{http}/"));
    assert_eq!(backend, "api");

    for host in ["b.example.com", "example.com", "a.example.com.evil.test"] {
        let resp = client
            .get(format!("http://{host}:{http}/x"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 404, "host {host}");
        assert!(
            header(&resp, "content-type").starts_with("application/json"),
            "host {host}"
        );
        let request_id = header(&resp, "x-request-id");
        let body = json_body(resp);
        assert_proxy_error(&body, 404);
        assert_eq!(
            body["request_id"],
            request_id.as_str(),
            "request_id in body vs x-request-id header"
        );
    }
    assert_eq!(
        backends[0].requests(),
        1,
        "unrouted requests must not reach a backend"
    );
}

/// Starts backends blue and green and a proxy on [`BLUE_GREEN`] with these weights; returns the
/// proxy's http port, the proxy and the backends.
fn start_split(blue_weight: u32, green_weight: u32) -> (u16, Proxy, Backend, Backend) {
    let blue = Backend::spawn("blue").unwrap();
    let green = Backend::spawn("green").unwrap();
    let http = free_port();
    let config = blue_green(http, &blue, &green, (blue_weight, green_weight), "");
    (http, Proxy::start(&config), blue, green)
}

/// Sends `n` requests and counts how many each backend answered: (blue, green).
fn split(http: u16, n: usize) -> (usize, usize) {
    let client = http1_client();
    let (mut blue, mut green) = (0, 0);
    for i in 0..n {
        let (backend, _) = hit(&client, &format!("http://split.test:{http}/{i}"));
        match backend.as_str() {
            "blue" => blue += 1,
            "green" => green += 1,
            other => panic!("unexpected backend {other}"),
        }
    }
    (blue, green)
}

#[test]
fn weighted_split_80_20() {
    let (http, _proxy, _blue, _green) = start_split(80, 20);
    let (b, g) = split(http, 1000);
    assert_eq!(b + g, 1000);
    // 80 % ± 5 percentage points (about 4 standard deviations for a random split).
    assert!(
        (750..=850).contains(&b),
        "blue got {b} of 1000, green {g}; expected 800 ± 50"
    );
}

#[test]
fn weight_zero_pool_gets_no_request() {
    let (http, _proxy, _blue, green) = start_split(1, 0);
    let (b, g) = split(http, 500);
    assert_eq!((b, g), (500, 0));
    assert_eq!(
        green.requests(),
        0,
        "the weight-0 pool's server was contacted"
    );
}
