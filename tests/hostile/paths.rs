//! Path normalisation: spellings of a protected path that dodge a prefix match (dot segments,
//! doubled slashes, escaped letters) must still hit the route and its rate-limit zone, the
//! upstream gets the normalised path, and ambiguous forms (backslash, `..;`) are refused.

use std::net::SocketAddr;

use crate::raw_backend::RawBackend;
use testkit::*;

use crate::wire::*;
use crate::BIN;

/// `/v1/auth` has its own zone (one request a minute per X-Api-Key, no burst), `/` none.
const CONFIG: &str = r#"
{server}{server_extra}
{http_listener}
[limits.zones.auth]
key = "header:X-Api-Key"
rate = "1r/m"
burst = 0

[[routes]]
host = "*"
service = "api"

[[routes]]
host = "*"
path = "/v1/auth"
service = "api"
limits = ["auth"]

{routes_extra}

[services.api.pools.main]
weight = 1
servers = ["{raw}"]
"#;

struct Rig {
    backend: RawBackend,
    _proxy: Proxy,
    addr: SocketAddr,
}

fn rig(server_extra: &str, routes_extra: &str) -> Rig {
    let backend = RawBackend::spawn();
    let http = port();
    let proxy = Proxy::start(
        BIN,
        &fill(
            CONFIG,
            &[
                ("http", &http),
                ("raw", &backend.addr),
                ("server_extra", &server_extra),
                ("routes_extra", &routes_extra),
            ],
        ),
    );
    Rig {
        backend,
        _proxy: proxy,
        addr: local(http),
    }
}

/// What one request got: its answer and the target the upstream saw (None: nothing forwarded).
struct Hit {
    response: RawResponse,
    upstream: Option<String>,
}

impl Rig {
    /// `GET target` on host `host` with `X-Api-Key: key`, on a fresh connection.
    fn get(&self, host: &str, target: &str, key: &str) -> Result<Hit, String> {
        let before = self.backend.mark();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n"
        );
        let ex = exchange(self.addr, request.as_bytes(), 1);
        let response = ex
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| format!("GET {target}: no answer"))?;
        let seen = self.backend.requests_since(&before);
        if seen.len() > 1 {
            return Err(format!("GET {target}: {} requests upstream", seen.len()));
        }
        Ok(Hit {
            response,
            upstream: seen.into_iter().next().map(|r| r.target),
        })
    }

    /// `target` must be forwarded (200) with the upstream seeing `want`.
    fn expect_upstream(&self, host: &str, target: &str, want: &str) -> Result<(), String> {
        let hit = self.get(host, target, "any")?;
        if hit.response.status != 200 {
            return Err(format!(
                "GET {target}: status {} instead of 200",
                hit.response.status
            ));
        }
        match hit.upstream.as_deref() {
            Some(t) if t == want => Ok(()),
            other => Err(format!(
                "GET {target}: upstream saw {other:?}, want {want:?}"
            )),
        }
    }
}

fn assert_no_failures(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} cases broke the contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn spellings_of_a_protected_path_hit_its_route_and_zone() {
    let rig = rig("", "");
    let forms = [
        "/v1/auth/login", // the plain spelling: shows the zone itself works
        "/v1/./auth/login",
        "//v1/auth/login",
        "/v1/%61uth/login",
        "/v1/x/../auth/login",
        "/v1//auth/login",
    ];
    let mut failures = Vec::new();
    for (i, form) in forms.iter().enumerate() {
        // A key of its own per form: each starts with a full bucket.
        let key = format!("key-{i}");
        let result = rig.get("h.test", form, &key).and_then(|first| {
            if first.response.status != 200 {
                return Err(format!("status {} instead of 200", first.response.status));
            }
            if first.upstream.as_deref() != Some("/v1/auth/login") {
                return Err(format!(
                    "upstream saw {:?}, want \"/v1/auth/login\"",
                    first.upstream
                ));
            }
            // The first request was counted in /v1/auth's zone: the next one is over it.
            let second = rig.get("h.test", "/v1/auth/login", &key)?;
            if second.response.status != 429 {
                return Err(format!(
                    "the request after it got {} instead of 429: the first one bypassed the zone",
                    second.response.status
                ));
            }
            check_proxy_answer(&second.response, 429)
        });
        if let Err(e) = result {
            failures.push(format!("  {form}: {e}"));
        }
    }
    assert_no_failures(&failures, forms.len());
}

#[test]
fn the_upstream_gets_the_normalised_path() {
    let rig = rig("", "");
    let cases = [
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/b/../../../c", "/c"),
        ("/x/a%2fb", "/x/a%2Fb"),
        ("/x/%7euser/%2e%2e/y", "/x/y"),
        ("/x///y", "/x/y"),
        ("/x/./y?a=%61&b=../c//d", "/x/y?a=%61&b=../c//d"),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(sent, want)| {
            rig.expect_upstream("h.test", sent, want)
                .err()
                .map(|e| format!("  {e}"))
        })
        .collect();
    assert_no_failures(&failures, cases.len());
}

#[test]
fn backslashes_and_dotdot_semicolon_are_refused() {
    let rig = rig("", "");
    let targets = [
        "/v1\\auth/login",
        "/v1%5Cauth/login",
        "/v1%5cauth/login",
        "/v1/auth/..;/admin",
        "/..;/x",
    ];
    let mut failures = Vec::new();
    for target in targets {
        let result = rig.get("h.test", target, "any").and_then(|hit| {
            check_proxy_answer(&hit.response, 400)?;
            match hit.upstream {
                None => Ok(()),
                Some(t) => Err(format!("forwarded upstream as {t:?}")),
            }
        });
        if let Err(e) = result {
            failures.push(format!("  {target}: {e}"));
        }
    }
    assert_no_failures(&failures, targets.len());
}

#[test]
fn forward_original_path_sends_the_path_as_the_client_sent_it() {
    let rig = rig(
        "",
        "[[routes]]\nhost = \"orig.test\"\nservice = \"api\"\nforward_original_path = true\n",
    );
    let sent = "/a/./b//c/%61/x/../y";
    let failures: Vec<String> = [
        rig.expect_upstream("orig.test", sent, sent),
        rig.expect_upstream("h.test", sent, "/a/b/c/a/y"),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    assert_no_failures(&failures, 2);
}

#[test]
fn merge_slashes_off_keeps_double_slashes() {
    let rig = rig("merge_slashes = false\n", "");
    let cases = [
        ("/x//y", "/x//y"),
        ("/x//./y", "/x//y"),
        ("/x/./y/../z", "/x/z"),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(sent, want)| rig.expect_upstream("h.test", sent, want).err())
        .collect();
    assert_no_failures(&failures, cases.len());
}
