//! Microbenchmarks of the request path's own work: route lookup among 10,000 hosts, the weighted
//! pick, and recording a finished request in its pool's live window.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::config::{
    Balance, HostPattern, PoolConfig, RouteConfig, RouteOptions, ServerAddress, ServerConfig,
    ServiceConfig,
};
use switchyard::rollout::{PoolWindow, WindowSpec};
use switchyard::routing::{normalize_host, RouteTable};
use switchyard::upstream::{ServerRegistry, Service};

fn route(host: HostPattern, path: &str) -> RouteConfig {
    RouteConfig {
        host,
        path: path.into(),
        strip_prefix: false,
        service: Some("svc".into()),
        static_files: None,
        redirect: None,
        options: RouteOptions::default(),
    }
}

/// 10,000 exact hosts (each with two prefixes), 1,000 wildcards and a catch-all.
fn big_table() -> RouteTable {
    let mut routes = Vec::new();
    for i in 0..10_000 {
        let host = format!("app{i}.tenant{}.example.com", i % 97);
        routes.push(route(HostPattern::Exact(host.clone()), "/"));
        routes.push(route(HostPattern::Exact(host), "/v1/auth"));
    }
    for i in 0..1_000 {
        routes.push(route(
            HostPattern::Wildcard(format!("zone{i}.example.net")),
            "/",
        ));
    }
    routes.push(route(HostPattern::Any, "/"));
    RouteTable::build(&routes, |_| Some(0))
}

fn bench_routes(c: &mut Criterion) {
    let table = big_table();
    let mut g = c.benchmark_group("route_lookup_10k_hosts");
    g.bench_function("exact_host_longest_prefix", |b| {
        b.iter(|| {
            table.lookup(
                black_box("app4711.tenant55.example.com"),
                black_box("/v1/auth/login"),
            )
        })
    });
    g.bench_function("wildcard_host", |b| {
        b.iter(|| table.lookup(black_box("a.b.zone512.example.net"), black_box("/x")))
    });
    g.bench_function("catch_all", |b| {
        b.iter(|| table.lookup(black_box("unknown.example.org"), black_box("/")))
    });
    g.bench_function("normalize_then_lookup", |b| {
        b.iter(|| {
            let host = normalize_host(black_box("app4711.tenant55.example.com:443"));
            table.lookup(&host, black_box("/"))
        })
    });
    g.finish();
}

fn bench_pick(c: &mut Criterion) {
    let servers = |base: u16| -> Vec<ServerConfig> {
        (0..8)
            .map(|i| ServerConfig {
                address: ServerAddress::Ip(SocketAddr::from(([127, 0, 0, 1], base + i))),
                weight: 1 + u32::from(i % 3),
                backup: false,
                at: (1, 1),
            })
            .collect()
    };
    let cfg = |balance| ServiceConfig {
        name: "svc".into(),
        balance,
        pools: vec![
            PoolConfig {
                name: "blue".into(),
                weight: 90,
                servers: servers(9000),
                health: None,
                transport: Default::default(),
            },
            PoolConfig {
                name: "green".into(),
                weight: 10,
                servers: servers(9100),
                health: None,
                transport: Default::default(),
            },
            PoolConfig {
                name: "idle".into(),
                weight: 0,
                servers: servers(9200),
                health: None,
                transport: Default::default(),
            },
        ],
        ..Default::default()
    };
    let mut registry = ServerRegistry::default();
    let rr = Service::build(
        &cfg(Balance::RoundRobin),
        &mut registry,
        &Default::default(),
    );
    let lc = Service::build(&cfg(Balance::LeastConn), &mut registry, &Default::default());
    let mut g = c.benchmark_group("weighted_pick");
    g.bench_function("pool_then_round_robin", |b| {
        b.iter(|| {
            let p = rr.pick_pool().unwrap_or(0);
            rr.pools[p].pick(Balance::RoundRobin, &[])
        })
    });
    g.bench_function("pool_then_least_conn", |b| {
        b.iter(|| {
            let p = lc.pick_pool().unwrap_or(0);
            lc.pools[p].pick(Balance::LeastConn, &[])
        })
    });
    g.finish();
}

/// One finished request into a pool's live window (default 10 s in 1 s buckets), one thread: a
/// clock read (the proxy shares it with the latency), the bucket's epoch check and three relaxed
/// atomic adds. Latencies vary so the adds
/// hit different histogram bins.
fn bench_window(c: &mut Criterion) {
    let window = PoolWindow::new(WindowSpec::default());
    let mut i = 0u64;
    c.bench_function("window_record", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let latency = Duration::from_micros(200 + (i & 1023) * 37);
            window.record(
                Instant::now(),
                black_box(latency),
                black_box(i.is_multiple_of(20)),
            );
        })
    });
    // The same without the clock read, to show what the clock costs.
    let mut t = 0u64;
    c.bench_function("window_record_at", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            t += 1;
            let latency = Duration::from_micros(200 + (i & 1023) * 37);
            window.record_at(
                black_box(t / 1_000_000),
                latency,
                black_box(i.is_multiple_of(20)),
            );
        })
    });
    // Merging a full window (10 buckets of 400 bins) for the admin API and scrapes.
    let full = PoolWindow::new(WindowSpec::default());
    for t in 0..10_000u64 {
        full.record_at(t, Duration::from_micros(100 + t * 13), t.is_multiple_of(20));
    }
    c.bench_function("window_snapshot", |b| {
        b.iter(|| black_box(full.snapshot_at(black_box(9_999))))
    });
}

criterion_group!(benches, bench_routes, bench_pick, bench_window);
criterion_main!(benches);
