//! In-memory tests of config parsing and validation messages.

use std::time::Duration;

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const BASE: &str = r#"
[[listeners]]
name = "http"
address = "127.0.0.1:8080"

[[routes]]
host = "*"
service = "api"

[services.api.pools.blue]
weight = 1
servers = ["127.0.0.1:9001"]
"#;

#[test]
fn base_is_valid() {
    let cfg = parse(BASE, Path::new("t.toml")).expect("valid");
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.routes[0].options.max_body_size, 10 << 20);
    assert_eq!(cfg.services[0].pools[0].servers[0].weight, 1);
}

#[test]
fn unknown_key_has_location() {
    let e = errors(&BASE.replace("weight = 1", "weight = 1\nbogus = 2"));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("t.toml:12:1: unknown field `bogus`"),
        "{e:?}"
    );
}

#[test]
fn reports_every_semantic_error() {
    let text = BASE
        .replace("service = \"api\"", "service = \"nope\"")
        .replace("servers = [\"127.0.0.1:9001\"]", "servers = []");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e
        .iter()
        .any(|m| m.contains("pool \"blue\" of service \"api\" has no servers")));
    assert!(
        e.iter()
            .any(|m| m.starts_with("t.toml:8:11: route refers to unknown service \"nope\"")),
        "{e:?}"
    );
}

#[test]
fn weights_summing_to_zero() {
    let e = errors(&BASE.replace("weight = 1", "weight = 0"));
    assert_eq!(
        e,
        vec!["t.toml:10:1: weights of service \"api\" sum to 0; at least one pool needs a weight above 0"]
    );
}

#[test]
fn duplicate_routes_name_the_first() {
    let text = format!("{BASE}\n[[routes]]\nhost = \"*\"\nservice = \"api\"\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].ends_with("duplicate route for host \"*\" path \"/\" (first defined at line 6)"),
        "{e:?}"
    );
}

#[test]
fn env_and_values() {
    let e = errors(&BASE.replace("127.0.0.1:8080", "${SWITCHYARD_UNIT_UNSET}"));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("environment variable \"SWITCHYARD_UNIT_UNSET\" is not set"),
        "{e:?}"
    );
    let e = errors(&format!("{BASE}\n[defaults]\nread_timeout = \"abc\"\n"));
    assert!(e[0].contains("invalid duration \"abc\""), "{e:?}");
    let e = errors(&BASE.replace("127.0.0.1:9001", "nonsense"));
    assert!(
        e[0].contains("server \"nonsense\" needs a port (host:port)"),
        "{e:?}"
    );
}

#[test]
fn server_names_and_resolvers() {
    // A name is taken as written (lower-cased), never looked up while parsing.
    let cfg = parse(
        &BASE.replace("127.0.0.1:9001", "Tiris-Backend:8080"),
        Path::new("t.toml"),
    )
    .expect("a name is a valid server");
    let server = &cfg.services[0].pools[0].servers[0];
    assert_eq!(server.address.to_string(), "tiris-backend:8080");
    assert_eq!(server.address.name().map(|n| &**n), Some("tiris-backend"));
    for (bad, why) in [
        ("api-:80", "starts or ends with -"),
        ("a..b:80", "is not a DNS label"),
        ("api:0", "is not a port"),
        ("api:http", "is not a port"),
        ("::1:80", "an IPv6 address is written [addr]:port"),
    ] {
        let e = errors(&BASE.replace("127.0.0.1:9001", bad));
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert!(
            e[0].starts_with("t.toml:") && e[0].contains(why),
            "{bad}: {e:?}"
        );
    }
    let text = format!(
        "[server]\nresolvers = [\"127.0.0.11\", \"10.0.0.2:5353\"]\nresolve_min = \"2s\"\nresolve_max = \"30s\"\n{BASE}"
    );
    let cfg = parse(&text, Path::new("t.toml")).expect("valid resolvers");
    let got: Vec<String> = cfg.server.resolvers.iter().map(|a| a.to_string()).collect();
    assert_eq!(got, ["127.0.0.11:53", "10.0.0.2:5353"]);
    assert_eq!(cfg.server.resolve_min, std::time::Duration::from_secs(2));
    let e = errors(&text.replace("127.0.0.11", "dns.local"));
    assert!(
        e[0].starts_with("t.toml:2:") && e[0].contains("is not an IP address"),
        "{e:?}"
    );
    let e = errors(&text.replace("\"2s\"", "\"90s\""));
    assert!(e[0].contains("at most resolve_max"), "{e:?}");
}

