//! `switchyard check`: every config error is reported as `file:line:col: reason` with exit code 1.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::ops::RangeInclusive;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// A valid config: 3 routes, 2 services, 3 pools.
const GOOD: &str = r#"
[server]
threads = 1

[[listeners]]
name = "http"
address = "127.0.0.1:18080"

[[listeners]]
name = "https"
address = "127.0.0.1:18443"
tls = true

[[certificates]]
cert = "{certs}/example.com.crt"
key = "{certs}/example.com.key"
fallback = true

[[routes]]
host = "api.example.com"
service = "api"

[[routes]]
host = "api.example.com"
path = "/v1/auth"
strip_prefix = true
service = "auth"
read_timeout = "5s"

[[routes]]
host = "*"
service = "api"

[services.api.pools.blue]
weight = 80
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]

[services.api.pools.green]
weight = 20
servers = [{ address = "127.0.0.1:9003", weight = 2 }]

[services.auth.pools.stable]
weight = 1
servers = ["127.0.0.1:9101"]
"#;

/// `GOOD` with each `(from, to)` replacement applied (every `from` must be in it), `{certs}` filled.
fn good_with(replacements: &[(&str, &str)]) -> String {
    let mut config = GOOD.to_string();
    for (from, to) in replacements {
        assert!(
            config.contains(from),
            "{from:?} is not in the config:\n{config}"
        );
        config = config.replace(from, to);
    }
    fill(&config, &[])
}

/// 1-based (line, column) of the first occurrence of `marker` in `text`.
fn pos(text: &str, marker: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        if let Some(col) = line.find(marker) {
            return (i + 1, col + 1);
        }
    }
    panic!("marker {marker:?} not in config:\n{text}");
}

/// 1-based line of the `n`th (0-based) line that equals `exact` after trimming.
fn nth_line(text: &str, exact: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == exact)
        .nth(n)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("line {exact:?} #{n} not in config:\n{text}"))
}

/// One reported error.
#[derive(Debug)]
struct Reported {
    line: usize,
    col: usize,
    reason: String,
}

/// Runs `check` on `config`, asserts exit code 1 and nothing on stdout, and parses every
/// `switchyard.toml:<line>:<col>: <reason>` line of stderr.
fn check_errors(config: &str) -> Vec<Reported> {
    let (code, stdout, stderr) = check(BIN, config);
    assert_eq!(
        code, 1,
        "check must fail\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    assert!(!stdout.contains("config ok"), "stdout: {stdout}");
    let reported: Vec<Reported> = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("switchyard.toml:")?;
            let (line, rest) = rest.split_once(':')?;
            let (col, reason) = rest.split_once(": ")?;
            Some(Reported {
                line: line.parse().ok()?,
                col: col.parse().ok()?,
                reason: reason.to_string(),
            })
        })
        .collect();
    assert!(
        !reported.is_empty(),
        "no `switchyard.toml:<line>:<col>: <reason>` line on stderr:\n{stderr}"
    );
    reported
}

/// Finds the error whose reason starts with `reason`.
fn find<'a>(reported: &'a [Reported], reason: &str) -> &'a Reported {
    reported
        .iter()
        .find(|r| r.reason.starts_with(reason))
        .unwrap_or_else(|| panic!("no error starting with {reason:?} in {reported:#?}"))
}

/// Asserts exactly one error, starting with `reason`, and returns it.
fn single_error(config: &str, reason: &str) -> Reported {
    let mut reported = check_errors(config);
    assert_eq!(reported.len(), 1, "expected one error: {reported:#?}");
    let r = reported.remove(0);
    assert!(
        r.reason.starts_with(reason),
        "reason {:?} should start with {reason:?}",
        r.reason
    );
    r
}

/// Asserts exactly one error, starting with `reason`, at `at` (line, column).
fn assert_single(config: &str, at: (usize, usize), reason: &str) -> Reported {
    let r = single_error(config, reason);
    assert_eq!((r.line, r.col), at, "location of {:?}", r.reason);
    r
}

