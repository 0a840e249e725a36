//! `switchyard demo`: two built-in backends (pools blue and green) behind the proxy, from an embedded config.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::backend::Backend;
use crate::server::{self, ServeError, ServeOptions};

const TEMPLATE: &str = include_str!("demo.toml");

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    /// Share of the green pool's requests answered with 500 (0.0 = healthy).
    pub green_fail_ratio: f64,
}

/// The demo config text with every placeholder filled in.
pub fn render(
    listen: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
    dir: &std::path::Path,
) -> String {
    TEMPLATE
        .replace("{listen}", &listen.to_string())
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
    let text = render(options.listen, blue.addr, green.addr, &options.dir);
    std::fs::write(&config_path, text).map_err(io)?;

    let url = format!("http://{}", options.listen);
    println!("Switchyard demo");
    println!("  proxy    {url}  (any host) -> service \"demo\": blue=100 green=0");
    println!(
        "  blue     http://{}  green  http://{}",
        blue.addr, green.addr
    );
    println!("  config   {}", config_path.display());
    println!("  log      {}", options.dir.join("access.log").display());
    println!();
    println!("Try next:");
    println!("  curl -s {url}/hello                 # answered by pool blue");
    println!("  curl -s -H 'Host: api.example.com' {url}/v1/users");
    println!("  # shift traffic: set blue to 50 and green to 50, then reload");
    println!(
        "  sed -i '0,/weight = 100/s//weight = 50/; 0,/weight = 0/s//weight = 50/' {}",
        config_path.display()
    );
    println!("  kill -HUP {}", std::process::id());
    println!("  for i in $(seq 10); do curl -s {url}/ | cut -c1-22; done");
    println!("  tail -f {}", options.dir.join("access.log").display());
    println!("Stop with Ctrl-C.");

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
        let text = render(a, a, "127.0.0.1:2".parse().expect("addr"), &dir);
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
    }
}
