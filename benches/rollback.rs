//! Rollback benchmark: time from a canary's first failed request to all traffic back on stable, at a steady request rate, and the failures clients saw meanwhile.
//
//   cargo bench --bench rollback                 # 5 rounds at each first canary weight 1, 5, 25, 50
//   ROUNDS=3 WEIGHTS=5,50 cargo bench --bench rollback
//   SWITCHYARD_BIN=target/release/switchyard cargo bench --bench rollback
//
// Environment (all optional):
//   ROUNDS=5            rounds per starting weight (a fresh proxy and backends each round)
//   WEIGHTS=1,5,25,50   the canary's weight at the first step, in percent
//   RATE=200            client requests a second, open loop (sent on schedule, not after answers)
//   FAIL=0.2            share of the canary's requests its backend answers with 500
//   MIN_REQUESTS=20     the rollout's min_requests; MAX_ERROR_RATE=0.05 its max_error_rate
//   SWITCHYARD_BIN      the proxy binary; default: the release build cargo made for this bench
//
// Each round: backends blue (healthy) and green (FAIL) in this process, the proxy as a child
// process with blue=100 green=0, RATE GET requests a second through it, 1 s of warm-up, then
// `POST /v1/services/demo/rollouts` with steps WEIGHT..100 every 30 s (so the rollback happens in
// the first step). The clock starts at green's first 500 (the backend notes when it answered its
// first injected failure) and stops when `GET /v1/services/demo`, polled every 10 ms, shows
// green at weight 0 again. The rollback event says how many errors the decision counted (N); the
// time from green's N-th 500 to the weights is the reaction, the rest is waiting for errors (with
// the defaults the rule can first hold at the second error: 2 / min_requests 20 > 0.05). The
// load runs 1 s past that; every client request must have been answered 2xx (a failed idempotent
// canary request is retried once on blue by the proxy).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use echo::Backend;
use serde_json::{json, Value};

/// Poll period of the weights.
const POLL: Duration = Duration::from_millis(10);
/// Longest a round waits for the rollback.
const ROLLBACK_LIMIT: Duration = Duration::from_secs(60);
/// Load before the rollout starts, and after the rollback.
const WARM_UP: Duration = Duration::from_secs(1);
const COOL_DOWN: Duration = Duration::from_secs(1);

type BenchResult<T> = Result<T, String>;

fn main() {
    // `cargo bench` passes --bench; a test run (`cargo test --benches`) passes nothing to act on.
    if !std::env::args().any(|a| a == "--bench") {
        println!("rollback benchmark: run it with `cargo bench --bench rollback`");
        return;
    }
    if let Err(e) = run() {
        eprintln!("rollback bench: {e}");
        std::process::exit(1);
    }
}

/// The settings of a run, from the environment.
struct Settings {
    bin: PathBuf,
    rounds: usize,
    weights: Vec<u32>,
    rate: u32,
    fail: f64,
    min_requests: u64,
    max_error_rate: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> BenchResult<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> BenchResult<Settings> {
        let weights = std::env::var("WEIGHTS").unwrap_or_else(|_| "1,5,25,50".into());
        let weights = weights
            .split(',')
            .map(|w| match w.trim().parse::<u32>() {
                Ok(w) if (1..100).contains(&w) => Ok(w),
                _ => Err(format!("WEIGHTS: {w:?} is not a weight from 1 to 99")),
            })
            .collect::<BenchResult<Vec<u32>>>()?;
        let bin = std::env::var_os("SWITCHYARD_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_switchyard")),
            PathBuf::from,
        );
        if !bin.is_file() {
            return Err(format!("no switchyard binary at {}", bin.display()));
        }
        Ok(Settings {
            bin,
            rounds: env_or("ROUNDS", 5)?,
            weights,
            rate: env_or("RATE", 200u32)?.max(1),
            fail: env_or("FAIL", 0.2)?,
            min_requests: env_or("MIN_REQUESTS", 20)?,
            max_error_rate: env_or("MAX_ERROR_RATE", 0.05)?,
        })
    }
}

