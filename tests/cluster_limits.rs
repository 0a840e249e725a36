//! Fleet-wide limits: three real Switchyard nodes on one real etcd count a `scope = "cluster"` zone in one real Redis, so a client gets the zone's limit once for the fleet; while Redis is slow (SIGSTOP) or down (killed) each node falls back to `rate / nodes` without waiting on it again, and counts in Redis once it is back.

use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// The test's Redis timeout: the default (5 ms) is for a production node; a debug build on a busy
/// 2-core machine may be descheduled that long, which would count as "Redis slow" mid-test.
const TIMEOUT: Duration = Duration::from_millis(100);

/// Zone `fleet`: 100 r/m with burst 99 (100 at once) per `x-client`, shared by the fleet; zone
/// `win`: a shared window of 10 per minute, on `/w`; zone `big`: a shared window of 3000 per hour,
/// large enough for leases (`limits::lease`), on `/big`.
fn node(etcd: &Etcd, redis: &Redis, name: &str) -> Running {
    node_with(etcd, redis, name, "")
}

/// [`node`] with more `[cluster]` keys.
fn node_with(etcd: &Etcd, redis: &Redis, name: &str, cluster: &str) -> Running {
    World::new()
        .backend("blue")
        .route_with(Route::new("*", "api").path("/w").set("limits", vec!["win"]))
        .route_with(Route::new("*", "api").path("/big").set("limits", vec!["big"]))
        .route_with(Route::new("*", "api").set("limits", vec!["fleet"]))
        .pool("api", "blue", 1, &["blue"])
        .admin()
        .toml(&format!(
            "{}timeout = \"1s\"\nredis = \"{}\"\nredis_timeout = \"{}ms\"\n{cluster}",
            etcd.cluster_toml("/sy/limits", name),
            redis.url(),
            TIMEOUT.as_millis()
        ))
        .toml(
            "[limits.zones.fleet]\nkey = \"header:x-client\"\nrate = \"100r/m\"\nburst = 99\nscope = \"cluster\"\n\n\
             [limits.zones.win]\nkind = \"window\"\nkey = \"header:x-client\"\nrate = \"10r/m\"\nscope = \"cluster\"\n\n\
             [limits.zones.big]\nkind = \"window\"\nkey = \"header:x-client\"\nrate = \"3000r/h\"\nscope = \"cluster\"\n",
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

    // Leases: `big` allows 3000 per hour, so a node may take up to 3000 × 5 % / 3 nodes = 50 of
    // a client's requests per call and spend them itself for up to 5 s; each lease asks for
    // twice what the key's last one spent (1 for a key new to the node).
    // gina, on node a: 1, then 2 (1 left, spent by the 3rd request), then 4 (3 left).
    let keys_before = redis.keys("/sy/limits/limits/big/*");
    let gina = round(&nodes[..1], "gina", "/big", 4);
    let gina_taken = Instant::now();
    assert_eq!(gina.passed(), 4);
    let gina_key = redis
        .keys("/sy/limits/limits/big/*")
        .into_iter()
        .find(|k| !keys_before.contains(k))
        .expect("gina's key in Redis");
    let counted = |key: &str| -> u64 {
        let fields = redis.cli(&["HMGET", key, "c", "p"]).unwrap_or_default();
        fields.lines().filter_map(|v| v.parse::<u64>().ok()).sum()
    };
    assert_eq!(
        counted(&gina_key),
        1 + 2 + 4,
        "three leases counted in Redis"
    );
    // frank: 3000 requests round-robin over the nodes, then 150 more. Redis sees one call per
    // lease (1, 2, 4 ... 32, then 50 at a time: about 25 per node), not one per request; the fleet lets through the zone's 3000 and never more (the
    // sliding window itself lets in 3000 × elapsed / 1 h more should the hour turn meanwhile),
    // and at most 3 × 49 fewer (requests leased but not spent).
    let calls = redis.calls("evalsha");
    let started = Instant::now();
    let frank = round(&nodes, "frank", "/big", 3000);
    let leased_calls = redis.calls("evalsha") - calls;
    let more = round(&nodes, "frank", "/big", 150);
    let turn = (3000.0 * started.elapsed().as_secs_f64() / 3600.0).ceil() as usize;
    let passed = frank.passed() + more.passed();
    eprintln!(
        "leases: {} + {} of 3000 + 150 passed ({:?}, {:?} per node) in {:?}; {leased_calls} calls to Redis for the first 3000",
        frank.passed(),
        more.passed(),
        frank.passed_per_node,
        more.passed_per_node,
        started.elapsed()
    );
    assert!(
        (3000 - 3 * 49..=3000 + turn).contains(&passed),
        "{passed} passed"
    );
    assert!(leased_calls <= 3000 / 20, "{leased_calls} calls to Redis");
    // gina's last lease expires 5 s after node a took it (a little before `gina_taken`): no
    // request can see that without spending from it, so this waits out the lifetime, with a
    // margin. The 3 unspent go back to Redis: with her next request, which then takes 2 (her
    // last lease spent 1), or earlier, at the zones' sweep (every 10 s), which also forgets the
    // key, so that her next request takes 1. Without the give-back Redis would count 8 or 9.
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(gina_taken.elapsed()));
    let gina = round(&nodes[..1], "gina", "/big", 1);
    assert_eq!(gina.passed(), 1);
    let now = counted(&gina_key);
    assert!(
        now == 7 - 3 + 2 || now == 7 - 3 + 1,
        "{now} counted: 3 given back, then 2 (or 1) taken"
    );

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

/// `rediss://` with the fleet's own CA and a client certificate (Redis's `tls-auth-clients yes`):
/// a node with both counts its cluster zone in Redis over TLS; a node without the certificate is
/// refused by Redis, says why in `GET /v1/cluster`, and counts on its own.
#[test]
fn a_cluster_zone_counts_in_redis_over_tls_with_a_client_certificate() {
    let etcd = Etcd::start();
    let redis = Redis::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let ca = format!("redis_ca = \"{CERTS}/test-ca.crt\"\n");
    let good = node_with(
        &etcd,
        &redis,
        "a",
        &format!("{ca}redis_cert = \"{CERTS}/client.crt\"\nredis_key = \"{CERTS}/client.key\"\n"),
    );
    let bare = node_with(&etcd, &redis, "b", &ca);
    let good = std::slice::from_ref(&good);
    wait_all(good, "switchyard_redis_up", 1.0);
    // The zone's 100 at once for one client, counted in Redis (plus one more per 600 ms the
    // round took: the rate refills meanwhile).
    let started = Instant::now();
    let r = round(good, "tls-alice", "/", 120);
    let refilled = (started.elapsed().as_millis() / 600) as usize;
    assert!(
        (100..=100 + refilled).contains(&r.passed()),
        "{} passed in {:?}",
        r.passed(),
        started.elapsed()
    );
    assert_eq!(fallbacks(good), 0.0);
    assert!(!redis.keys("/sy/limits/limits/fleet/*").is_empty());

    // Without a client certificate Redis ends the handshake: the probe says so and the node
    // counts on its own (a share of the zone: 2 nodes live, 50 at once).
    let said = wait_until(Duration::from_secs(20), || {
        let view = bare.admin().get("/v1/cluster");
        view.json["redis"]["state"] == "down"
            && view.json["redis"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty() && r != "not connected yet")
    });
    let view = bare.admin().get("/v1/cluster");
    assert!(said, "{}", view.text);
    eprintln!(
        "without a client certificate: {}",
        view.json["redis"]["reason"]
    );
    let bare = std::slice::from_ref(&bare);
    let r = round(bare, "tls-bob", "/", 20);
    assert_eq!(r.passed(), 20);
    assert_eq!(fallbacks(bare), 20.0);
    assert_eq!(gauge(&bare[0], "switchyard_redis_up"), 0.0);
}
