//! `switchyard import ingress` (issue 16, item 2): Ingress manifests converted into a config that validates, with the routes, pools, limits and CORS they ask for, findings for what is not carried over, and (tests/fixtures/ingress/) Switchyard on the result compared with real nginx running what ingress-nginx's template writes.

#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::{Path, PathBuf};

use switchyard::import::ingress::{convert, Converted, IngressError, HTPASSWD_DIR, TLS_DIR};
use testkit::*;

const BIN: Bin = testkit::bin!();

fn fixtures() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/ingress")
}

fn every_annotation() -> Converted {
    let dir = fixtures();
    convert(&[
        dir.join("every-annotation.yaml"),
        dir.join("every-annotation.services.yaml"),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Converts `yaml` written to a file of its own.
fn convert_text(yaml: &str) -> Result<Converted, IngressError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, yaml).unwrap();
    convert(&[path])
}

fn table(c: &Converted) -> toml::Table {
    toml::from_str(&c.toml).unwrap_or_else(|e| panic!("{e}\n{}", c.toml))
}

/// The route for `host` and `path`.
fn route<'a>(t: &'a toml::Table, host: &str, path: &str) -> &'a toml::Table {
    t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(toml::Value::as_table)
        .find(|r| r["host"].as_str() == Some(host) && r["path"].as_str() == Some(path))
        .unwrap_or_else(|| panic!("no route {host}{path} in\n{t:#?}"))
}

fn service<'a>(t: &'a toml::Table, route: &toml::Table) -> &'a toml::Table {
    let name = route["service"].as_str().unwrap();
    t["services"][name].as_table().unwrap()
}