/// What one round measured.
struct Round {
    weight: u32,
    /// First canary error → weights back on stable, as polled (ms).
    detect_ms: f64,
    /// First canary error → the rollout's `finished_at` (ms, the proxy's own clock).
    engine_ms: Option<f64>,
    /// The errors the rollback decision counted, and the time from the last of them to the
    /// weights back on stable (ms).
    decided_on: u64,
    reaction_ms: Option<f64>,
    /// Green's second error → weights back on stable (ms): with min_requests 20 and
    /// max_error_rate 0.05 the rule can first hold at the second error (2/20 > 0.05), so this is
    /// the engine's lag whenever the canary had served at most 20 requests by then.
    second_ms: Option<f64>,
    /// Rollout started → first canary error (ms).
    first_error_ms: f64,
    canary_requests: u64,
    canary_errors: u64,
    client_requests: u64,
    client_failures: u64,
    reason: String,
}

fn run() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "rollback bench: {} req/s, canary fails {:.0}%, min_requests {}, max_error_rate {}, {} rounds per weight; binary {}, commit {commit}, load average {}",
        settings.rate,
        settings.fail * 100.0,
        settings.min_requests,
        settings.max_error_rate,
        settings.rounds,
        settings.bin.display(),
        loadavg()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut rounds = Vec::new();
    println!(
        "{:>6} {:>5} {:>10} {:>10} {:>3} {:>11} {:>10} {:>13} {:>14} {:>15}  reason",
        "weight",
        "round",
        "detect ms",
        "engine ms",
        "N",
        "reaction ms",
        "2nd err ms",
        "first err ms",
        "canary req/err",
        "client req/fail"
    );
    for round in 0..settings.rounds {
        for &weight in &settings.weights {
            let r = runtime.block_on(one_round(&settings, weight))?;
            println!(
                "{:>6} {:>5} {:>10.1} {:>10} {:>3} {:>11} {:>10} {:>13.1} {:>14} {:>15}  {}",
                format!("{weight}%"),
                round + 1,
                r.detect_ms,
                r.engine_ms.map_or("-".into(), |ms| format!("{ms:.1}")),
                r.decided_on,
                r.reaction_ms.map_or("-".into(), |ms| format!("{ms:.1}")),
                r.second_ms.map_or("-".into(), |ms| format!("{ms:.1}")),
                r.first_error_ms,
                format!("{}/{}", r.canary_requests, r.canary_errors),
                format!("{}/{}", r.client_requests, r.client_failures),
                r.reason
            );
            rounds.push(r);
        }
    }
    println!();
    println!("| first step | rounds | first canary error → weights on stable, median (min–max) | same by finished_at | errors decided on, median | decisive error → weights on stable, median (max) | second error → weights on stable, median (max) | canary requests before rollback, median | client requests / failed |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &weight in &settings.weights {
        let of: Vec<&Round> = rounds.iter().filter(|r| r.weight == weight).collect();
        let detect: Vec<f64> = of.iter().map(|r| r.detect_ms).collect();
        let engine: Vec<f64> = of.iter().filter_map(|r| r.engine_ms).collect();
        let canary: Vec<f64> = of.iter().map(|r| r.canary_requests as f64).collect();
        let decided: Vec<f64> = of.iter().map(|r| r.decided_on as f64).collect();
        let reaction: Vec<f64> = of.iter().filter_map(|r| r.reaction_ms).collect();
        let second: Vec<f64> = of.iter().filter_map(|r| r.second_ms).collect();
        let (min, max) = min_max(&detect);
        let ms = |v: &[f64]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} ms", median(v))
            }
        };
        println!(
            "| {weight}% | {} | {:.0} ms ({min:.0}–{max:.0}) | {} | {:.0} | {} ({:.0}) | {} ({:.0}) | {:.0} | {} / {} |",
            of.len(),
            median(&detect),
            ms(&engine),
            median(&decided),
            ms(&reaction),
            min_max(&reaction).1,
            ms(&second),
            min_max(&second).1,
            median(&canary),
            of.iter().map(|r| r.client_requests).sum::<u64>(),
            of.iter().map(|r| r.client_failures).sum::<u64>(),
        );
    }
    println!("load average at the end: {}", loadavg());
    let failures: u64 = rounds.iter().map(|r| r.client_failures).sum();
    if failures > 0 {
        return Err(format!(
            "{failures} client requests failed; the shield should have kept that at 0"
        ));
    }
    Ok(())
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn free_port() -> BenchResult<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The proxy as a child process in a temp dir; stopped (TERM, then KILL) when dropped.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn start(bin: &PathBuf, config: &str, ports: &[u16]) -> BenchResult<Proxy> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let config = config.replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).map_err(|e| format!("write config: {e}"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .map_err(|e| format!("stderr.log: {e}"))?;
        let child = Command::new(bin)
            .args(["--log-level", "warn", "serve", "--config"])
            .arg(&path)
            .env_remove("SWITCHYARD_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut proxy = Proxy { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = proxy.child.try_wait() {
                    return Err(format!(
                        "the proxy exited during start-up ({status}):\n{}",
                        proxy.stderr()
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!("the proxy did not listen on {addr} within 20s"));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Ok(proxy)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The process may have exited already; a failed kill changes nothing then.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = r#"
[server]
threads = 2
drain_timeout = "1s"
access_log = "off"
upgrade_socket = "{dir}/upgrade.sock"
state_dir = "{dir}/state"

[[listeners]]
name = "http"
address = "127.0.0.1:{http}"

[[routes]]
host = "*"
service = "demo"

[services.demo.pools.blue]
weight = 100
servers = ["{blue}"]

[services.demo.pools.green]
weight = 0
servers = ["{green}"]

[admin]
address = "127.0.0.1:{admin}"
"#;

/// Open-loop GET load: `rate` requests a second on schedule, each on a task of its own.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    last_failure: Arc<parking_lot::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: reqwest::Client, url: String, rate: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let last_failure = Arc::new(parking_lot::Mutex::new(None));
        let (s, n, f, last) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failed),
            Arc::clone(&last_failure),
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut in_flight = tokio::task::JoinSet::new();
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                n.fetch_add(1, Ordering::Relaxed);
                let (client, url, f, last) = (
                    client.clone(),
                    url.clone(),
                    Arc::clone(&f),
                    Arc::clone(&last),
                );
                in_flight.spawn(async move {
                    let why = match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(_) => return,
                            Err(e) => format!("body: {e}"),
                        },
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    f.fetch_add(1, Ordering::Relaxed);
                    *last.lock() = Some(why);
                });
                while in_flight.try_join_next().is_some() {}
            }
            while in_flight.join_next().await.is_some() {}
        });
        Load {
            stop,
            sent,
            failed,
            last_failure,
            task,
        }
    }

    /// Stops sending, waits for the answers; (sent, failed, the last failure).
    async fn finish(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        // A panicked load task shows up as requests that never counted; nothing else to do.
        let _ = self.task.await;
        let last = self.last_failure.lock().clone();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            last,
        )
    }
}

