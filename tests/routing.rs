//! Route selection end to end: host matching, path prefixes, strip_prefix, 404s and weighted pools.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use testkit::*;

const BIN: Bin = testkit::bin!();

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

/// Starts a proxy with `routes` and, for each of `services`, a backend of that name and a service
/// of that name whose one pool, "main", is just that backend.
fn start(routes: Vec<Route>, services: &[&str]) -> Running {
    let mut world = World::new();
    for route in routes {
        world = world.route_with(route);
    }
    for name in services {
        world = world.backend(name).pool(name, "main", 1, &[name]);
    }
    world.start(BIN)
}

fn hosts() -> Vec<Route> {
    vec![
        Route::new("exact.example.com", "exact"),
        Route::new("*.example.com", "wild"),
        Route::new("*.deep.example.com", "deep"),
        Route::new("*", "other"),
    ]
}

#[test]
fn exact_wildcard_and_catch_all_hosts() {
    let w = start(hosts(), &["exact", "wild", "deep", "other"]);
    let http = w.http();
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
fn paths() -> Vec<Route> {
    vec![
        Route::new("api.test", "root"),
        Route::new("api.test", "auth")
            .path("/v1/auth")
            .set("strip_prefix", true),
        Route::new("api.test", "v1").path("/v1"),
    ]
}

#[test]
fn longest_path_prefix_wins_and_strip_prefix() {
    let w = start(paths(), &["root", "auth", "v1"]);
    let http = w.http();
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

#[test]
fn no_matching_route_is_a_json_404() {
    let w = start(vec![Route::new("a.example.com", "api")], &["api"]);
    let http = w.http();
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
        w.backend("api").requests(),
        1,
        "unrouted requests must not reach a backend"
    );
}

/// [`World::blue_green`] with these weights.
fn start_split(blue_weight: u32, green_weight: u32) -> Running {
    World::blue_green()
        .weights("api", &[("blue", blue_weight), ("green", green_weight)])
        .start(BIN)
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
    let w = start_split(80, 20);
    let (b, g) = split(w.http(), 1000);
    assert_eq!(b + g, 1000);
    // 80 % ± 5 percentage points (about 4 standard deviations for a random split).
    assert!(
        (750..=850).contains(&b),
        "blue got {b} of 1000, green {g}; expected 800 ± 50"
    );
}

#[test]
fn weight_zero_pool_gets_no_request() {
    let w = start_split(1, 0);
    let (b, g) = split(w.http(), 500);
    assert_eq!((b, g), (500, 0));
    assert_eq!(
        w.backend("green").requests(),
        0,
        "the weight-0 pool's server was contacted"
    );
}