#[test]
fn route_options_layer_over_defaults() {
    let text = format!(
        "{BASE}\n[defaults]\nmax_body_size = \"1KB\"\n[defaults.response_headers]\nX-A = \"1\"\n"
    )
    .replace(
        "service = \"api\"",
        "service = \"api\"\nread_timeout = \"5s\"\npath = \"/v1/\"",
    );
    let cfg = parse(&text, Path::new("t.toml")).expect("valid");
    let r = &cfg.routes[0];
    assert_eq!(r.path, "/v1");
    assert_eq!(r.options.max_body_size, 1024);
    assert_eq!(r.options.read_timeout, Duration::from_secs(5));
    assert_eq!(r.options.response_headers.len(), 1);
}

/// A config with every section that has settings beyond the basics, and a secret in each place
/// one can be.
const FULL: &str = r#"
[[listeners]]
name = "http"
address = "127.0.0.1:8080"

[[routes]]
host = "*.example.com"
service = "api"
response_headers = { "X-Frame-Options" = "DENY" }

[services.api.pools.blue]
weight = 90
servers = ["127.0.0.1:9001"]

[services.api.pools.green]
weight = 10
servers = [{ address = "127.0.0.1:9002", weight = 3 }]

[services.api.rollout]
steps = [10, 50, 100]
interval = "90s"
max_error_rate = 0.02
max_p99 = "750ms"
window = "20s"
shield_methods = ["GET"]

[services.api.sticky]
key = "header:X-User"

[services.api.pool_override]
header = "X-Pool"
cookie = "pool"
secret = "override-s3cret-5555"

[limits]
trusted_proxies = ["10.0.0.0/8"]
max_connections = 1000

[limits.zones.per_ip]
rate = "10r/s"
burst = 20

[admin]
address = "127.0.0.1:9900"
token = "admin-t0ken-4444"

[acme]
directory = "https://acme.test/directory"
email = "ops@example.com"
eab = { kid = "kid-1", hmac_key = "ZWFiLWhtYWMta2V5LTMzMzM" }

[[acme.certificates]]
names = ["www.example.com"]
"#;

#[test]
fn serializes_the_whole_config_and_no_secret() {
    let cfg = parse(FULL, Path::new("/etc/switchyard/full.toml")).expect("valid");
    let json = serde_json::to_value(&cfg).expect("serializes");
    let text = json.to_string();
    for secret in [
        "admin-t0ken-4444",
        "override-s3cret-5555",
        "ZWFiLWhtYWMta2V5LTMzMzM",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {json:#}");
    }
    // The EAB key's decoded bytes ("eab-hmac-key-3333") do not show either.
    assert!(!text.contains("eab-hmac-key"), "{json:#}");
    assert!(!format!("{cfg:?}").contains("s3cret"), "Debug leaks");
    assert!(!format!("{cfg:?}").contains("t0ken"), "Debug leaks");

    assert_eq!(json["source"], "/etc/switchyard/full.toml");
    assert_eq!(json["admin"]["token"], "<redacted>");
    assert_eq!(json["admin"]["address"], "127.0.0.1:9900");
    let api = &json["services"][0];
    assert_eq!(api["balance"], "round_robin");
    assert_eq!(api["pools"][1]["servers"][0]["weight"], 3);
    let rollout = &api["rollout"];
    assert_eq!(rollout["steps"], serde_json::json!([10, 50, 100]));
    assert_eq!(rollout["interval"], "90s");
    assert_eq!(rollout["max_error_rate"], 0.02);
    assert_eq!(rollout["max_p99"], "750ms");
    assert_eq!(rollout["min_requests"], 20);
    assert_eq!(rollout["window"], "20s");
    assert_eq!(rollout["shield"], true);
    assert_eq!(rollout["shield_methods"], serde_json::json!(["GET"]));
    assert_eq!(api["sticky"], serde_json::json!({"key": "header:x-user"}));
    assert_eq!(
        api["pool_override"],
        serde_json::json!({"header": "x-pool", "cookie": "pool", "secret": "<redacted>"})
    );
    let acme = &json["acme"];
    assert_eq!(acme["directory"], "https://acme.test/directory");
    assert_eq!(acme["email"], "ops@example.com");
    assert_eq!(
        acme["eab"],
        serde_json::json!({"kid": "kid-1", "hmac_key": "<redacted>"})
    );
    assert_eq!(acme["backoff_min"], "60s");
    assert_eq!(acme["certificates"][0]["names"][0], "www.example.com");
    assert_eq!(acme["certificates"][0]["challenge"], "http-01");
    let limits = &json["limits"];
    assert_eq!(limits["trusted_proxies"], serde_json::json!(["10.0.0.0/8"]));
    assert_eq!(limits["max_connections"], 1000);
    assert_eq!(limits["max_connections_per_ip"], serde_json::Value::Null);
    assert_eq!(limits["zones"][0]["per"], "1s");
    assert_eq!(limits["head"]["total"], 32 << 10);
    let route = &json["routes"][0];
    assert_eq!(route["host"], "*.example.com");
    assert_eq!(
        route["options"]["response_headers"],
        serde_json::json!({"x-frame-options": "DENY"})
    );
    assert_eq!(route["options"]["keepalive_timeout"], "75s");
    assert_eq!(json["defaults"]["client_header_timeout"], "60s");
    assert_eq!(json["server"]["merge_slashes"], true);
    assert_eq!(json["server"]["access_log"], "stdout");
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    let on = BASE.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\nproxy_protocol = true",
    );
    let e = errors(&on);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:5:18: proxy_protocol = true needs [limits] trusted_proxies"),
        "{e:?}"
    );
    let trusted = format!("{on}\n[limits]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let cfg = parse(&trusted, Path::new("t.toml")).expect("valid");
    assert!(cfg.listeners[0].proxy_protocol);
    assert!(!parse(BASE, Path::new("t.toml")).expect("valid").listeners[0].proxy_protocol);
}

