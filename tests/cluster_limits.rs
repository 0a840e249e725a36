//! Fleet-wide limits: three real Switchyard nodes on one real etcd count a `scope = "cluster"` zone in one real Redis, so a client gets the zone's limit once for the fleet; while Redis is slow (SIGSTOP) or down (killed) each node falls back to `rate / nodes` without waiting on it again, and counts in Redis once it is back.

use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// The test's Redis timeout: the default (5 ms) is for a production node; a debug build on a busy
/// 2-core machine may be descheduled that long, which would count as "Redis slow" mid-test.
const TIMEOUT: Duration = Duration::from_millis(100);

/// Zone `fleet`: 100 r/m with burst 99 (100 at once) per `x-client`, shared by the fleet; zone
/// `win`: a shared window of 10 per minute, on `/w`.
fn node(etcd: &Etcd, redis: &Redis, name: &str) -> Running {
    World::new()
        .backend("blue")
        .route_with(Route::new("*", "api").path("/w").set("limits", vec!["win"]))
        .route_with(Route::new("*", "api").set("limits", vec!["fleet"]))
        .pool("api", "blue", 1, &["blue"])
        .admin()
        .toml(&format!(
            "{}timeout = \"1s\"\nredis = \"{}\"\nredis_timeout = \"{}ms\"\n",
            etcd.cluster_toml("/sy/limits", name),
            redis.url(),
            TIMEOUT.as_millis()
        ))
        .toml(
            "[limits.zones.fleet]\nkey = \"header:x-client\"\nrate = \"100r/m\"\nburst = 99\nscope = \"cluster\"\n\n\
             [limits.zones.win]\nkind = \"window\"\nkey = \"header:x-client\"\nrate = \"10r/m\"\nscope = \"cluster\"\n",
        )
        .start(BIN)
}

fn metrics(n: &Running) -> String {
    n.admin().get("/metrics").text
}

fn gauge(n: &Running, series: &str) -> f64 {
    metric_value(&metrics(n), series).unwrap_or(-1.0)
}

/// Waits until every node shows `series` at `value`.
fn wait_all(nodes: &[Running], series: &str, value: f64) {
    for n in nodes {
        let ok = wait_until(Duration::from_secs(20), || gauge(n, series) == value);
        assert!(
            ok,
            "{series} never became {value}: {}\n{}",
            gauge(n, series),
            n.proxy.stderr()
        );
    }
}

fn fallbacks(nodes: &[Running]) -> f64 {
    nodes
        .iter()
        .map(|n| gauge(n, "switchyard_limit_fallback_total{zone=\"fleet\"}"))
        .sum()
}

/// What `count` requests from `client`, sent round-robin over the nodes, got.
struct Round {
    passed_per_node: Vec<usize>,
    /// Requests that took at least the Redis timeout, and the slowest one.
    slow: usize,
    slowest: Duration,
}

impl Round {
    fn passed(&self) -> usize {
        self.passed_per_node.iter().sum()
    }
}

fn round(nodes: &[Running], client: &str, path: &str, count: usize) -> Round {
    let http = http1_client();
    let mut r = Round {
        passed_per_node: vec![0; nodes.len()],
        slow: 0,
        slowest: Duration::ZERO,
    };
    for i in 0..count {
        let n = i % nodes.len();
        let started = Instant::now();
        let status = http
            .get(nodes[n].url("api.test", path))
            .header("x-client", client)
            .send()
            .expect("the node answers")
            .status()
            .as_u16();
        let took = started.elapsed();
        assert!(status == 200 || status == 429, "status {status}");
        if status == 200 {
            r.passed_per_node[n] += 1;
        }
        if took >= TIMEOUT {
            r.slow += 1;
        }
        r.slowest = r.slowest.max(took);
    }
    r
}