fn servers(pool: &toml::Value) -> Vec<&str> {
    pool["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The output validates (the converter checks it too; here with Switchyard's own parser and the
/// secret files written), and carries over every annotation of the fixture.
#[test]
fn every_annotation_is_carried_over() {
    let c = every_annotation();
    let t = table(&c);

    // Switchyard's validation, with the secrets exported where the config expects them.
    let dir = tempfile::tempdir().unwrap();
    let mut text = c.toml.clone();
    for f in &c.needed_files {
        let local = dir
            .path()
            .join(f.path.trim_start_matches('/').replace('/', "_"));
        let source = if f.path.ends_with(".crt") {
            format!("{CERTS}/example.com.crt")
        } else if f.path.ends_with(".key") {
            format!("{CERTS}/example.com.key")
        } else {
            fixtures().join("htpasswd").display().to_string()
        };
        std::fs::copy(&source, &local).unwrap();
        text = text.replace(&f.path, &local.display().to_string());
    }
    let config_path = dir.path().join("switchyard.toml");
    let config = switchyard::config::parse_without_lookups(&text, &config_path)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(config.routes.len() >= 12, "{}", config.summary());

    // Hosts, paths, TLS, redirects, body size, timeouts.
    let auth = route(&t, "api.example.com", "/v1/auth");
    assert_eq!(auth["redirect_https"].as_bool(), Some(true));
    assert_eq!(auth["max_body_size"].as_str(), Some("2MB"));
    assert_eq!(auth["connect_timeout"].as_str(), Some("10s"));
    assert_eq!(auth["send_timeout"].as_str(), Some("30s"));
    assert_eq!(
        auth["response_headers"]["Strict-Transport-Security"].as_str(),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(
        servers(&service(&t, auth)["pools"]["main"]),
        ["auth.shop.svc.cluster.local:80"]
    );
    assert_eq!(t["defaults"]["max_body_size"].as_str(), Some("1MB"));
    assert_eq!(t["defaults"]["connect_timeout"].as_str(), Some("5s"));
    let certs = t["certificates"].as_array().unwrap();
    assert!(certs.iter().any(|c| c["cert"].as_str()
        == Some(&format!("{TLS_DIR}/shop/api-tls.crt"))
        && c["names"].as_array().unwrap()[0].as_str() == Some("api.example.com")));
    assert!(c
        .needed_files
        .iter()
        .any(|f| f.export.contains("get secret api-tls")));
    let web = route(&t, "web.example.com", "/");
    assert!(web.get("redirect_https").is_none(), "ssl-redirect false");
    let internal = route(&t, "internal.example.com", "/");
    assert_eq!(
        internal["redirect_https"].as_bool(),
        Some(true),
        "force-ssl-redirect"
    );
    assert!(
        internal.get("response_headers").is_none(),
        "no certificate, no HSTS"
    );
    route(&t, "web.example.com", "/exact");
    route(&t, "web.example.com", "/impl");
    let legacy = route(&t, "legacy.example.com", "/old");
    assert_eq!(legacy["strip_prefix"].as_bool(), Some(true));
    assert_eq!(legacy["read_timeout"].as_str(), Some("1s"));
    let fallback = route(&t, "fallback.example.com", "/");
    assert_eq!(
        servers(&service(&t, fallback)["pools"]["main"]),
        ["fallback.shop.svc.cluster.local:80"]
    );
    route(&t, "fallback.example.com", "/docs");

    // A named port through the Service, and the canary by header as a second pool.
    let invoices = service(&t, route(&t, "api.example.com", "/v1/invoices"));
    assert_eq!(
        servers(&invoices["pools"]["never"]),
        ["invoices.shop.svc.cluster.local:8080"]
    );
    assert_eq!(invoices["pools"]["never"]["weight"].as_integer(), Some(100));
    assert_eq!(
        servers(&invoices["pools"]["always"]),
        ["invoices-v2.shop.svc.cluster.local:80"]
    );
    assert_eq!(invoices["pools"]["always"]["weight"].as_integer(), Some(0));
    assert_eq!(
        invoices["pool_override"]["header"].as_str(),
        Some("X-Canary")
    );
    let web_svc = service(&t, web);
    assert_eq!(web_svc["pools"]["always"]["weight"].as_integer(), Some(100));
    assert_eq!(web_svc["pool_override"]["cookie"].as_str(), Some("canary"));

    // Limits: the burst multiplier, refusals with ingress-nginx's 503.
    assert_eq!(t["limits"]["status"].as_integer(), Some(503));
    let zones = t["limits"]["zones"].as_table().unwrap();
    assert_eq!(zones["shop-limits-rps"]["rate"].as_str(), Some("2r/s"));
    assert_eq!(zones["shop-limits-rps"]["burst"].as_integer(), Some(10));
    assert_eq!(zones["shop-quota-rpm"]["rate"].as_str(), Some("6r/m"));
    assert_eq!(zones["shop-quota-rpm"]["burst"].as_integer(), Some(12));
    assert_eq!(
        zones["shop-limits-conn"]["kind"].as_str(),
        Some("concurrency")
    );
    assert_eq!(zones["shop-limits-conn"]["max"].as_integer(), Some(2));
    let limits = route(&t, "limits.example.com", "/");
    assert_eq!(limits["limits"].as_array().unwrap().len(), 2, "{limits:?}");

    // CORS.
    let cors = auth["cors"].as_table().unwrap();
    assert_eq!(cors["origins"].as_array().unwrap().len(), 2, "{cors:?}");
    assert_eq!(cors["credentials"].as_bool(), Some(true));
    assert_eq!(cors["max_age"].as_str(), Some("600s"));
    assert_eq!(
        cors["expose"].as_array().unwrap()[0].as_str(),
        Some("X-Request-Id")
    );

    // Affinity on the pods of a headless Service (target port), access and basic auth.
    let sticky = service(&t, route(&t, "sticky.example.com", "/"));
    assert_eq!(
        servers(&sticky["pools"]["main"]),
        ["sticky.shop.svc.cluster.local:8080"]
    );
    assert_eq!(sticky["affinity"]["cookie"].as_str(), Some("SYID"));
    assert_eq!(sticky["affinity"]["ttl"].as_str(), Some("3600s"));
    let admin = route(&t, "admin.example.com", "/");
    assert_eq!(
        admin["access"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>(),
        ["allow 127.0.0.0/8", "allow 10.0.0.0/8", "deny all"]
    );
    assert_eq!(admin["basic_auth"]["realm"].as_str(), Some("Staff only"));
    assert_eq!(
        admin["basic_auth"]["file"].as_str(),
        Some(format!("{HTPASSWD_DIR}/shop/admin-auth").as_str())
    );

    // cert-manager: ACME for the host instead of the secret.
    assert_eq!(t["acme"]["email"].as_str(), Some("ops@example.com"));
    assert_eq!(
        t["acme"]["certificates"][0]["names"][0].as_str(),
        Some("shop.example.com")
    );

    // What needs review: the Exact path and the ConfigMap (the fixture uses what is carried
    // over).
    let whats: Vec<&str> = c.findings.iter().map(|f| f.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "ConfigMap ingress-nginx-controller",
            "path web.example.com/exact"
        ],
        "{:#?}",
        c.findings
    );
}

const SNIPPETS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  annotations:
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-Frame-Options: DENY";
    nginx.ingress.kubernetes.io/server-snippet: "location /x { return 418; }"
    nginx.ingress.kubernetes.io/upstream-hash-by: "$request_uri"
    nginx.ingress.kubernetes.io/made-up: "yes"
    nginx.ingress.kubernetes.io/affinity: cookie
    nginx.ingress.kubernetes.io/session-cookie-path: /app
    nginx.ingress.kubernetes.io/limit-rps: lots
    kubernetes.io/ingress.class: nginx
spec:
  rules:
    - host: app.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: app
                port:
                  name: http
          - path: /api
            pathType: Prefix
            backend:
              service:
                name: api
                port:
                  number: 8080
          - path: /v[0-9]+/
            pathType: ImplementationSpecific
            backend:
              service:
                name: api
                port:
                  number: 8080
"#;

/// An Ingress with a defaultBackend and no rules takes every host; a path of another Ingress's
/// host that no rule takes then reaches it too, where ingress-nginx answers 404: a finding.
#[test]
fn a_default_backend_without_rules_is_the_catch_all() {
    let c = convert_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: all}\nspec:\n  defaultBackend: {service: {name: home, port: {number: 80}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: api}\nspec:\n  rules:\n    - host: api.example.com\n      http: {paths: [{path: /v1, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]}\n",
    )
    .unwrap();
    let t = table(&c);
    let all = route(&t, "*", "/");
    assert_eq!(
        servers(&service(&t, all)["pools"]["main"]),
        ["home.default.svc.cluster.local:80"]
    );
    let f = c
        .findings
        .iter()
        .find(|f| f.what == "host api.example.com")
        .unwrap_or_else(|| panic!("{:#?}", c.findings));
    assert_eq!(f.line, 6, "the api Ingress's document, from its `---`");
    assert!(f.message.contains("404"), "{f}");
}

/// Snippets, unknown and unsupported annotations, bad values and unresolvable backends are
/// findings, and comments at their place in the TOML; what can be converted still is.
#[test]
fn what_is_not_carried_over_is_reported() {
    let c = convert_text(SNIPPETS).unwrap();
    let find = |what: &str| {
        c.findings
            .iter()
            .find(|f| f.what.contains(what))
            .unwrap_or_else(|| panic!("no finding for {what}: {:#?}", c.findings))
    };
    for what in [
        "configuration-snippet",
        "server-snippet",
        "upstream-hash-by",
        "made-up",
        "session-cookie-path",
        "limit-rps",
        "backend app:http",
        "affinity",
        "path app.example.com/v[0-9]+/",
    ] {
        let f = find(what);
        assert!(f.file.ends_with("manifests.yaml") && f.line == 1, "{f}");
    }
    assert!(
        find("backend app:http")
            .message
            .contains("Service manifest"),
        "{:?}",
        c.findings
    );
    assert!(find("affinity").message.contains("headless"));
    assert!(!c.findings.iter().any(|f| f.what.contains("ingress.class")));
    for what in ["configuration-snippet", "server-snippet", "made-up"] {
        assert!(
            c.toml
                .lines()
                .any(|l| l.starts_with("# NOT CARRIED OVER") && l.contains(what)),
            "no comment for {what}:\n{}",
            c.toml
        );
    }
    let t = table(&c);
    let api = route(&t, "app.example.com", "/api");
    assert!(api.get("limits").is_none());
    assert_eq!(
        servers(&service(&t, api)["pools"]["main"]),
        ["api.default.svc.cluster.local:8080"]
    );
}

/// Bad YAML is an error naming the file, line and column; a file that is not YAML of
/// Kubernetes objects, or has no Ingress, likewise; nothing panics.
#[test]
fn bad_yaml_is_a_clear_error() {
    let err = convert_text("apiVersion: v1\nkind: Service\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifests.yaml:7:1: did not find expected"),
        "{err}"
    );
    assert!(err.contains("while parsing a flow mapping"), "{err}");
    let err = convert_text("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: x\nspec:\n  rules: 3\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifests.yaml:1:") && err.contains("rules"),
        "{err}"
    );
    let err = convert_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n").unwrap_err();
    assert!(matches!(err, IngressError::NoIngress), "{err}");
    let err = convert(&[PathBuf::from("/nonexistent/x.yaml")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.yaml"), "{err}");
    // Whatever comes in, an answer and no panic.
    for text in [
        "", "---\n---\n", "[", "a: &a [*a]", "- - - -", "kind: List\nitems: [1, {kind: Ingress}]",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nspec: {rules: [{host: '', http: {paths: [{backend: {}}]}}]}",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a, annotations: {nginx.ingress.kubernetes.io/canary: 'true'}}\nspec: {rules: [{host: a, http: {paths: [{path: '/', pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]}}]}",
    ] {
        let _ = convert_text(text);
    }
}

/// Every backend protocol, a canary by header value, and a cookie that cannot be carried
/// beside it.
#[test]
fn backend_protocols_and_canary_values() {
    let mut yaml = String::new();
    for (i, proto) in ["HTTPS", "GRPC", "GRPCS"].iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: p{i}\n  annotations:\n    nginx.ingress.kubernetes.io/backend-protocol: {proto}\nspec:\n  rules:\n    - host: p{i}.example.com\n      http:\n        paths:\n          - path: /\n            pathType: Prefix\n            backend: {{service: {{name: s{i}, port: {{number: 443}}}}}}\n"
        ));
    }
    yaml.push_str("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: c\n  annotations:\n    nginx.ingress.kubernetes.io/canary: 'true'\n    nginx.ingress.kubernetes.io/canary-weight: '25'\n    nginx.ingress.kubernetes.io/canary-by-header: X-Version\n    nginx.ingress.kubernetes.io/canary-by-header-value: v2\n    nginx.ingress.kubernetes.io/canary-by-cookie: beta\n    nginx.ingress.kubernetes.io/proxy-body-size: 5m\nspec:\n  rules:\n    - host: p0.example.com\n      http:\n        paths:\n          - path: /\n            pathType: Prefix\n            backend: {service: {name: next, port: {number: 443}}}\n");
    let c = convert_text(&yaml).unwrap();
    let t = table(&c);
    let p0 = service(&t, route(&t, "p0.example.com", "/"));
    assert_eq!(p0["pools"]["main"]["tls"].as_bool(), Some(true));
    assert_eq!(p0["pools"]["main"]["verify"].as_bool(), Some(false));
    assert_eq!(p0["pools"]["main"]["weight"].as_integer(), Some(75));
    assert_eq!(p0["pools"]["v2"]["weight"].as_integer(), Some(25));
    assert_eq!(p0["pools"]["v2"]["tls"].as_bool(), Some(true));
    assert_eq!(p0["pool_override"]["header"].as_str(), Some("X-Version"));
    assert!(p0["pool_override"].get("cookie").is_none());
    let p1 = service(&t, route(&t, "p1.example.com", "/"));
    assert_eq!(p1["pools"]["main"]["protocol"].as_str(), Some("h2c"));
    let p2 = service(&t, route(&t, "p2.example.com", "/"));
    assert_eq!(p2["pools"]["main"]["protocol"].as_str(), Some("h2"));
    assert_eq!(p2["pools"]["main"]["tls"].as_bool(), Some(true));
    let whats: Vec<&str> = c.findings.iter().map(|f| f.what.as_str()).collect();
    assert!(
        whats.iter().any(|w| w.ends_with("canary-by-cookie")),
        "{whats:?}"
    );
    assert!(
        whats.iter().any(|w| w.ends_with("proxy-body-size")),
        "ignored on a canary: {whats:?}"
    );
}