#[test]
fn upstream_connection_settings_are_validated() {
    let with = |table: &str| format!("{BASE}\n[services.api.upstream]\n{table}");
    let cfg = parse(BASE, Path::new("t.toml")).expect("valid");
    assert_eq!(cfg.services[0].upstream, UpstreamConn::default());
    assert_eq!(
        cfg.services[0].upstream.keepalive_timeout,
        Duration::from_secs(60),
        "today's fixed idle timeout"
    );
    let cfg = parse(
        &with(
            "keepalive = 16\nkeepalive_timeout = \"30s\"\nmax_conns = 10\nqueue_timeout = \"2s\"\n",
        ),
        Path::new("t.toml"),
    )
    .expect("valid");
    let u = cfg.services[0].upstream;
    assert_eq!(u.keepalive, Some(16));
    assert_eq!(u.keepalive_timeout, Duration::from_secs(30));
    assert_eq!(u.max_conns, Some(10));
    assert_eq!(u.queue_timeout, Duration::from_secs(2));
    for (table, message) in [
        ("max_conns = 0\n", "max_conns must be at least 1"),
        (
            "keepalive_timeout = \"0s\"\n",
            "keepalive_timeout must be above 0",
        ),
        (
            "queue_timeout = \"1s\"\n",
            "queue_timeout applies only with max_conns",
        ),
        ("max_con = 3\n", "unknown field `max_con`"),
    ] {
        let e = errors(&with(table));
        assert_eq!(e.len(), 1, "{table}: {e:?}");
        assert!(e[0].starts_with("t.toml:15:"), "{table}: {e:?}");
        assert!(e[0].contains(message), "{table}: {e:?}");
    }
}

