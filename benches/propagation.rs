//! Fleet propagation benchmark: how long a weight change made on one node takes to be live on the two others, over a real etcd on loopback.
//
//   cargo bench --bench propagation                         # 200 changes
//   CHANGES=500 cargo bench --bench propagation
//   SWITCHYARD_BIN=target/release/switchyard cargo bench --bench propagation
//
// Starts one etcd (Debian's etcd-server) and three nodes (service "api", pools blue and green,
// `[cluster]` on that etcd), then makes CHANGES weight changes on node A, alternating green
// between two values. The clock starts when A's `PUT /v1/services/api/weights` answers (A has
// applied it then: read-your-writes) and stops, for each of B and C, when its
// `GET /v1/services/api` (polled every POLL_MS, default 2 ms, by one thread per node) shows the
// new weight. Reports p50, p90, p99 and max per node and over both, in milliseconds.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node(bin: Bin, etcd: &Etcd, name: &str) -> Running {
    World::blue_green()
        .admin()
        .toml(&format!(
            "[cluster]\netcd = [\"{}\"]\nprefix = \"/bench\"\nnode = \"{name}\"\n",
            etcd.url()
        ))
        .start(bin)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let changes = env("CHANGES", 200);
    let poll = Duration::from_millis(env("POLL_MS", 2));
    let bin = match std::env::var("SWITCHYARD_BIN") {
        Ok(path) => Bin::new(Box::leak(path.into_boxed_str())),
        Err(_) => testkit::bin!(),
    };
    let etcd = Etcd::start();
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|n| node(bin, &etcd, n))
        .collect();
    for n in &nodes {
        let admin = n.admin();
        assert!(
            wait_until(Duration::from_secs(30), || admin.get("/health/ready").json
                ["cluster"]
                == "ok"),
            "node did not join"
        );
    }
    let a = nodes[0].admin();
    let others: Vec<Admin> = nodes[1..].iter().map(Running::admin).collect();
    let mut seen: Vec<Vec<f64>> = vec![Vec::new(); others.len()];
    for i in 0..changes {
        let green = if i % 2 == 0 { 10 } else { 20 };
        let reply = a.send(
            "PUT",
            "/v1/services/api/weights",
            Some(&json!({"blue": 100 - green, "green": green}).to_string()),
            &[],
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        let start = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = others
                .iter()
                .map(|admin| {
                    s.spawn(move || loop {
                        if admin.get("/v1/services/api").weight("green") == green {
                            return start.elapsed().as_secs_f64() * 1000.0;
                        }
                        assert!(start.elapsed() < Duration::from_secs(10), "never seen");
                        std::thread::sleep(poll);
                    })
                })
                .collect();
            for (k, h) in handles.into_iter().enumerate() {
                seen[k].push(h.join().expect("poller"));
            }
        });
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "propagation of {changes} weight changes from node a (poll {} ms; load {})",
        poll.as_millis(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut all = Vec::new();
    for (k, name) in ["b", "c"].iter().enumerate() {
        let mut v = seen[k].clone();
        v.sort_by(f64::total_cmp);
        all.extend_from_slice(&v);
        println!(
            "node {name}: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            percentile(&v, 0.5),
            percentile(&v, 0.9),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    all.sort_by(f64::total_cmp);
    println!(
        "both:   p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN)
    );
}