/// The test machine's version of the converted config: listeners on the harness's ports, the
/// secrets as the test certificate (the fallback, as ingress-nginx's default certificate) and
/// htpasswd, ACME's names as a certificate, and each cluster service name as its echo backend
/// (the headless one as two pods).
fn for_harness(converted: &str) -> String {
    let mut t: toml::Table = toml::from_str(converted).unwrap();
    for l in t["listeners"].as_array_mut().unwrap() {
        let l = l.as_table_mut().unwrap();
        let tls = l.get("tls").and_then(toml::Value::as_bool) == Some(true);
        let port = if tls { "{https}" } else { "{http}" };
        l.insert("address".into(), format!("127.0.0.1:{port}").into());
    }
    let acme = t.remove("acme").unwrap();
    let certs = t["certificates"].as_array_mut().unwrap();
    for cert in acme["certificates"].as_array().unwrap() {
        let mut entry = toml::Table::new();
        entry.insert("cert".into(), "/etc/switchyard/tls/acme.crt".into());
        entry.insert("key".into(), "/etc/switchyard/tls/acme.key".into());
        entry.insert("names".into(), cert["names"].clone());
        certs.push(entry.into());
    }
    for (i, cert) in certs.iter_mut().enumerate() {
        let cert = cert.as_table_mut().unwrap();
        cert.insert("cert".into(), "{certs}/example.com.crt".into());
        cert.insert("key".into(), "{certs}/example.com.key".into());
        if i == 0 {
            cert.insert("fallback".into(), true.into());
        }
    }
    let mut text = toml::to_string(&t).unwrap();
    text = text.replace(
        &format!("\"{HTPASSWD_DIR}/shop/admin-auth\""),
        "\"{fixtures}/htpasswd\"",
    );
    text = text.replace(
        "\"sticky.shop.svc.cluster.local:8080\"",
        "\"{sticky_1}\", \"{sticky_2}\"",
    );
    for (name, port) in [
        ("auth", 80),
        ("invoices", 8080),
        ("invoices-v2", 80),
        ("web", 80),
        ("web-v2", 80),
        ("legacy", 80),
        ("admin", 80),
        ("fallback", 80),
    ] {
        let from = format!("\"{name}.shop.svc.cluster.local:{port}\"");
        assert!(
            text.contains(&from),
            "{from} is not in the converted config"
        );
        text = text.replace(&from, &format!("\"{{{}}}\"", name.replace('-', "_")));
    }
    assert!(!text.contains("svc.cluster.local"), "{text}");
    text
}

