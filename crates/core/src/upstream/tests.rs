//! Pool and server picks, passive ejection streaks, fallback: the upstream model in memory.

use super::*;
use crate::config::{PoolConfig, ServerAddress, ServerConfig};
use crate::upstream::names::Answer;

fn addr_of(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A server entry for `address` (an IP:port or a name:port).
fn entry(address: &str, backup: bool) -> ServerConfig {
    ServerConfig {
        address: ServerAddress::parse(address).expect("valid address"),
        weight: 1,
        backup,
        at: (1, 1),
    }
}

/// Service "s" with one pool "blue" of `servers`.
fn service_of(servers: Vec<ServerConfig>, balance: Balance) -> ServiceConfig {
    ServiceConfig {
        name: "s".into(),
        balance,
        pools: vec![PoolConfig {
            name: "blue".into(),
            weight: 1,
            servers,
            health: None,
            transport: Default::default(),
        }],
        ..Default::default()
    }
}

#[test]
fn zero_weight_is_never_picked() {
    let w = WeightedIndex::new([0, 3, 0, 1]).expect("non-zero total");
    let mut counts = [0; 4];
    for x in 0..w.total() {
        counts[w.index_of(x)] += 1;
    }
    assert_eq!(counts, [0, 3, 0, 1]);
    assert!(WeightedIndex::new([0, 0]).is_none());
}

#[test]
fn smooth_schedule_interleaves_by_weight() {
    let s = smooth_schedule(&[5, 1, 1]);
    assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
    let big = smooth_schedule(&[1_000_000, 1]);
    assert!(big.len() <= 4097 && big.contains(&1));
}

fn service(balance: Balance) -> Service {
    let servers = (1..=3)
        .map(|p| entry(&format!("127.0.0.1:{p}"), false))
        .collect();
    Service::build(
        &service_of(servers, balance),
        &mut ServerRegistry::default(),
        &Addresses::default(),
    )
}

#[test]
fn round_robin_cycles_and_skips_excluded() {
    let svc = service(Balance::RoundRobin);
    let pool = &svc.pools[0];
    let picks: Vec<usize> = (0..6)
        .map(|_| pool.pick(Balance::RoundRobin, &[]).expect("pick"))
        .collect();
    for i in 0..3 {
        assert_eq!(picks.iter().filter(|&&p| p == i).count(), 2);
    }
    let ex = [pool.servers[0].addr, pool.servers[1].addr];
    for _ in 0..5 {
        assert_eq!(pool.pick(Balance::RoundRobin, &ex), Some(2));
    }
    let all: Vec<_> = pool.servers.iter().map(|s| s.addr).collect();
    assert_eq!(pool.pick(Balance::RoundRobin, &all), None);
}

#[test]
fn least_conn_prefers_idle_servers() {
    let svc = service(Balance::LeastConn);
    let pool = &svc.pools[0];
    let _g0 = pool.servers[0].acquire();
    let _g1 = pool.servers[1].acquire();
    assert_eq!(pool.pick(Balance::LeastConn, &[]), Some(2));
    drop(_g1);
    let p = pool.pick(Balance::LeastConn, &[]).expect("pick");
    assert!(p == 1 || p == 2);
}

#[test]
fn passive_ejection_and_unhealthy_servers_are_skipped() {
    let svc = service(Balance::RoundRobin);
    let pool = &svc.pools[0];
    let policy = PassivePolicy {
        max_fails: 2,
        fail_timeout: std::time::Duration::from_millis(200),
    };
    assert!(pool.servers[0]
        .state
        .report_failure(&policy, Failure::Connect)
        .is_none());
    assert!(pool.servers[0]
        .state
        .report_failure(&policy, Failure::Connect)
        .is_some());
    pool.servers[0].state.eject(&policy);
    assert!(pool.servers[1].state.set_healthy(false));
    for _ in 0..6 {
        assert_eq!(pool.pick(Balance::RoundRobin, &[]), Some(2));
    }
    assert_eq!(svc.available_servers(0), 1);
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert!(
        pool.servers[0].state.is_available(),
        "ejection ends after fail_timeout"
    );
}

#[test]
fn the_last_server_able_to_take_traffic_is_never_spared() {
    let svc = service(Balance::RoundRobin);
    let addr = |i: usize| svc.pools[0].servers[i].addr;
    assert!(svc.can_spare(0, addr(0)), "two others are available");
    svc.pools[0].servers[1].state.set_healthy(false);
    assert!(svc.can_spare(0, addr(0)), "one other is available");
    svc.pools[0].servers[2].state.set_healthy(false);
    assert!(!svc.can_spare(0, addr(0)), "it is the last one");
    // After every server was taken out, all are tried again.
    let policy = PassivePolicy {
        max_fails: 1,
        fail_timeout: std::time::Duration::from_secs(60),
    };
    svc.pools[0].servers[2].state.set_healthy(true);
    svc.pools[0].servers[0].state.eject(&policy);
    svc.pools[0].servers[2].state.eject(&policy);
    assert_eq!(svc.pools[0].pick(Balance::RoundRobin, &[]), None);
    let again = svc.pools[0].pick_ejected(&[]).expect("an ejected server");
    assert!(again == 0 || again == 2, "only healthy ones: {again}");
}

#[test]
fn streaks_count_timeouts_only_from_several_clients() {
    let state = ServerState::default();
    let policy = PassivePolicy {
        max_fails: 3,
        fail_timeout: std::time::Duration::from_secs(60),
    };
    let a = Some(IpAddr::from([192, 0, 2, 1]));
    let b = Some(IpAddr::from([192, 0, 2, 2]));
    for _ in 0..10 {
        assert!(
            state
                .report_failure(&policy, Failure::Response { client: a })
                .is_none(),
            "one client's timeouts never eject"
        );
    }
    state.report_success();
    assert!(state
        .report_failure(&policy, Failure::Response { client: a })
        .is_none());
    assert!(state
        .report_failure(&policy, Failure::Response { client: b })
        .is_none());
    let streak = state
        .report_failure(&policy, Failure::Response { client: a })
        .expect("three timeouts from two clients");
    assert_eq!(streak.timeouts, 3);
    assert_eq!(
        streak.to_string(),
        "3 response timeouts from several clients"
    );
    // Connect failures count whoever asked, and a success ends the streak.
    state.report_failure(&policy, Failure::Connect);
    state.report_failure(&policy, Failure::Connect);
    state.report_success();
    assert!(state.report_failure(&policy, Failure::Connect).is_none());
}

#[test]
fn fallback_only_to_weighted_pools_with_servers() {
    let mk = |name: &str, weight, port| PoolConfig {
        name: name.into(),
        weight,
        servers: vec![entry(&format!("127.0.0.1:{port}"), false)],
        health: None,
        transport: Default::default(),
    };
    let cfg = ServiceConfig {
        name: "s".into(),
        balance: Balance::RoundRobin,
        pools: vec![mk("blue", 1, 1), mk("green", 0, 2), mk("canary", 1, 3)],
        ..Default::default()
    };
    let svc = Service::build(&cfg, &mut ServerRegistry::default(), &Addresses::default());
    assert_eq!(svc.fallback_pool(0), Some(2));
    svc.pools[2].servers[0].state.set_healthy(false);
    assert_eq!(
        svc.fallback_pool(0),
        None,
        "green has weight 0, canary is down"
    );
}

#[test]
fn backups_take_requests_only_while_every_other_server_is_down() {
    let servers = vec![
        entry("127.0.0.1:1", false),
        entry("127.0.0.1:2", true),
        entry("127.0.0.1:3", false),
    ];
    for balance in [Balance::RoundRobin, Balance::LeastConn] {
        let svc = Service::build(
            &service_of(servers.clone(), balance),
            &mut ServerRegistry::default(),
            &Addresses::default(),
        );
        let pool = &svc.pools[0];
        for _ in 0..20 {
            let i = pool.pick(balance, &[]).expect("pick");
            assert!(
                !pool.servers[i].backup,
                "{balance:?}: a backup while others are up"
            );
        }
        pool.servers[0].state.set_healthy(false);
        for _ in 0..5 {
            assert_eq!(pool.pick(balance, &[]), Some(2), "{balance:?}");
        }
        // The last other server excluded (tried) or down: the backup.
        assert_eq!(pool.pick(balance, &[pool.servers[2].addr]), Some(1));
        pool.servers[2].state.set_healthy(false);
        assert_eq!(pool.pick(balance, &[]), Some(1), "{balance:?}");
        assert_eq!(svc.available_servers(0), 1);
    }
}

#[test]
fn a_name_is_one_server_per_address_and_states_follow_addresses() {
    let mut reg = ServerRegistry::default();
    let mut names = Addresses::default();
    let cfg = service_of(
        vec![entry("api.test:8080", false), entry("127.0.0.1:9", false)],
        Balance::RoundRobin,
    );
    let unresolved = Service::build(&cfg, &mut reg, &names);
    reg.commit();
    assert_eq!(
        unresolved.pools[0].servers.len(),
        1,
        "no address yet: only the IP"
    );

    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    let name: Arc<str> = "api.test".into();
    let now = std::time::SystemTime::now();
    names.apply(
        &name,
        Answer::Found(vec![ip("10.0.0.1"), ip("10.0.0.2")]),
        now,
    );
    let first = Service::build(&cfg, &mut reg, &names);
    reg.commit();
    let servers = &first.pools[0].servers;
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:8080", "10.0.0.2:8080", "127.0.0.1:9"]);
    assert!(servers[0].named && &*servers[0].host == "api.test");
    assert!(!servers[2].named && &*servers[2].host == "127.0.0.1");
    servers[1].state.set_healthy(false);

    // 10.0.0.1 goes, 10.0.0.3 comes: 10.0.0.2 keeps its (unhealthy) state.
    names.apply(
        &name,
        Answer::Found(vec![ip("10.0.0.3"), ip("10.0.0.2")]),
        now,
    );
    let second = Service::build(&cfg, &mut reg, &names);
    reg.commit();
    let by_addr = |svc: &Service, a: &str| {
        svc.pools[0]
            .servers
            .iter()
            .find(|s| s.addr.to_string() == a)
            .map(|s| s.state.clone())
    };
    let kept = by_addr(&second, "10.0.0.2:8080").expect("kept");
    assert!(
        Arc::ptr_eq(&kept, &servers[1].state),
        "same state across snapshots"
    );
    assert!(!kept.is_healthy());
    assert!(by_addr(&second, "10.0.0.1:8080").is_none());
    assert!(by_addr(&second, "10.0.0.3:8080").is_some());
    assert_eq!(
        reg.states.len(),
        3,
        "the vanished address's state is dropped"
    );
}

#[test]
fn an_address_in_two_services_has_one_state_from_the_first_compile() {
    let mut reg = ServerRegistry::default();
    let cfg = service_of(vec![entry("127.0.0.1:9", false)], Balance::RoundRobin);
    let (a, b) = (
        Service::build(&cfg, &mut reg, &Addresses::default()),
        Service::build(&cfg, &mut reg, &Addresses::default()),
    );
    reg.commit();
    assert_eq!(a.pools[0].servers[0].addr, addr_of("127.0.0.1:9"));
    assert!(Arc::ptr_eq(
        &a.pools[0].servers[0].state,
        &b.pools[0].servers[0].state
    ));
}
