//! In-memory tests of config parsing and validation messages.

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
        e[0].contains("invalid socket address \"nonsense\""),
        "{e:?}"
    );
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