/// Proof by difference: real nginx running what ingress-nginx writes for the fixture, and
/// Switchyard on the converted config, answer the corpus alike.
#[test]
fn every_annotation_behaves_as_ingress_nginx() {
    let diff = Differential::load(&fixtures(), "every-annotation");
    let converted = every_annotation();
    diff.run(BIN, |_| for_harness(&converted.toml))
        .assert_equivalent();
}

/// The harness fails when the conversion breaks: the converted config with the burst
/// multiplier ignored, the canary's pools swapped and the prefix strip lost is caught in each.
#[test]
fn a_wrong_conversion_is_caught() {
    let diff = Differential::load(&fixtures(), "every-annotation");
    let converted = every_annotation();
    let swap = |text: &str, from: &str, to: &str| {
        assert!(
            text.contains(from),
            "{from:?} is not in the converted config"
        );
        text.replacen(from, to, 1)
    };
    let report = diff.run(BIN, |_| {
        let good = for_harness(&converted.toml);
        let wrong = swap(&good, "burst = 10\n", "burst = 2\n");
        let wrong = swap(
            &wrong,
            "[services.shop-invoices-8080.pool_override]\nheader = \"X-Canary\"\n",
            "",
        );
        swap(&wrong, "strip_prefix = true\n", "")
    });
    let untolerated = report.untolerated();
    for (case, aspect) in [
        ("limit-rps past its burst", "refusals"),
        ("the canary by header", "backend"),
        ("rewrite-target strips the prefix", "upstream path"),
    ] {
        assert!(
            untolerated
                .iter()
                .any(|d| d.case == case && d.aspect == aspect),
            "the harness missed {aspect:?} in {case:?}\n{}",
            report.text()
        );
    }
}