async fn admin_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> BenchResult<Value> {
    let mut req = client.request(method, url);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON ({e}): {text}"))
}

async fn admin_get(client: &reqwest::Client, url: &str) -> BenchResult<Value> {
    admin_json(client, reqwest::Method::GET, url, None).await
}

fn green_weight(service: &Value) -> Option<u64> {
    service["pools"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "green")?["weight"]
        .as_u64()
}

/// Milliseconds from `from` to the RFC 3339 time `to` (the proxy's wall clock).
fn wall_ms(from: SystemTime, to: &Value) -> Option<f64> {
    let to = humantime::parse_rfc3339_weak(to.as_str()?).ok()?;
    Some(match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    })
}

async fn one_round(settings: &Settings, weight: u32) -> BenchResult<Round> {
    let io = |e: std::io::Error| format!("backend: {e}");
    let blue = Backend::spawn("blue").map_err(io)?;
    let green = Backend::builder("green")
        .fail_ratio(settings.fail)
        .spawn()
        .map_err(io)?;
    let (http, admin) = (free_port()?, free_port()?);
    let config = CONFIG
        .replace("{http}", &http.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{blue}", &blue.addr.to_string())
        .replace("{green}", &green.addr.to_string());
    let proxy = Proxy::start(&settings.bin, &config, &[http, admin])?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("client: {e}"))?;
    let admin_url = format!("http://127.0.0.1:{admin}/v1/services/demo");

    let load = Load::start(
        client.clone(),
        format!("http://127.0.0.1:{http}/bench"),
        settings.rate,
    );
    tokio::time::sleep(WARM_UP).await;

    let mut steps: Vec<u32> = [5, 25, 50, 100]
        .into_iter()
        .filter(|&s| s > weight)
        .collect();
    steps.insert(0, weight);
    let body = json!({
        "canary": "green", "stable": "blue", "steps": steps, "interval": "30s",
        "max_error_rate": settings.max_error_rate, "min_requests": settings.min_requests,
        "shield": true,
    });
    let started = Instant::now();
    let view = admin_json(
        &client,
        reqwest::Method::POST,
        &format!("{admin_url}/rollouts"),
        Some(&body),
    )
    .await
    .map_err(|e| format!("{e}\n--- proxy stderr ---\n{}", proxy.stderr()))?;
    if view["canary_weight"].as_u64() != Some(u64::from(weight)) {
        return Err(format!("the rollout did not start at {weight}%: {view}"));
    }

    let (back, canary_requests, canary_errors) = loop {
        let service = admin_get(&client, &admin_url).await?;
        if green_weight(&service) == Some(0) {
            break (Instant::now(), green.requests(), green.injected_failures());
        }
        if started.elapsed() > ROLLBACK_LIMIT {
            return Err(format!(
                "no rollback within {ROLLBACK_LIMIT:?} at {weight}%: {service}"
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let first_error = green
        .first_injected_failure()
        .ok_or("weights back on blue before any canary error")?;
    // The first error on the wall clock, for the proxy's finished_at.
    let first_error_wall = SystemTime::now() - first_error.elapsed();

    tokio::time::sleep(COOL_DOWN).await;
    let (sent, failed, last_failure) = load.finish().await;
    let rollout = admin_get(&client, &format!("{admin_url}/rollouts/current")).await?;
    if rollout["state"] != "rolled_back" {
        return Err(format!(
            "the rollout ended {}, not rolled_back: {rollout}",
            rollout["state"]
        ));
    }
    let events = admin_get(&client, &format!("{admin_url}/rollouts/current/events")).await?;
    let decided_on = events["events"]
        .as_array()
        .and_then(|list| list.iter().rev().find(|e| e["event"] == "rolled_back"))
        .and_then(|e| e["errors"].as_u64())
        .ok_or_else(|| format!("no rolled_back event with an error count: {events}"))?;
    let times = green.injected_failure_times();
    let decisive = usize::try_from(decided_on)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| times.get(i).copied());
    let since = |t: Instant| back.duration_since(t).as_secs_f64() * 1000.0;
    let mut reason = rollout["reason"].as_str().unwrap_or("-").to_string();
    if let Some(why) = last_failure {
        reason.push_str(&format!(" [last client failure: {why}]"));
    }
    drop(proxy);
    Ok(Round {
        weight,
        detect_ms: back.duration_since(first_error).as_secs_f64() * 1000.0,
        engine_ms: wall_ms(first_error_wall, &rollout["finished_at"]),
        decided_on,
        reaction_ms: decisive.map(since),
        second_ms: times.get(1).copied().map(since),
        first_error_ms: first_error.duration_since(started).as_secs_f64() * 1000.0,
        canary_requests,
        canary_errors,
        client_requests: sent,
        client_failures: failed,
        reason,
    })
}