/// Asserts exactly one error, starting with `reason`, on a line within `lines`.
fn assert_single_within(config: &str, lines: RangeInclusive<usize>, reason: &str) -> Reported {
    let r = single_error(config, reason);
    assert!(
        lines.contains(&r.line),
        "{:?} reported at line {}, expected within {lines:?}",
        r.reason,
        r.line
    );
    assert!(r.col >= 1, "column {}", r.col);
    r
}

#[test]
fn good_config_summary() {
    let (code, stdout, stderr) = check(BIN, &fill(GOOD, &[]));
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}");
    assert!(
        lines[0].starts_with("config ok: 3 routes, 2 services, 3 pools"),
        "summary line: {:?}",
        lines[0]
    );
    assert!(!stderr.contains("switchyard.toml:"), "stderr: {stderr}");
}

#[test]
fn reference_config_is_valid() {
    let (code, stdout, stderr) = check_repo_file("config/switchyard.toml");
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.starts_with("config ok: 6 routes, 2 services, 3 pools"),
        "stdout: {stdout}"
    );
}

/// `switchyard check` on a file of the repository: exit code, stdout, stderr.
fn check_repo_file(rel: &str) -> (Option<i32>, String, String) {
    let output = BIN
        .command()
        .args(["check", "--config", rel])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every example config passes `check` (warnings allowed: their server names resolve only
/// where they are deployed); tests/seed_edges.rs serves the seed systems' examples.
#[test]
fn every_example_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let rel = format!(
                "config/examples/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            let (code, stdout, stderr) = check_repo_file(&rel);
            assert_eq!(code, Some(0), "{rel}\nstdout: {stdout}\nstderr: {stderr}");
            assert!(stdout.starts_with("config ok:"), "{rel}: {stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} examples in {}", dir.display());
}

/// The Docker Compose example is valid; outside Docker its service names do not resolve, which
/// `check` reports as warnings with their place, exiting 0.
#[test]
fn compose_example_is_valid_and_its_names_are_warnings() {
    let (code, stdout, stderr) = check_repo_file("config/examples/compose.toml");
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.starts_with("config ok: 2 routes, 2 services, 3 pools"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/compose.toml"),
    )
    .unwrap();
    for name in ["web", "api", "api-next"] {
        let entry = format!("servers = [\"{name}:");
        let line = text.lines().position(|l| l.starts_with(&entry)).unwrap() + 1;
        let warning = format!(
            "config/examples/compose.toml:{line}:12: warning: server name \"{name}\" does not resolve"
        );
        assert!(stderr.contains(&warning), "{warning}\nnot in: {stderr}");
    }
}

#[test]
fn unknown_key() {
    let config = good_with(&[("threads = 1\n", "threads = 1\nbogus = 1\n")]);
    assert_single(&config, pos(&config, "bogus = 1"), "unknown field `bogus`");
}

#[test]
fn pool_weights_sum_to_zero() {
    let config = good_with(&[("weight = 80", "weight = 0"), ("weight = 20", "weight = 0")]);
    let first = nth_line(&config, "[services.api.pools.blue]", 0);
    let last = pos(&config, "servers = [{ address").0;
    assert_single_within(
        &config,
        first..=last,
        "weights of service \"api\" sum to 0; at least one pool needs a weight above 0",
    );
}

#[test]
fn route_to_unknown_service() {
    let config = good_with(&[(
        "host = \"*\"\nservice = \"api\"",
        "host = \"*\"\nservice = \"nope\"",
    )]);
    assert_single(
        &config,
        pos(&config, "\"nope\""),
        "route refers to unknown service \"nope\"",
    );
}

#[test]
fn duplicate_route() {
    // The second route spells the default path out: "/" twice for the same host.
    let routes = "[[routes]]\nhost = \"a.example.com\"\nservice = \"api\"\n\n\
                  [[routes]]\nhost = \"a.example.com\"\npath = \"/\"\nservice = \"auth\"\n\n\
                  [[routes]]\nhost = \"*\"";
    let config = good_with(&[("[[routes]]\nhost = \"*\"", routes)]);
    let first_header = nth_line(&config, "[[routes]]", 2);
    let first_host = first_header + 1;
    let second_host = first_header + 5;
    let mut reported = check_errors(&config);
    assert_eq!(reported.len(), 1, "{reported:#?}");
    let r = reported.remove(0);
    let accepted = [first_header, first_host].map(|n| {
        format!("duplicate route for host \"a.example.com\" path \"/\" (first defined at line {n})")
    });
    assert!(
        accepted.contains(&r.reason),
        "reason {:?}, expected one of {accepted:#?}",
        r.reason
    );
    assert_eq!(r.line, second_host, "the error points at the second route");
    assert!(r.col >= 1);
}

#[test]
fn pool_without_servers() {
    let config = good_with(&[(
        "servers = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]",
        "servers = []",
    )]);
    let header_line = nth_line(&config, "[services.api.pools.blue]", 0);
    let servers_line = pos(&config, "servers = []").0;
    assert_single_within(
        &config,
        header_line..=servers_line,
        "pool \"blue\" of service \"api\" has no servers",
    );
}

#[test]
fn unreadable_certificate() {
    let config = good_with(&[(
        "cert = \"{certs}/example.com.crt\"",
        "cert = \"missing.crt\"",
    )]);
    let r = assert_single(
        &config,
        pos(&config, "\"missing.crt\""),
        "cannot read certificate \"missing.crt\": ",
    );
    assert!(
        r.reason.contains("No such file or directory"),
        "the OS error is missing: {:?}",
        r.reason
    );
}

#[test]
fn unset_environment_variable() {
    let config = good_with(&[(
        "host = \"api.example.com\"\nservice = \"api\"",
        "host = \"${SWITCHYARD_TEST_UNSET}\"\nservice = \"api\"",
    )]);
    assert_single(
        &config,
        pos(&config, "\"${SWITCHYARD_TEST_UNSET}\""),
        "environment variable \"SWITCHYARD_TEST_UNSET\" is not set",
    );
}

#[test]
fn bad_duration() {
    let config = good_with(&[("read_timeout = \"5s\"", "read_timeout = \"abc\"")]);
    assert_single(&config, pos(&config, "\"abc\""), "invalid duration \"abc\"");
}

#[test]
fn bad_socket_address() {
    let config = good_with(&[("address = \"127.0.0.1:18443\"", "address = \"nonsense\"")]);
    assert_single(
        &config,
        pos(&config, "\"nonsense\""),
        "invalid socket address \"nonsense\"",
    );
}

#[test]
fn several_errors_are_all_reported() {
    let config = good_with(&[
        (
            "host = \"*\"\nservice = \"api\"",
            "host = \"*\"\nservice = \"nope\"",
        ),
        ("servers = [\"127.0.0.1:9101\"]", "servers = []"),
    ]);
    let reported = check_errors(&config);
    assert_eq!(reported.len(), 2, "{reported:#?}");
    let unknown = find(&reported, "route refers to unknown service \"nope\"");
    assert_eq!((unknown.line, unknown.col), pos(&config, "\"nope\""));
    let empty = find(
        &reported,
        "pool \"stable\" of service \"auth\" has no servers",
    );
    let header_line = nth_line(&config, "[services.auth.pools.stable]", 0);
    assert!(
        (header_line..=pos(&config, "servers = []").0).contains(&empty.line),
        "{empty:?}"
    );
}

#[test]
fn rollout_sticky_and_override_errors_are_located() {
    let config = good_with(&[(
        "[services.auth.pools.stable]",
        "[services.api.rollout]\nsteps = [5, 1, 100]\nmax_error_rate = 1.5\nshield_methods = [\"GET\", \"B@D\"]\n\n\
         [services.api.sticky]\nkey = \"hash\"\n\n\
         [services.api.pool_override]\nsecret = \"x\"\n\n\
         [services.auth.pools.stable]",
    )]);
    let reported = check_errors(&config);
    assert_eq!(reported.len(), 5, "{reported:#?}");
    for (reason, marker) in [
        (
            "steps [5, 1, 100] must be strictly ascending",
            "[5, 1, 100]",
        ),
        ("max_error_rate 1.5 is not a share between 0 and 1", "1.5"),
        ("\"B@D\" is not an HTTP method", "\"B@D\""),
        ("sticky key \"hash\" is not", "\"hash\""),
    ] {
        let r = find(&reported, reason);
        assert_eq!((r.line, r.col), pos(&config, marker), "{reason}");
    }
    let o = find(&reported, "pool_override needs a header or a cookie");
    assert_eq!(o.line, nth_line(&config, "[services.api.pool_override]", 0));
}

#[test]
fn certificate_that_is_not_a_regular_file() {
    // A device would never end (`/dev/zero`): refused at once, with its location.
    let config = good_with(&[("cert = \"{certs}/example.com.crt\"", "cert = \"/dev/zero\"")]);
    let r = assert_single(
        &config,
        pos(&config, "\"/dev/zero\""),
        "cannot read certificate \"/dev/zero\": ",
    );
    assert!(r.reason.contains("not a regular file"), "{:?}", r.reason);
    // certbot's live/ files are symlinks to regular files: fine.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("fullchain.pem");
    std::os::unix::fs::symlink(format!("{CERTS}/example.com.crt"), &link).unwrap();
    let config = good_with(&[(
        "cert = \"{certs}/example.com.crt\"",
        &format!("cert = \"{}\"", link.display()),
    )]);
    assert_eq!(
        check(BIN, &config).0,
        0,
        "a symlink to a certificate is fine"
    );
}

#[test]
fn client_timeouts_and_head_limits_are_checked() {
    let config = good_with(&[(
        "read_timeout = \"5s\"",
        "read_timeout = \"5s\"\nclient_header_timeout = \"0s\"",
    )]);
    assert_single(
        &config,
        pos(&config, "\"0s\""),
        "client_header_timeout must be above 0",
    );
    let config = good_with(&[(
        "[server]\nthreads = 1",
        "[server]\nthreads = 1\n\n[limits]\nmax_request_line = \"100\"",
    )]);
    assert_single(
        &config,
        pos(&config, "\"100\""),
        "max_request_line must be between 1KB and 1MB, not 100 bytes",
    );
    let config = good_with(&[(
        "[server]\nthreads = 1",
        "[server]\nthreads = 1\n\n[limits]\nmax_header_line = \"64KB\"\nmax_header_size = \"16KB\"",
    )]);
    assert_single(
        &config,
        pos(&config, "\"16KB\""),
        "max_header_size (16384 bytes) must be at least max_request_line and max_header_line (65536 bytes)",
    );
}

#[test]
fn route_paths_must_be_in_normal_form() {
    // Requests are matched by their normalised path: a prefix written otherwise never matches.
    let config = good_with(&[("path = \"/v1/auth\"", "path = \"/v1//auth\"")]);
    assert_single(
        &config,
        pos(&config, "\"/v1//auth\""),
        "path \"/v1//auth\" never matches: requests are matched by their normalised path; write \"/v1/auth\"",
    );
    let config = good_with(&[("path = \"/v1/auth\"", "path = \"/%7Euser\"")]);
    assert_single(
        &config,
        pos(&config, "\"/%7Euser\""),
        "path \"/%7Euser\" never matches: requests are matched by their normalised path; write \"/~user\"",
    );
    let config = good_with(&[("path = \"/v1/auth\"", "path = \"/a\\\\b\"")]);
    assert_single(
        &config,
        pos(&config, "\"/a\\\\b\""),
        "path \"/a\\b\" is refused in requests: backslash in the path",
    );
}

/// 1-based (line, column) of the value after the last `prefix` (`"ca = "`) in `text`.
fn value_pos(text: &str, prefix: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| line.find(prefix).map(|col| (i + 1, col + 1 + prefix.len())))
        .last()
        .unwrap_or_else(|| panic!("{prefix:?} not in config:\n{text}"))
}

#[test]
fn upstream_transport_settings_are_checked() {
    const POOL: &str = "servers = [\"127.0.0.1:9101\"]";
    let with = |keys: &str| good_with(&[(POOL, &format!("{POOL}\n{keys}"))]);
    let cases = [
        ("tls = true\nca = \"{certs}/missing.pem\"", "ca = ", "cannot read CA file"),
        (
            "tls = true\nca = \"{certs}/example.com.key\"",
            "ca = ",
            "no PEM certificate found in CA file",
        ),
        (
            "tls = true\nclient_cert = \"{certs}/client.crt\"",
            "client_cert = ",
            "`client_cert` needs `client_key` beside it",
        ),
        (
            "tls = true\nclient_cert = \"{certs}/client.crt\"\nclient_key = \"{certs}/example.com.key\"",
            "client_cert = ",
            "client certificate: certificate",
        ),
        (
            "protocol = \"h2\"",
            "protocol = ",
            "protocol \"h2\" is HTTP/2 over TLS: set `tls = true`",
        ),
        (
            "tls = true\nprotocol = \"h2c\"",
            "protocol = ",
            "protocol \"h2c\" is HTTP/2 without TLS",
        ),
        ("protocol = \"h3\"", "protocol = ", "unknown variant `h3`"),
        (
            "sni = \"localhost\"",
            "sni = ",
            "`sni` needs TLS to the servers: set `tls = true`",
        ),
        (
            "tls = true\nsni = \"not a name\"",
            "sni = ",
            "sni \"not a name\" is not a DNS name or IP address",
        ),
        (
            "[services.auth.pools.stable.health]\nhost = \"a b\"",
            "host = ",
            "health check host \"a b\" is not a host name",
        ),
    ];
    for (keys, at, reason) in cases {
        let config = with(keys);
        assert_single(&config, value_pos(&config, at), reason);
    }
    let config = good_with(&[(
        POOL,
        "servers = [\"https://127.0.0.1:9101\", \"127.0.0.1:9102\"]",
    )]);
    assert_single(
        &config,
        pos(&config, "\"127.0.0.1:9102\""),
        "pool \"stable\" of service \"auth\" mixes https:// and plain servers",
    );
    let config = good_with(&[(
        "address = \"127.0.0.1:18443\"\ntls = true",
        "address = \"127.0.0.1:18443\"\ntls = true\nh2c = true",
    )]);
    assert_single(
        &config,
        value_pos(&config, "h2c = "),
        "h2c is HTTP/2 without TLS",
    );
    // verify = false is valid, and warned about with its location.
    let config = with("tls = true\nverify = false");
    let (code, stdout, stderr) = check(BIN, &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (line, col) = value_pos(&config, "verify = ");
    let warning = format!(
        "switchyard.toml:{line}:{col}: pool \"stable\" of service \"auth\" does not verify its \
         servers' certificates (verify = false)"
    );
    assert!(stderr.contains(&warning), "{stderr}");
}

#[test]
fn static_route_errors() {
    // Both a service and files, or neither.
    let route = "[[routes]]\nhost = \"*\"\nservice = \"api\"";
    let config = good_with(&[(
        route,
        &format!("{route}\nstatic = {{ root = \"{{tmp}}\" }}"),
    )]);
    assert_single(
        &config,
        value_pos(&config, "static = "),
        "a route has one of `service`, `static` or `redirect`, not two",
    );
    let config = good_with(&[(route, "[[routes]]\nhost = \"*\"")]);
    let r = single_error(&config, "route has no `service`, `static` or `redirect`");
    let third = nth_line(&config, "[[routes]]", 2);
    assert!((third..=third + 1).contains(&r.line), "{r:?}");
    // The root must be an existing directory.
    let static_route =
        |spec: &str| good_with(&[(route, &format!("[[routes]]\nhost = \"*\"\nstatic = {spec}"))]);
    let config = static_route("{ root = \"{tmp}/nope\" }");
    assert_single(&config, value_pos(&config, "root = "), "static root");
    let config = static_route("{ root = \"switchyard.toml\" }");
    assert_single(&config, value_pos(&config, "root = "), "static root");
    let config = static_route("{ index = \"index.html\" }");
    assert_single(
        &config,
        value_pos(&config, "static = "),
        "`static` has no `root`",
    );
    let config = static_route("{ root = \".\", fallback = \"index.html\" }");
    assert_single(
        &config,
        value_pos(&config, "fallback = "),
        "fallback \"index.html\" must be",
    );
    let config = static_route("{ root = \".\", fallback = \"/.env\" }");
    assert_single(
        &config,
        value_pos(&config, "fallback = "),
        "fallback \"/.env\" must be",
    );
    let config = static_route("{ root = \".\", index = \"a/b.html\" }");
    assert_single(
        &config,
        value_pos(&config, "index = "),
        "index \"a/b.html\" must be a file name",
    );
    let config = static_route(
        "{ root = \".\", cache = [{ match = \"assets/*.js\", control = \"no-cache\" }] }",
    );
    assert_single(
        &config,
        value_pos(&config, "match = "),
        "pattern \"assets/*.js\" has a `/`",
    );
    let config = static_route("{ root = \".\", cache = [{ match = \"*.js\" }] }");
    assert_single(
        &config,
        pos(&config, "{ match"),
        "a cache rule needs `match` and `control`",
    );
    let config = static_route("{ root = \".\", bogus = 1 }");
    assert_single(&config, pos(&config, "bogus"), "unknown field `bogus`");
    // A valid static route, with the reference cache recipe.
    let config = static_route(
        "{ root = \".\", fallback = \"/index.html\", cache = [{ match = \"*.{js,css}\", control = \"public, max-age=31536000, immutable\" }, { match = \"/index.html\", control = \"no-cache\" }] }",
    );
    let (code, stdout, stderr) = check(BIN, &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn cors_headers_and_redirect_settings_are_checked() {
    const ROUTE: &str = "read_timeout = \"5s\"";
    let with = |keys: &str| good_with(&[(ROUTE, &format!("{ROUTE}\n{keys}"))]);
    let cases = [
        (
            "cors = { origins = [\"*\"], credentials = true }",
            "\"*\"",
            "origins = [\"*\"] with credentials = true: browsers refuse",
        ),
        (
            "cors = { origins = [\"https://app.example.com/\"] }",
            "\"https://app.example.com/\"",
            "origin \"https://app.example.com/\": expected scheme://host[:port] with no path",
        ),
        (
            "cors = { origins = [\"https://*.*.example.com\"] }",
            "\"https://*.*",
            "origin \"https://*.*.example.com\"",
        ),
        (
            "cors = { methods = [\"GET\"] }",
            "{ methods",
            "cors needs `origins`",
        ),
        (
            "response_headers = { X-Seen = \"$hostname\" }",
            "{ X-Seen",
            "header \"X-Seen\": unknown variable $hostname",
        ),
        (
            "request_headers = { remove = [\"Content-Length\"] }",
            "\"Content-Length\"",
            "header \"Content-Length\" frames the message and cannot be removed",
        ),
        (
            "request_headers = { set = { X-A = \"$nope\" } }",
            "{ X-A",
            "header \"X-A\": unknown variable $nope",
        ),
        (
            "response_headers_remove = [\"Bad Name\"]",
            "\"Bad Name\"",
            "invalid header name \"Bad Name\"",
        ),
        (
            "redirect = { to = \"https://example.com\" }",
            "{ to",
            "a route has one of `service`, `static` or `redirect`, not two",
        ),
    ];
    for (keys, at, reason) in cases {
        let config = with(keys);
        assert_single(&config, pos(&config, at), reason);
    }

    // A redirecting route: no service, a known code, a Location that is a URL or a path.
    let redirecting = |redirect: &str| {
        good_with(&[(
            "host = \"*\"\nservice = \"api\"",
            &format!("host = \"*\"\nredirect = {redirect}"),
        )])
    };
    let config = redirecting("{ to = \"https://example.com$request_uri\", code = 304 }");
    assert_single(
        &config,
        pos(&config, "304"),
        "redirect code 304 is not one of 301, 302, 303, 307, 308",
    );
    let config = redirecting("{ to = \"example.com/x\" }");
    assert_single(
        &config,
        pos(&config, "\"example.com/x\""),
        "redirect to \"example.com/x\" must be an absolute URL",
    );
    let config = redirecting("{ to = \"https://example.com$uri_path\" }");
    assert_single(
        &config,
        pos(&config, "\"https://example.com$uri_path\""),
        "redirect to: unknown variable $uri_path",
    );
    let config = good_with(&[("host = \"*\"\nservice = \"api\"", "host = \"*\"")]);
    let third = nth_line(&config, "[[routes]]", 2);
    assert_single_within(
        &config,
        third..=third,
        "route has no `service`, `static` or `redirect`",
    );
    let (code, stdout, stderr) = check(
        BIN,
        &redirecting("{ to = \"https://example.com$request_uri\" }"),
    );
    assert_eq!(
        code, 0,
        "a redirecting route needs no service\n{stdout}\n{stderr}"
    );

    // A listener's HTTPS redirect code.
    let config = good_with(&[(
        "address = \"127.0.0.1:18080\"",
        "address = \"127.0.0.1:18080\"\nredirect_https = true\nredirect_code = 303",
    )]);
    assert_single(
        &config,
        pos(&config, "303"),
        "redirect code 303 is not one of 301, 302, 307, 308",
    );
}

#[test]
fn tls_policy_names_are_checked() {
    // (the [tls] table, the text the error points at, the error's start)
    let cases = [
        (
            "cipher_suites = [\"ECDHE-RSA-AES128-GCM-SHA256\", \"TLS_FOO_WITH_BAR\"]",
            "\"TLS_FOO",
            "unknown cipher suite \"TLS_FOO_WITH_BAR\"",
        ),
        (
            "cipher_suites = \"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA\"",
            "ECDHE-RSA-AES128-SHA\"",
            "cipher suite \"ECDHE-RSA-AES128-SHA\" is weak (CBC mode)",
        ),
        (
            "cipher_suites = [\"RC4-SHA\"]",
            "\"RC4-SHA",
            "cipher suite \"RC4-SHA\" is weak (RC4)",
        ),
        (
            "cipher_suites = [\"TLS_RSA_WITH_AES_128_GCM_SHA256\"]",
            "\"TLS_RSA",
            "cipher suite \"TLS_RSA_WITH_AES_128_GCM_SHA256\" is weak (static key exchange",
        ),
        (
            "cipher_suites = [\"TLS_AES_128_CCM_SHA256\"]",
            "\"TLS_AES_128_CCM",
            "cipher suite \"TLS_AES_128_CCM_SHA256\" is not available in this build",
        ),
        (
            "cipher_suites = \"ECDHE-RSA-AES128-GCM-SHA256:HIGH\"",
            "HIGH",
            "\"HIGH\" is an OpenSSL cipher-list keyword",
        ),
        (
            "kx_groups = [\"X25519\", \"X448\"]",
            "\"X448",
            "key-exchange group \"X448\" is not available in this build",
        ),
        (
            "kx_groups = \"secp192r1\"",
            "secp192r1",
            "key-exchange group \"secp192r1\" is weak",
        ),
        (
            "kx_groups = [\"curve9\"]",
            "\"curve9",
            "unknown key-exchange group \"curve9\"",
        ),
        (
            "min_version = \"1.1\"",
            "\"1.1\"",
            "min_version \"1.1\": TLS 1.0 and 1.1 are weak",
        ),
        (
            "min_version = \"1.3\"\ncipher_suites = [\"ECDHE-RSA-AES128-GCM-SHA256\"]",
            "[\"ECDHE",
            "cipher_suites lists TLS 1.2 suites but min_version = \"1.3\"",
        ),
        (
            "ticket_rotation = \"10s\"",
            "\"10s\"",
            "ticket_rotation 10s must be from 1m to 84h",
        ),
        (
            "session_cache = -1",
            "-1",
            "session_cache = -1 must be from 0 (off)",
        ),
    ];
    for (table, at, reason) in cases {
        let config = format!("{}\n[tls]\n{table}\n", good_with(&[]));
        let (line, col) = pos(&config, at);
        let r = assert_single(&config, (line, col), reason);
        assert!(!r.reason.is_empty());
    }
    // The Gorax edge's policy passes.
    let config = format!(
        "{}\n[tls]\nmin_version = \"1.2\"\ncipher_suites = \"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384\"\nkx_groups = [\"X25519\", \"prime256v1\", \"secp384r1\"]\nsession_cache = 0\nsession_tickets = false\n",
        good_with(&[])
    );
    let (code, _, stderr) = check(BIN, &config);
    assert_eq!(code, 0, "{stderr}");
}