/// Cookie affinity on a headless Service really keeps a client on one pod: the converted
/// config, run with the Service's name standing for two echo backends.
#[test]
fn affinity_keeps_a_client_on_one_pod() {
    let c = convert_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: web}\nspec: {clusterIP: None, ports: [{port: 80, targetPort: 8080}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app\n  namespace: web\n  annotations:\n    nginx.ingress.kubernetes.io/affinity: cookie\n    nginx.ingress.kubernetes.io/session-cookie-name: SYID\n    nginx.ingress.kubernetes.io/session-cookie-max-age: '3600'\nspec:\n  rules:\n    - host: app.example.com\n      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n",
    )
    .unwrap();
    assert!(c.findings.is_empty(), "{:#?}", c.findings);
    let (a, b) = (
        Backend::spawn("pod_a").unwrap(),
        Backend::spawn("pod_b").unwrap(),
    );
    let (http, https) = (port(), port());
    let config = format!("{SERVER}\n{}", c.toml)
        .replace("0.0.0.0:80\"", &format!("127.0.0.1:{http}\""))
        .replace("0.0.0.0:443\"", &format!("127.0.0.1:{https}\""))
        .replace(
            "\"app.web.svc.cluster.local:8080\"",
            &format!("\"{}\", \"{}\"", a.addr, b.addr),
        );
    let proxy = Proxy::start(BIN, &config);
    let client = http1_client();
    let get = |cookie: Option<&str>| {
        let mut req = client
            .get(format!("http://127.0.0.1:{http}/"))
            .header("host", "app.example.com");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 200);
        let cookie = header(&resp, "set-cookie");
        (
            json_body(resp)["backend"].as_str().unwrap().to_string(),
            cookie,
        )
    };
    let (first, set_cookie) = get(None);
    assert!(
        set_cookie.starts_with("SYID=") && set_cookie.contains("Max-Age=3600"),
        "{set_cookie}\n{}",
        proxy.stderr()
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    for _ in 0..6 {
        assert_eq!(get(Some(&cookie)).0, first, "the cookie keeps the pod");
    }
    let others: std::collections::BTreeSet<String> = (0..6).map(|_| get(None).0).collect();
    assert_eq!(
        others.len(),
        2,
        "without the cookie both pods answer: {others:?}"
    );
}

