//! `switchyard demo`: two built-in backends (pools blue and green) behind the proxy, from an embedded config.
//
// The demo also runs the admin API, so `switchyard ctl` can be tried against it; its token comes
// from SWITCHYARD_TOKEN through the config's environment fallback (none when unset: loopback only).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::backend::Backend;
use crate::server::{self, ServeError, ServeOptions};

const TEMPLATE: &str = include_str!("demo.toml");

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    /// Address of the admin API.
    pub admin: SocketAddr,
    /// Share of the green pool's requests answered with 500 (0.0 = healthy).
    pub green_fail_ratio: f64,
}

/// The demo config text with every placeholder filled in; the admin API listens on `admin`.
pub fn render(
    listen: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
    dir: &std::path::Path,
    admin: SocketAddr,
) -> String {
    TEMPLATE
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{state_dir}", &dir.join("state").display().to_string())
        .replace("{blue}", &blue.to_string())
        .replace("{green}", &green.to_string())
        .replace(
            "{access_log}",
            &dir.join("access.log").display().to_string(),
        )
        .replace(
            "{upgrade_socket}",
            &dir.join("upgrade.sock").display().to_string(),
        )
}

/// Starts the backends, writes the config and serves it until stopped.
pub fn run(options: &DemoOptions) -> Result<(), ServeError> {
    let io = |e: std::io::Error| ServeError::Listener {
        name: "demo".into(),
        reason: e.to_string(),
    };
    let blue = Backend::spawn("blue").map_err(io)?;
    let green = Backend::builder("green")
        .fail_ratio(options.green_fail_ratio)
        .spawn()
        .map_err(io)?;
    std::fs::create_dir_all(&options.dir).map_err(io)?;
    let config_path = options.dir.join("switchyard.toml");
    let text = render(
        options.listen,
        blue.addr,
        green.addr,
        &options.dir,
        options.admin,
    );
    std::fs::write(&config_path, text).map_err(io)?;

    let url = format!("http://{}", options.listen);
    let admin_url = format!("http://{}", options.admin);
    // `ctl` defaults to 127.0.0.1:9900; another address has to be named.
    let ctl = if admin_url == crate::ctl::DEFAULT_ADMIN_URL {
        "switchyard ctl".to_string()
    } else {
        format!("switchyard ctl --admin {admin_url}")
    };
    let has_token = std::env::var_os("SWITCHYARD_TOKEN").is_some_and(|t| !t.is_empty());
    let (token_note, auth) = if has_token {
        (
            "token from SWITCHYARD_TOKEN",
            " -H \"Authorization: Bearer $SWITCHYARD_TOKEN\"",
        )
    } else {
        ("no token: set SWITCHYARD_TOKEN to require one", "")
    };
    println!("Switchyard demo");
    println!("  proxy    {url}  (any host) -> service \"demo\": blue=100 green=0");
    println!(
        "  blue     http://{}  green  http://{}",
        blue.addr, green.addr
    );
    println!("  admin    {admin_url}  ({token_note})");
    println!("  config   {}", config_path.display());
    println!("  log      {}", options.dir.join("access.log").display());
    println!("  state    {}", options.dir.join("state").display());
    println!();
    println!("Try next:");
    println!("  curl -s {url}/hello                 # answered by pool blue");
    println!("  curl -s -H 'Host: api.example.com' {url}/v1/users");
    println!("  {ctl} status");
    println!("  {ctl} weights demo blue=50 green=50");
    println!("  for i in $(seq 10); do curl -s {url}/ | cut -c1-22; done");
    println!("  {ctl} switch demo green");
    println!("  {ctl} clear-weights demo        # back to the config's weights");
    println!("  curl -s{auth} {admin_url}/v1/services   # the API itself: docs/admin-api.md");
    println!("  tail -f {}", options.dir.join("access.log").display());
    println!("Stop with Ctrl-C. Weights set with ctl are kept in the state dir across restarts.");

    let result = server::serve(&config_path, &ServeOptions::default());
    drop((blue, green));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid() {
        let dir = std::env::temp_dir();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let admin: SocketAddr = "127.0.0.1:9900".parse().expect("addr");
        let text = render(a, a, "127.0.0.1:2".parse().expect("addr"), &dir, admin);
        let cfg =
            crate::config::parse(&text, &dir.join("demo.toml")).expect("demo config is valid");
        let pools: Vec<(String, u32)> = cfg.services[0]
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.weight))
            .collect();
        assert_eq!(
            pools,
            vec![("blue".to_string(), 100), ("green".to_string(), 0)]
        );
        let admin_cfg = cfg.admin.expect("the demo runs the admin API");
        assert_eq!(admin_cfg.address, admin);
        assert_eq!(cfg.server.state_dir, dir.join("state"));
    }
}
