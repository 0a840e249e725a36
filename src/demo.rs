//! `switchyard demo`: two built-in backends (pools blue and green) behind the proxy, from an embedded config.
//
// The demo also runs the admin API, so `switchyard ctl` can be tried against it; its token comes
// from SWITCHYARD_TOKEN through the config's environment fallback (none when unset: loopback only).
// It sends light background traffic through its own proxy (--traffic), so that a canary rollout
// started with ctl has requests to judge, and --bad-canary makes green fail a share of them.
// Every run starts from the config's weights (blue=100 green=0): the state dir of the last run is
// cleared first unless --keep-state. The backends are the `echo` crate's (feature `demo`), the
// traffic goes through the same HTTP client crate as `ctl` (reqwest).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use echo::Backend;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

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
    /// Background requests a second through the demo proxy (0 = none).
    pub traffic: u32,
    /// Keep the last run's runtime state (weights set with ctl, rollouts) instead of clearing it.
    pub keep_state: bool,
}

/// The demo's state dir inside its directory.
fn state_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("state")
}

/// Clears the last run's runtime state, so that the config's weights (blue=100 green=0) apply
/// as the banner says; with `keep` the state dir is left as it is.
pub fn prepare_state(dir: &std::path::Path, keep: bool) -> std::io::Result<()> {
    if keep {
        return Ok(());
    }
    match std::fs::remove_dir_all(state_dir(dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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
        .replace("{state_dir}", &state_dir(dir).display().to_string())
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
    prepare_state(&options.dir, options.keep_state).map_err(io)?;
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
    println!("  dashboard {admin_url}/  (pools, weights, rollouts, live; in a browser)");
    println!("  config   {}", config_path.display());
    println!(
        "  pid      {pid}  (after editing the config: kill -HUP {pid} reloads it)",
        pid = std::process::id()
    );
    println!("  log      {}", options.dir.join("access.log").display());
    println!("  state    {}", state_dir(&options.dir).display());
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
    println!();
    print!("{}", rollout_hints(options, &ctl, &url));
    println!("Stop with Ctrl-C. Each run starts from blue=100 green=0: the state of the last run is cleared");
    println!("(run with --keep-state to keep the weights and rollouts set with ctl).");

    let traffic = match options.traffic {
        0 => None,
        n => Some(Traffic::start(options.listen, n).map_err(io)?),
    };
    let result = server::serve(&config_path, &ServeOptions::default());
    drop(traffic);
    drop((blue, green));
    result
}

/// The "canary rollout" part of the next steps printed at start.
fn rollout_hints(options: &DemoOptions, ctl: &str, url: &str) -> String {
    let mut out = String::from("A canary rollout, in another terminal:\n");
    if options.traffic > 0 {
        out.push_str(&format!(
            "  (the demo sends {} requests/s through {url} and reports every {}s what answered them)\n",
            options.traffic,
            TRAFFIC_REPORT.as_secs()
        ));
    } else {
        out.push_str(&format!(
            "  (no background traffic with --traffic 0; send some: while :; do curl -s {url}/ >/dev/null; done)\n"
        ));
    }
    let start = format!("{ctl} rollout start demo --canary green --wait");
    if options.green_fail_ratio > 0.0 {
        out.push_str(&format!(
            "  {start}\n      # green fails {:.0}% of its requests: the rollout rolls back on its own, and\n      # clients see no failure (a failed GET on green is retried once on blue)\n",
            options.green_fail_ratio * 100.0
        ));
    } else {
        out.push_str(&format!(
            "  {start}\n      # green step by step to 100%; restart with --bad-canary to watch one roll back\n"
        ));
    }
    out.push_str(&format!(
        "  {ctl} rollout events demo      # what it did and why\n  {ctl} clear-weights demo        # start again from blue=100\n"
    ));
    out
}

/// How often the background traffic reports what it saw.
const TRAFFIC_REPORT: Duration = Duration::from_secs(10);
/// Longest a background request may take before it counts as failed.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer a background request reads.
const TRAFFIC_MAX_RESPONSE: u64 = 1 << 20;

/// Background GET requests through the demo proxy at a steady rate, from a thread of their own,
/// so that a rollout has canary traffic to judge; every 10 s one line says which pool answered
/// and how many requests failed as the client saw them. Stops when dropped.
struct Traffic {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the background requests saw since the last report.
#[derive(Default)]
struct Tally {
    answered_by: BTreeMap<String, u64>,
    failed: u64,
    last_failure: Option<String>,
}

impl Traffic {
    /// Sends `per_second` requests a second to `target` once it accepts connections.
    fn start(target: SocketAddr, per_second: u32) -> std::io::Result<Traffic> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("demo-traffic".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = send_traffic(target, per_second) => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        Ok(Traffic {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may be gone already; nothing to tell it then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic there has been reported by the panic hook already.
            let _ = thread.join();
        }
    }
}

/// The traffic loop: waits for the proxy to listen, then one request per tick, open loop (a slow
/// answer does not hold the next request back), and a report every [`TRAFFIC_REPORT`].
async fn send_traffic(target: SocketAddr, per_second: u32) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .user_agent("switchyard-demo-traffic")
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            log::error!("demo traffic: cannot build its HTTP client: {e}");
            return;
        }
    };
    let url = format!("http://{target}/demo-traffic");
    while TcpStream::connect(target).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut report =
        tokio::time::interval_at(tokio::time::Instant::now() + TRAFFIC_REPORT, TRAFFIC_REPORT);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let tally = Arc::clone(&tally);
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let result = tokio::time::timeout(TRAFFIC_TIMEOUT, traffic_request(&client, &url))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {TRAFFIC_TIMEOUT:?}")));
                    let mut tally = tally.lock();
                    match result {
                        Ok(backend) => *tally.answered_by.entry(backend).or_default() += 1,
                        Err(why) => {
                            tally.failed += 1;
                            tally.last_failure = Some(why);
                        }
                    }
                });
            }
            _ = report.tick() => {
                let seen = std::mem::take(&mut *tally.lock());
                println!("{}", traffic_line(&seen));
            }
        }
    }
}