#[test]
fn admin_tls_loads_its_files_or_says_which_is_wrong() {
    // Paths are relative to the config file's directory: certs/ of the repository.
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../certs/t.toml"));
    let with = |tls: &str| format!("{BASE}\n[admin]\ntls = {{ {tls} }}\n");
    let cfg = parse(
        &with(r#"cert = "localhost.crt", key = "localhost.key", client_ca = "test-ca.crt""#),
        path,
    )
    .expect("valid");
    let tls = cfg.admin.and_then(|a| a.tls).expect("[admin] tls");
    assert!(tls.cert.ends_with("localhost.crt"));
    assert!(tls.client_ca.is_some_and(|c| c.ends_with("test-ca.crt")));
    assert_eq!(tls.config.alpn_protocols, [b"http/1.1".to_vec()]);

    let errors = |text: String| match parse(&text, path) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    // The line of `[admin] tls` is 16 (BASE has 14 lines and a blank one is added).
    let e = errors(with(r#"cert = "localhost.crt", key = "example.com.key""#));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains(":16:") && e[0].contains("does not match"),
        "{e:?}"
    );
    let e = errors(with(r#"cert = "localhost.crt", key = "nope.key""#));
    assert!(e[0].contains("[admin] tls: cannot read key"), "{e:?}");
    let e = errors(with(
        r#"cert = "localhost.crt", key = "localhost.key", client_ca = "README.md""#,
    ));
    assert!(
        e[0].contains("[admin] tls client_ca: no PEM certificate"),
        "{e:?}"
    );
    let e = errors(with(r#"cert = "localhost.crt""#));
    assert!(e[0].contains("missing field `key`"), "{e:?}");
}

#[test]
fn cluster_is_checked_with_locations() {
    let ok = parse(
        &format!("{BASE}\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nnode = \"edge-1\"\n"),
        Path::new("t.toml"),
    )
    .expect("valid");
    let c = ok.cluster.expect("cluster");
    assert_eq!(c.prefix, "/switchyard");
    assert_eq!(c.node, "edge-1");
    assert_eq!(c.lease_ttl, Duration::from_secs(5));
    assert_eq!(c.redis_timeout, Duration::from_millis(5));
    assert!(ok.services.len() == 1);

    let e = errors(&format!(
        "{BASE}\n[cluster]\netcd = [\"ftp://x:1\", \"http://127.0.0.1:2379/v3\"]\nprefix = \"nope\"\nnode = \"a b\"\nlease_ttl = \"1s\"\nredis = \"http://r:6379\"\nca = \"ca.pem\"\nusername = \"u\"\nredis_ca = \"ca.pem\"\nredis_cert = \"c.pem\"\n"
    ));
    let line = |n: usize| BASE.lines().count() + 1 + n;
    let want = [
        format!("t.toml:{}:9: etcd endpoint \"ftp://x:1\"", line(2)),
        format!(
            "t.toml:{}:22: etcd endpoint \"http://127.0.0.1:2379/v3\"",
            line(2)
        ),
        format!("t.toml:{}:10: prefix \"nope\" must start with /", line(3)),
        format!("t.toml:{}:8: node \"a b\" must be", line(4)),
        "lease_ttl must be between 2s and 300s".to_string(),
        format!("t.toml:{}:9: redis must be a redis://", line(6)),
        format!("t.toml:{}:6: ca, cert and key apply to https://", line(7)),
        "[cluster] username and password go together".to_string(),
        format!(
            "t.toml:{}:12: redis_ca, redis_cert and redis_key apply to a rediss:// redis",
            line(9)
        ),
        "[cluster] redis_cert and redis_key go together".to_string(),
    ];
    for w in &want {
        assert!(
            e.iter().any(|e| e.contains(w.as_str())),
            "no {w:?} in {e:#?}"
        );
    }
    let missing = errors(&format!("{BASE}\n[cluster]\nnode = \"a\"\n"));
    assert!(
        missing.iter().any(|e| e.contains("[cluster] needs etcd")),
        "{missing:?}"
    );
}

#[test]
fn cluster_scope_zones_need_redis_and_a_rate_or_window_kind() {
    let zones = r#"
[limits.zones.fleet]
rate = "100r/m"
burst = 10
scope = "cluster"

[limits.zones.win]
kind = "window"
rate = "10r/s"
scope = "cluster"
"#;
    let cluster = "\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nnode = \"a\"\n";
    // Without [cluster] redis: each cluster zone is refused where it says so.
    let e = errors(&format!("{BASE}{zones}"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:17:9: zone \"fleet\" has scope = \"cluster\", which needs `redis` in [cluster]"
        ),
        "{e:?}"
    );
    let e = errors(&format!("{BASE}{zones}{cluster}"));
    assert_eq!(e.len(), 2, "{e:?}");
    // With it, both kinds are shared.
    let text = format!("{BASE}{zones}{cluster}redis = \"redis://127.0.0.1:6379\"\n");
    let cfg = parse(&text, Path::new("t.toml")).expect("valid");
    assert!(cfg
        .limits
        .zones
        .iter()
        .all(|z| z.scope == crate::limits::Scope::Cluster));
    // A concurrency zone cannot be shared; an unknown scope is refused.
    let conc = format!("{BASE}\n[limits.zones.c]\nkind = \"concurrency\"\nmax = 5\nscope = \"cluster\"\n{cluster}redis = \"redis://127.0.0.1:6379\"\n");
    let e = errors(&conc);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:17:9: concurrency zone \"c\" cannot be scope = \"cluster\""),
        "{e:?}"
    );
    let e = errors(&format!(
        "{BASE}\n[limits.zones.z]\nrate = \"1r/s\"\nscope = \"fleet\"\n"
    ));
    assert!(e[0].contains("unknown zone scope \"fleet\""), "{e:?}");
    // Redis on the same machine may be reached over its socket.
    let unix = format!("{BASE}{zones}{cluster}redis = \"unix:///run/redis/redis.sock\"\n");
    assert!(errors(&unix).is_empty(), "{:?}", errors(&unix));
    let e = errors(&format!("{BASE}{cluster}redis = \"unix://redis.sock\"\n"));
    assert!(
        e[0].contains("redis must be a redis:// or rediss:// URL"),
        "{e:?}"
    );
    // The default is per node.
    let node = parse(
        &format!("{BASE}\n[limits.zones.z]\nrate = \"1r/s\"\n"),
        Path::new("t.toml"),
    )
    .expect("valid");
    assert_eq!(node.limits.zones[0].scope, crate::limits::Scope::Node);
}