/// Annotations may hold anything: random values for the annotations the import reads, on a
/// well-formed Ingress, give a config that validates (what Switchyard refuses is taken out and
/// reported), never an invalid one or a panic.
#[test]
fn any_annotation_value_gives_a_valid_config() {
    const KEYS: &[&str] = &[
        "ssl-redirect",
        "force-ssl-redirect",
        "proxy-body-size",
        "proxy-connect-timeout",
        "proxy-read-timeout",
        "limit-rps",
        "limit-rpm",
        "limit-connections",
        "limit-burst-multiplier",
        "enable-cors",
        "cors-max-age",
        "cors-allow-credentials",
        "cors-allow-origin",
        "cors-expose-headers",
        "cors-allow-headers",
        "cors-allow-methods",
        "affinity",
        "session-cookie-name",
        "session-cookie-max-age",
        "whitelist-source-range",
        "auth-type",
        "auth-secret",
        "auth-realm",
        "rewrite-target",
        "use-regex",
        "backend-protocol",
        "canary-by-header",
    ];
    const VALUES: &[&str] = &[
        "true",
        "false",
        "0",
        "1",
        "4294967295",
        "99999999999",
        "-1",
        "",
        " ",
        "*",
        "cookie",
        "basic",
        "GRPCS",
        "HTTPS",
        "1m",
        "0",
        "10g",
        "a b",
        "x\"y",
        "https://a.example.com, *",
        "http://[::1]:99999",
        "GET, PATCH, get",
        "X-A, Bad Header",
        "10.0.0.0/33, ::/0, nope",
        "ns/secret/x",
        "/$2",
        "/$1",
        "$$",
        "\\",
        "é",
        "\u{7f}",
        "Authorization",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut converted, mut refused) = (0, 0);
    for _ in 0..300 {
        let mut annotations = String::new();
        for _ in 0..rng.usize(1..8) {
            let key = KEYS[rng.usize(..KEYS.len())];
            let value = VALUES[rng.usize(..VALUES.len())];
            annotations.push_str(&format!(
                "    nginx.ingress.kubernetes.io/{key}: {}\n",
                serde_json::Value::from(value)
            ));
        }
        annotations.push_str("    nginx.ingress.kubernetes.io/enable-cors: \"true\"\n");
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: r\n  annotations:\n{annotations}spec:\n  tls: [{{hosts: [r.example.com], secretName: r}}]\n  rules:\n    - host: r.example.com\n      http: {{paths: [{{path: /a(/|$)(.*), pathType: ImplementationSpecific, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}\n"
        );
        match convert_text(&yaml) {
            Ok(c) => {
                converted += 1;
                refused += c
                    .findings
                    .iter()
                    .filter(|f| f.message.starts_with("Switchyard refuses it"))
                    .count();
            }
            // A key given twice.
            Err(IngressError::Yaml { .. }) => {}
            Err(e) => panic!("{e}\n--- from ---\n{yaml}"),
        }
    }
    assert!(
        converted > 150 && refused > 0,
        "{converted} converted, {refused} values refused"
    );
}

/// No input makes the import panic: the fixture, mutated byte by byte, for a bounded number
/// of rounds (each an answer, an error or a conversion).
#[test]
fn mutated_manifests_never_panic() {
    let seed = std::fs::read(fixtures().join("every-annotation.yaml")).unwrap();
    let mut rng = fastrand::Rng::with_seed(16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    const ALPHABET: &[u8] = b" \n:-{}[]&*!|>'\"#%@`,?/.0123456789abcxyz$()^";
    for _ in 0..500 {
        let mut bytes = seed.clone();
        for _ in 0..rng.usize(1..12) {
            let i = rng.usize(..bytes.len());
            match rng.u8(..4) {
                0 => bytes[i] = ALPHABET[rng.usize(..ALPHABET.len())],
                1 => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i, ALPHABET[rng.usize(..ALPHABET.len())]),
                _ => {
                    let end = (i + rng.usize(1..200)).min(bytes.len());
                    let chunk = bytes[i..end].to_vec();
                    let at = rng.usize(..bytes.len());
                    bytes.splice(at..at, chunk);
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Err(IngressError::Invalid { errors, toml }) = convert(std::slice::from_ref(&path)) {
            panic!(
                "the import wrote an invalid config:\n{errors}\n{toml}\n--- from ---\n{}",
                String::from_utf8_lossy(&bytes)
            )
        }
    }
}

/// A value Switchyard refuses takes out the route option that holds it, reported with
/// Switchyard's reason; the route stays.
#[test]
fn a_refused_value_takes_out_its_option_only() {
    let c = convert_text(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app\n  annotations:\n    nginx.ingress.kubernetes.io/enable-cors: 'true'\n    nginx.ingress.kubernetes.io/cors-allow-origin: not an origin\n    nginx.ingress.kubernetes.io/proxy-body-size: 3m\nspec:\n  rules:\n    - host: app.example.com\n      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n",
    )
    .unwrap();
    let t = table(&c);
    let app = route(&t, "app.example.com", "/");
    assert!(app.get("cors").is_none());
    assert_eq!(app["max_body_size"].as_str(), Some("3MB"));
    let f = &c.findings[0];
    assert!(
        f.line == 1 && f.message.contains("\"not an origin\"") && f.what.contains("cors"),
        "{f}"
    );
    assert!(c
        .toml
        .lines()
        .any(|l| l.starts_with("# NOT CARRIED OVER (origin \"not an origin\"")));
}

#[test]
fn the_cli_writes_the_config_the_findings_and_the_files_to_export() {
    let dir = fixtures();
    let out = BIN
        .command()
        .args(["import", "ingress"])
        .arg(dir.join("every-annotation.yaml"))
        .arg(dir.join("every-annotation.services.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The fixture has findings (snippets, an Exact path...): it needs review.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs review"), "{stderr}");
    assert!(
        stderr.contains("kubectl -n shop get secret"),
        "the secrets to export are listed:\n{stderr}"
    );
    // The TOML on stdout is the library's, whole.
    assert_eq!(stdout, every_annotation().toml);

    // -o writes the file instead; a missing file and bad YAML are exit 2 with the place.
    let tmp = tempfile::tempdir().unwrap();
    let written = tmp.path().join("switchyard.toml");
    let out = BIN
        .command()
        .args(["import", "ingress", "-o"])
        .arg(&written)
        .arg(dir.join("every-annotation.yaml"))
        .output()
        .unwrap();
    assert!(out.stdout.is_empty());
    assert!(std::fs::read_to_string(&written)
        .unwrap()
        .contains("[[routes]]"));
    let missing = BIN
        .command()
        .args(["import", "ingress", "/nonexistent/manifests.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/manifests.yaml"));
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Ingress\nmetadata: [unclosed\n").unwrap();
    let bad_run = BIN
        .command()
        .args(["import", "ingress"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(bad_run.status.code(), Some(2));
    let text = String::from_utf8_lossy(&bad_run.stderr);
    assert!(text.contains("bad.yaml:"), "{text}");
}
