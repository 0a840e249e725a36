//! `switchyard import nginx`: nginx.conf (and its includes) to a commented Switchyard config.
//!
//! [`parse`] reads the files into directives with positions; [`convert`] walks them with nginx's
//! inheritance (an inner level that sets an array directive such as `add_header` replaces the
//! outer ones) and writes the TOML; [`super::finish`] checks the result.

mod convert;
pub mod parse;
pub mod values;

use std::path::Path;

use super::{ImportError, Outcome};

/// Converts the nginx config at `path`; `out` is where the TOML will be written (it anchors the
/// relative paths Switchyard reads).
pub fn convert_file(path: &Path, out: &Path) -> Result<Outcome, ImportError> {
    let mut parser = parse::Parser::new(path);
    let top = parser.file(path, 0)?;
    convert::convert(&top, &parser.prefix, out)
}

/// Converts nginx config text named `name` whose includes resolve against `prefix` (for tests
/// and the fuzz target).
pub fn convert_text(
    text: &str,
    name: &str,
    prefix: &Path,
    out: &Path,
) -> Result<Outcome, ImportError> {
    let mut parser = parse::Parser::new(&prefix.join("nginx.conf"));
    let top = parser.text(text, name, 0)?;
    convert::convert(&top, &parser.prefix, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` converted (a failed conversion fails the test), as TOML text and parsed.
    fn converted(text: &str) -> (String, toml::Value) {
        let out = Path::new("/nonexistent/switchyard.toml");
        let toml = match convert_text(text, "t.conf", Path::new("/nonexistent"), out) {
            Ok(o) => o.toml,
            Err(e) => panic!("{e}"),
        };
        let value = toml::from_str(&toml).expect("TOML");
        (toml, value)
    }

    /// A `return 303 https://...` server (found by the fuzz target): a listener cannot redirect
    /// with 303, so it becomes the host's redirect route, with 303 kept.
    #[test]
    fn a_303_redirect_to_https_stays_a_route_redirect() {
        let text = "http {\n  server {\n    listen 80;\n    server_name a.test;\n    return 303 https://$host$request_uri;\n  }\n}\n";
        let (toml, value) = converted(text);
        // The host's route, and the catch-all of the port's default server.
        let routes = value["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2, "{toml}");
        for r in routes {
            assert_eq!(r["redirect"]["code"].as_integer(), Some(303), "{toml}");
        }
        assert!(!toml.contains("redirect_code"), "{toml}");
    }

    /// `listen 080` and `listen 80` (found by the fuzz target) are one socket, as validation
    /// counts them: both servers are served on one listener, written the way Switchyard reads it.
    #[test]
    fn two_spellings_of_one_listen_address_are_one_listener() {
        let text = "http {\n  server {\n    listen 80;\n    server_name a.test;\n    location / { proxy_pass http://a:8080; }\n  }\n  server {\n    listen 080;\n    server_name b.test;\n    location / { proxy_pass http://b:8080; }\n  }\n  server {\n    listen [::0001]:8443;\n    server_name c.test;\n    location / { proxy_pass http://c:8080; }\n  }\n}\n";
        let (toml, value) = converted(text);
        let mut addresses: Vec<&str> = value["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .filter_map(|l| l["address"].as_str())
            .collect();
        addresses.sort_unstable();
        assert_eq!(addresses, ["0.0.0.0:80", "[::1]:8443"], "{toml}");
        let hosts: Vec<&str> = value["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .filter_map(|r| r["host"].as_str())
            .collect();
        for h in ["a.test", "b.test", "c.test"] {
            assert!(hosts.contains(&h), "{h} not routed:\n{toml}");
        }
    }

    /// `rate=000r/m` (found by the fuzz target) allows nothing, which nginx refuses and
    /// validation too: the zone is reported, not carried over. `rate=005r/s` is 5 a second.
    #[test]
    fn a_rate_is_written_as_switchyard_reads_it() {
        let text = "http {\n  limit_req_zone $binary_remote_addr zone=none:10m rate=000r/m;\n  limit_req_zone $binary_remote_addr zone=five:10m rate=005r/s;\n  server {\n    listen 80;\n    location /a { limit_req zone=none; proxy_pass http://a:8080; }\n    location /b { limit_req zone=five; proxy_pass http://b:8080; }\n  }\n}\n";
        let (toml, value) = converted(text);
        let zones = value["limits"]["zones"].as_table().expect("zones");
        assert_eq!(zones.len(), 1, "{toml}");
        let rates: Vec<&str> = zones.values().filter_map(|z| z["rate"].as_str()).collect();
        assert_eq!(rates, ["5r/s"], "{toml}");
        assert!(
            toml.contains("needs rate=Nr/s or rate=Nr/m with N at least 1"),
            "{toml}"
        );
    }

    /// An upstream's `keepalive_timeout 0` keeps no idle connection; Switchyard takes no zero
    /// idle time, so it is written as `keepalive = 0` (no reuse), whatever `keepalive` says.
    #[test]
    fn an_upstream_without_idle_time_reuses_nothing() {
        let text = "http {\n  upstream u {\n    server a:8080;\n    keepalive_timeout 0s;\n    keepalive 16;\n  }\n  upstream v {\n    server b:8080;\n    keepalive 16;\n    keepalive_timeout 30s;\n  }\n  server {\n    listen 80;\n    location /u { proxy_pass http://u; }\n    location /v { proxy_pass http://v; }\n  }\n}\n";
        let (toml, value) = converted(text);
        let services = value["services"].as_table().expect("services");
        let upstream = |name: &str| &services[name]["upstream"];
        assert_eq!(upstream("u")["keepalive"].as_integer(), Some(0), "{toml}");
        assert!(upstream("u").get("keepalive_timeout").is_none(), "{toml}");
        assert_eq!(upstream("v")["keepalive"].as_integer(), Some(16), "{toml}");
        assert_eq!(
            upstream("v")["keepalive_timeout"].as_str(),
            Some("30s"),
            "{toml}"
        );
    }

    /// Two `server` lines whose names differ only in case (found by the fuzz target) are one
    /// server, as validation counts them: the second is reported and left out.
    #[test]
    fn servers_that_differ_only_in_case_are_listed_once() {
        let text = "http {\n  upstream app {\n    server Backend-1:8080;\n    server backend-1:8080;\n    server backend-2:8080;\n  }\n  server {\n    listen 80;\n    location / { proxy_pass http://app; }\n  }\n}\n";
        let (toml, _) = converted(text);
        let servers: Vec<&str> = toml
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains(":8080"))
            .collect();
        let first = servers
            .iter()
            .filter(|l| l.to_ascii_lowercase().contains("backend-1:8080"))
            .count();
        assert_eq!(first, 1, "{toml}");
        assert!(
            servers.iter().any(|l| l.contains("backend-2:8080")),
            "{toml}"
        );
        assert!(toml.contains("listed twice"), "{toml}");
    }

    /// Mutated fixtures: the converter answers with a config or a located error, never a panic
    /// and never a config that fails validation (the fuzz target does this at length).
    #[test]
    fn mutated_configs_never_panic_nor_fail_validation() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nginx-import");
        let out = Path::new("/nonexistent/switchyard.toml");
        let mut rng = fastrand::Rng::with_seed(16);
        for name in ["gorax.conf", "tiris.conf"] {
            let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
            let bytes = text.as_bytes();
            for i in 0..150 {
                let mut m = bytes.to_vec();
                match i % 3 {
                    0 => m.truncate(rng.usize(..m.len())),
                    1 => {
                        for _ in 0..4 {
                            let at = rng.usize(..m.len());
                            m[at] = b"{};\"'#$ ~^*.\\/\nax0="[rng.usize(..19)];
                        }
                    }
                    _ => {
                        let a = rng.usize(..m.len());
                        let b = rng.usize(a..m.len());
                        let chunk = m[a..b].to_vec();
                        let at = rng.usize(..m.len());
                        m.splice(at..at, chunk);
                    }
                }
                let text = String::from_utf8_lossy(&m);
                if let Err(ImportError::Invalid(e)) = convert_text(&text, name, &dir, out) {
                    let _ = std::fs::write("/tmp/mutation.conf", text.as_bytes());
                    panic!(
                        "mutation {i} of {name} converted to an invalid config:\n{e}\n---\n{text}"
                    );
                }
            }
        }
    }
}
