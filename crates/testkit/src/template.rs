//! Config text for tests that write their TOML by hand (exotic settings): the shared snippets and `{placeholder}` filling.

use std::fmt::Display;
use std::path::Path;

/// The repository root (where `config/`, `docs/` and `examples/` are).
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Directory with the checked-in test CA and leaf certificates.
pub const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../certs");

/// A `[server]` section for tests: one worker thread, fast shutdown, access log and upgrade socket
/// inside the proxy's temp dir. Put `{server}` in a template to get it.
pub const SERVER: &str = r#"[server]
threads = 1
drain_timeout = "1s"
access_log = "{tmp}/access.log"
upgrade_socket = "{tmp}/upgrade.sock"
state_dir = "{tmp}/state"
"#;

/// A plain `[[listeners]]` entry named "http" on 127.0.0.1:`{http}`. Put `{http_listener}` in a
/// template to get it.
pub const HTTP_LISTENER: &str = r#"[[listeners]]
name = "http"
address = "127.0.0.1:{http}"
"#;

/// A TLS `[[listeners]]` entry named "https" on 127.0.0.1:`{https}` (certificates are up to the
/// template). Put `{https_listener}` in a template to get it.
pub const HTTPS_LISTENER: &str = r#"[[listeners]]
name = "https"
address = "127.0.0.1:{https}"
tls = true
"#;

/// A catch-all route to service "api", whose one pool "blue" (weight 1) is the server `{blue}`.
/// Put `{catch_all_blue}` in a template to get it.
pub const CATCH_ALL_BLUE: &str = r#"[[routes]]
host = "*"
service = "api"

[services.api.pools.blue]
weight = 1
servers = ["{blue}"]
"#;

/// Substitutes `{name}` placeholders in a config template.
///
/// `{server}` becomes [`SERVER`], `{http_listener}` [`HTTP_LISTENER`], `{https_listener}`
/// [`HTTPS_LISTENER`], `{catch_all_blue}` [`CATCH_ALL_BLUE`] and `{certs}` the certificate
/// directory; `vars` supplies the rest (`{http}`, `{blue}`, ...). `{tmp}` is left for
/// [`crate::Proxy::start`] / [`crate::check`], which know the temp dir. Any other `{word}` left
/// over is a test bug and panics.
pub fn fill(template: &str, vars: &[(&str, &dyn Display)]) -> String {
    let mut out = template
        .replace("{server}", SERVER)
        .replace("{http_listener}", HTTP_LISTENER)
        .replace("{https_listener}", HTTPS_LISTENER)
        .replace("{catch_all_blue}", CATCH_ALL_BLUE)
        .replace("{certs}", CERTS);
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), &value.to_string());
    }
    if let Some(left) = leftover_placeholder(&out, &["tmp"]) {
        panic!("config template has an unfilled placeholder {{{left}}}:\n{out}");
    }
    out
}

/// Replaces `{tmp}` with the given directory; any other placeholder left is a test bug.
pub(crate) fn fill_tmp(config: &str, dir: &Path) -> String {
    let out = config.replace("{tmp}", &dir.display().to_string());
    if let Some(left) = leftover_placeholder(&out, &[]) {
        panic!("config has an unfilled placeholder {{{left}}}:\n{out}");
    }
    out
}

/// The first `{word}` in `text` (word = lowercase letters, digits, `_`) not in `allowed`.
pub(crate) fn leftover_placeholder(text: &str, allowed: &[&str]) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        if let Some(end) = after.find('}') {
            let word = &after[..end];
            let is_word = !word.is_empty()
                && word
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if is_word && !allowed.contains(&word) {
                return Some(word.to_string());
            }
        }
        rest = after;
    }
    None
}