#[test]
fn a_cluster_zone_counts_once_for_the_fleet_and_falls_back_to_a_share_per_node_without_redis() {
    let etcd = Etcd::start();
    let mut redis = Redis::start();
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|name| node(&etcd, &redis, name))
        .collect();
    wait_all(&nodes, "switchyard_cluster_nodes", 3.0);
    wait_all(&nodes, "switchyard_redis_up", 1.0);

    // Healthy: 150 requests from one client over 3 nodes; 100 at once, then one per 600 ms.
    // A node-scope zone would let 150 through (50 per node, each under its own 100).
    let alice = round(&nodes, "alice", "/", 150);
    eprintln!(
        "Redis up: {} of 150 passed ({:?} per node), slowest {:?}",
        alice.passed(),
        alice.passed_per_node,
        alice.slowest
    );
    assert!(
        (90..=110).contains(&alice.passed()),
        "{:?}",
        alice.passed_per_node
    );
    assert_eq!(fallbacks(&nodes), 0.0, "all counted in Redis");
    // Another client has its own count; the keys live under the fleet's prefix and the zone.
    let bob = round(&nodes, "bob", "/", 30);
    assert_eq!(bob.passed(), 30);
    assert!(!redis.keys("/sy/limits/limits/fleet/*").is_empty());
    // A shared window: 10 per minute for the fleet, exactly (a fresh key).
    let win = round(&nodes, "alice", "/w", 30);
    assert_eq!(win.passed(), 10, "{:?}", win.passed_per_node);

    // Slow (SIGSTOP): the first request on each node waits the timeout, marks Redis down and
    // falls back; no later request waits on it. Each node allows 100 / 3 = 33 r/m, burst
    // 99 / 3 = 33: 34 at once, then one per 1.8 s.
    let before = fallbacks(&nodes);
    redis.pause();
    let carol = round(&nodes, "carol", "/", 150);
    eprintln!(
        "Redis paused: {} of 150 passed ({:?} per node), {} request(s) took >= {TIMEOUT:?}, slowest {:?}",
        carol.passed(),
        carol.passed_per_node,
        carol.slow,
        carol.slowest
    );
    for passed in &carol.passed_per_node {
        assert!((30..=37).contains(passed), "{:?}", carol.passed_per_node);
    }
    // One timeout per node (the probe keeps Redis down meanwhile); a busy machine may add one.
    assert!(carol.slow <= 6, "{} slow requests", carol.slow);
    assert!(
        carol.slowest < Duration::from_secs(1),
        "{:?}",
        carol.slowest
    );
    for n in &nodes {
        assert_eq!(gauge(n, "switchyard_redis_up"), 0.0);
        let text = metrics(n);
        // No shared check took past 250 ms (the timeout is 100 ms).
        let count = metric_value(&text, "switchyard_limit_shared_check_seconds_count");
        let quick = metric_value(
            &text,
            "switchyard_limit_shared_check_seconds_bucket{le=\"0.25\"}",
        );
        assert_eq!(count, quick, "a check took over 250 ms");
    }
    assert!(fallbacks(&nodes) - before >= 147.0);
    let view = nodes[0].admin().get("/v1/cluster");
    assert_eq!(view.json["redis"]["state"], "down", "{}", view.text);

    // Back (SIGCONT): the probe marks it up within about a second.
    redis.unpause();
    wait_all(&nodes, "switchyard_redis_up", 1.0);

    // Down (killed): connections refused, every request falls back at once.
    redis.kill();
    let dave = round(&nodes, "dave", "/", 150);
    eprintln!(
        "Redis killed: {} of 150 passed ({:?} per node), slowest {:?}",
        dave.passed(),
        dave.passed_per_node,
        dave.slowest
    );
    for passed in &dave.passed_per_node {
        assert!((30..=37).contains(passed), "{:?}", dave.passed_per_node);
    }
    assert!(dave.slowest < Duration::from_secs(1), "{:?}", dave.slowest);
    let log = nodes[0].proxy.stderr();
    assert!(
        log.contains("cluster zones fall back to local limits"),
        "{log}"
    );

    // Restarted (empty): counted in Redis again, the fleet's 100 once more.
    redis.resume();
    wait_all(&nodes, "switchyard_redis_up", 1.0);
    let before = fallbacks(&nodes);
    let erin = round(&nodes, "erin", "/", 150);
    eprintln!(
        "Redis back: {} of 150 passed ({:?} per node)",
        erin.passed(),
        erin.passed_per_node
    );
    assert!(
        (90..=110).contains(&erin.passed()),
        "{:?}",
        erin.passed_per_node
    );
    assert_eq!(fallbacks(&nodes), before, "counted in Redis again");
    let view = nodes[1].admin().get("/v1/cluster");
    assert_eq!(view.json["redis"]["state"], "up", "{}", view.text);
}