/// `traffic, last 10s: blue 450, green 50; failed 0 (as clients see it)`
fn traffic_line(tally: &Tally) -> String {
    let pools: Vec<String> = tally
        .answered_by
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    let answered = if pools.is_empty() {
        "no answers".to_string()
    } else {
        pools.join(", ")
    };
    let last = match &tally.last_failure {
        Some(why) => format!(", the last: {why}"),
        None => String::new(),
    };
    format!(
        "traffic, last {}s: {answered}; failed {} (as clients see it{last})",
        TRAFFIC_REPORT.as_secs(),
        tally.failed
    )
}

/// One `GET /demo-traffic` through the proxy; the answering backend's name, or why it failed.
async fn traffic_request(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut response = client
        .get(url)
        .header(reqwest::header::HOST, "demo.traffic")
        .send()
        .await
        .map_err(|e| {
            let stage = if e.is_connect() { "connect" } else { "send" };
            format!("{stage}: {}", crate::ctl::root_cause(&e))
        })?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("read: {}", crate::ctl::root_cause(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > TRAFFIC_MAX_RESPONSE {
            return Err(format!("an answer over {TRAFFIC_MAX_RESPONSE} bytes"));
        }
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(body["backend"].as_str().unwrap_or("?").to_string())
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
        let rollout = &cfg.services[0].rollout;
        assert_eq!(
            (rollout.steps.as_slice(), rollout.interval.as_secs()),
            (&[10, 25, 50, 100][..], 5)
        );
        let admin_cfg = cfg.admin.expect("the demo runs the admin API");
        assert_eq!(admin_cfg.address, admin);
        assert_eq!(cfg.server.state_dir, dir.join("state"));
    }

    #[test]
    fn a_run_starts_from_the_config_weights_unless_it_keeps_the_state() {
        use crate::state::{Overrides, StateStore};
        let dir = tempfile::tempdir().expect("tempdir");
        let load = || {
            StateStore::open(&state_dir(dir.path()))
                .and_then(|store| store.load())
                .expect("state")
        };
        // The last run left green=100 (`ctl weights demo blue=0 green=100`).
        let mut last_run = Overrides::new();
        last_run.insert(
            "demo".into(),
            [("blue".to_string(), 0), ("green".to_string(), 100)].into(),
        );
        StateStore::open(&state_dir(dir.path()))
            .and_then(|store| store.save(&last_run, &Default::default()))
            .expect("save");
        prepare_state(dir.path(), true).expect("keep");
        assert_eq!(load().weights, last_run, "--keep-state keeps it");
        prepare_state(dir.path(), false).expect("clear");
        assert!(
            load().weights.is_empty(),
            "a new run starts from the config"
        );
        // Nothing to clear is fine too.
        prepare_state(&dir.path().join("never-used"), false).expect("absent");
    }

    #[test]
    fn traffic_report_and_rollout_hints() {
        let mut tally = Tally::default();
        assert_eq!(
            traffic_line(&tally),
            "traffic, last 10s: no answers; failed 0 (as clients see it)"
        );
        tally.answered_by.insert("green".into(), 5);
        tally.answered_by.insert("blue".into(), 45);
        tally.failed = 2;
        tally.last_failure = Some("HTTP 502".into());
        assert_eq!(
            traffic_line(&tally),
            "traffic, last 10s: blue 45, green 5; failed 2 (as clients see it, the last: HTTP 502)"
        );

        let a: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let mut options = DemoOptions {
            listen: a,
            dir: std::env::temp_dir(),
            admin: a,
            green_fail_ratio: 0.3,
            traffic: 50,
            keep_state: false,
        };
        let hints = rollout_hints(&options, "switchyard ctl", "http://127.0.0.1:8080");
        assert!(
            hints.contains("switchyard ctl rollout start demo --canary green --wait"),
            "{hints}"
        );
        assert!(hints.contains("green fails 30% of its requests"), "{hints}");
        assert!(hints.contains("sends 50 requests/s"), "{hints}");
        options.green_fail_ratio = 0.0;
        options.traffic = 0;
        let hints = rollout_hints(&options, "switchyard ctl", "http://127.0.0.1:8080");
        assert!(hints.contains("--bad-canary"), "{hints}");
        assert!(hints.contains("no background traffic"), "{hints}");
    }
}
