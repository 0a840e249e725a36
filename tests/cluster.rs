//! A fleet of three real Switchyard nodes sharing one real etcd on loopback: a change on one node
//! is live on the others, ETags are etcd revisions, a node that loses etcd keeps serving and
//! refuses writes, catches up when etcd returns, one node leads and another takes over.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::*;

const BIN: Bin = testkit::bin!();

/// A node of the fleet at `prefix` in `etcd`: service "api" with pools blue (100) and green (0),
/// the admin API, and `extra` TOML.
fn node(etcd: &Etcd, prefix: &str, name: &str, extra: &str) -> Running {
    World::blue_green()
        .admin()
        .toml(&format!(
            "{}timeout = \"1s\"\n",
            etcd.cluster_toml(prefix, name)
        ))
        .toml(extra)
        .start(BIN)
}

fn fleet(etcd: &Etcd, prefix: &str) -> Vec<Running> {
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|name| node(etcd, prefix, name, ""))
        .collect();
    for n in &nodes {
        n.wait_joined();
    }
    nodes
}

fn weights(admin: &Admin, body: Value, etag: Option<u64>) -> AdminReply {
    let tag = etag.map(|e| format!("\"{e}\""));
    let headers: Vec<(&str, &str)> = tag.iter().map(|t| ("If-Match", t.as_str())).collect();
    admin.send(
        "PUT",
        "/v1/services/api/weights",
        Some(&body.to_string()),
        &headers,
    )
}

#[test]
fn a_weight_change_on_one_node_is_live_on_every_node_with_the_etcd_revision_as_etag() {
    let etcd = Etcd::start();
    let nodes = fleet(&etcd, "/sy/propagate");
    let (a, b, c) = (nodes[0].admin(), nodes[1].admin(), nodes[2].admin());

    let before = a.get("/v1/services/api");
    assert_eq!(before.status, 200, "{}", before.text);
    assert_eq!(before.generation(), 0, "no entry yet: {}", before.text);

    let sent = Instant::now();
    let reply = weights(&a, json!({"blue": 50, "green": 50}), Some(0));
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Read-your-writes: the answer already shows the change, its ETag the entry's revision.
    assert_eq!(reply.weight("green"), 50);
    let revision = reply.generation();
    assert!(revision > 0);
    assert_eq!(reply.header("etag"), format!("\"{revision}\""));
    let stored = etcd
        .get("/sy/propagate/services/api")
        .expect("the entry is in etcd");
    assert!(stored.contains("\"green\":50"), "{stored}");

    let mut seen = Vec::new();
    for other in [&b, &c] {
        let ok = wait_until(Duration::from_secs(5), || {
            other.get("/v1/services/api").weight("green") == 50
        });
        assert!(ok, "the change did not reach the node");
        seen.push(sent.elapsed());
        let view = other.get("/v1/services/api");
        assert_eq!(view.generation(), revision, "same ETag on every node");
    }
    let slowest = seen.iter().max().copied().unwrap_or_default();
    eprintln!("propagation: seen on both other nodes within {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "took {slowest:?}");

    // Traffic on node C follows: green answers now.
    let client = http1_client();
    let ok = wait_until(Duration::from_secs(5), || {
        (0..20).any(|_| {
            client
                .get(nodes[2].url("api.test", "/"))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .is_some_and(|t| t.contains("green"))
        })
    });
    assert!(ok, "node C never sent a request to green");

    // A stale ETag is refused on another node, with the current revision.
    let stale = weights(&b, json!({"blue": 100, "green": 0}), Some(revision - 1));
    assert_eq!(stale.status, 409, "{}", stale.text);
    assert_eq!(stale.json["generation"], revision);
    let fresh = weights(&b, json!({"blue": 100, "green": 0}), Some(revision));
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    assert!(fresh.generation() > revision);
    let ok = wait_until(Duration::from_secs(5), || {
        a.get("/v1/services/api").weight("green") == 0
    });
    assert!(ok, "B's change did not reach A");

    // Maintenance goes through the fleet as well.
    let m = c.send(
        "PUT",
        "/v1/services/api/maintenance",
        Some(r#"{"retry_after": 30}"#),
        &[],
    );
    assert_eq!(m.status, 200, "{}", m.text);
    let ok = wait_until(Duration::from_secs(5), || {
        client
            .get(nodes[0].url("api.test", "/"))
            .send()
            .is_ok_and(|r| r.status() == 503)
    });
    assert!(ok, "maintenance set on C did not reach A's traffic");
}

#[test]
fn a_node_that_loses_etcd_keeps_serving_refuses_writes_and_catches_up() {
    let mut etcd = Etcd::start();
    let nodes = fleet(&etcd, "/sy/outage");
    let (a, b) = (nodes[0].admin(), nodes[1].admin());
    let reply = weights(&a, json!({"blue": 70, "green": 30}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(wait_until(Duration::from_secs(5), || b
        .get("/v1/services/api")
        .weight("green")
        == 30));

    etcd.stop();
    for n in &nodes {
        let admin = n.admin();
        let ok = wait_until(Duration::from_secs(20), || {
            admin.get("/health/ready").json["cluster"] == "degraded"
        });
        assert!(ok, "the node did not notice etcd was gone");
        let ready = admin.get("/health/ready");
        assert_eq!(
            ready.status, 200,
            "a degraded node still serves: {}",
            ready.text
        );
        let metrics = admin.get("/metrics").text;
        assert!(metrics.contains("switchyard_cluster_up 0"), "{metrics}");
        let cluster = admin.get("/v1/cluster");
        assert_eq!(cluster.json["state"], "degraded", "{}", cluster.text);
        assert!(cluster.json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("etcd")));
    }
    // ctl says so too.
    let url = nodes[0].admin_url();
    let status = BIN.ctl(&[("SWITCHYARD_ADMIN", &url)], &["status"]);
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.starts_with("cluster: degraded"), "{status}");
    let cluster = BIN.ctl(&[("SWITCHYARD_ADMIN", &url)], &["cluster"]);
    assert!(
        cluster
            .stdout
            .contains("node \"a\" in fleet /sy/outage: degraded"),
        "{cluster}"
    );
    // Writes are refused (never kept by one node alone); traffic keeps the last state.
    let refused = weights(&a, json!({"blue": 0, "green": 100}), None);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.error().contains("degraded"), "{}", refused.text);
    assert_eq!(a.get("/v1/services/api").weight("green"), 30);
    let client = http1_client();
    let served = (0..10)
        .filter(|_| {
            client
                .get(nodes[1].url("api.test", "/"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        })
        .count();
    assert_eq!(served, 10, "a degraded node stopped serving");

    // etcd returns: every node rejoins, and a change made now reaches all. C is held
    // (SIGSTOP) until A and B have rejoined and B made the change, so C has missed it: it
    // catches up with a watch from the last revision it applied (no listing).
    let c = &nodes[2];
    c.proxy.signal("STOP");
    etcd.resume();
    nodes[0].wait_joined();
    nodes[1].wait_joined();
    let reply = weights(&b, json!({"blue": 10, "green": 90}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    c.proxy.signal("CONT");
    let sees_green = |n: &Running, weight: u64| {
        n.wait_joined();
        let admin = n.admin();
        let ok = wait_until(Duration::from_secs(5), || {
            admin.get("/v1/services/api").weight("green") == weight
        });
        assert!(ok, "green never became {weight}");
    };
    for n in &nodes {
        sees_green(n, 90);
    }
    let log = c.proxy.stderr();
    assert!(
        log.contains("resuming the fleet's watch from revision"),
        "{log}"
    );
    assert!(!log.contains("listing the fleet's whole state"), "{log}");

    // The same, but etcd compacts its history past what C applied: C lists the whole state.
    etcd.stop();
    let admin_c = c.admin();
    assert!(wait_until(Duration::from_secs(20), || {
        admin_c.get("/health/ready").json["cluster"] == "degraded"
    }));
    c.proxy.signal("STOP");
    etcd.resume();
    nodes[0].wait_joined();
    let reply = weights(&a, json!({"blue": 20, "green": 80}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (ok, out) = etcd.ctl(&["get", "none", "-w", "json"]);
    assert!(ok, "{out}");
    let now = serde_json::from_str::<Value>(&out).expect("etcdctl's JSON")["header"]["revision"]
        .as_i64()
        .expect("a revision");
    let (ok, out) = etcd.ctl(&["compact", &now.to_string()]);
    assert!(ok, "{out}");
    c.proxy.signal("CONT");
    sees_green(c, 80);
    let log = c.proxy.stderr();
    assert!(
        log.contains("etcd compacted its history past revision")
            && log.contains("listing the fleet's whole state"),
        "{log}"
    );
}

#[test]
fn a_change_made_while_a_node_was_away_reaches_it_when_it_returns() {
    let etcd = Etcd::start();
    let prefix = "/sy/away";
    let a = node(&etcd, prefix, "a", "");
    a.wait_joined();
    let mut b = node(&etcd, prefix, "b", "");
    b.wait_joined();
    b.proxy.stop();
    let reply = weights(&a.admin(), json!({"blue": 40, "green": 60}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    // B starts from its state file (written before the change), then lists the fleet.
    let config = b.config();
    b.restart(&config);
    b.wait_joined();
    let view = b.admin().get("/v1/services/api");
    assert_eq!(view.weight("green"), 60, "{}", view.text);
}

#[test]
fn an_entry_naming_a_pool_this_node_lacks_is_ignored_here_and_flagged() {
    let etcd = Etcd::start();
    let prefix = "/sy/ignored";
    let a = node(
        &etcd,
        prefix,
        "a",
        "[services.api.pools.canary]\nweight = 0\nservers = [\"{blue}\"]\n",
    );
    let b = node(&etcd, prefix, "b", "");
    a.wait_joined();
    b.wait_joined();
    let reply = weights(&a.admin(), json!({"canary": 10}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let admin = b.admin();
    let ok = wait_until(Duration::from_secs(5), || {
        admin.get("/v1/cluster").json["ignored"]["api"].is_string()
    });
    let cluster = admin.get("/v1/cluster");
    assert!(ok, "{}", cluster.text);
    assert!(
        cluster.json["ignored"]["api"]
            .as_str()
            .is_some_and(|w| w.contains("no pool \"canary\"")),
        "{}",
        cluster.text
    );
    assert_eq!(admin.get("/v1/services/api").weight("blue"), 100);
    assert!(b
        .proxy
        .stderr()
        .contains("ignoring the fleet's entry for service \"api\""));
    // The config hashes differ, and the view says which nodes match the leader.
    let nodes = cluster.json["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(nodes.len(), 2, "{}", cluster.text);
    assert_ne!(nodes[0]["config_hash"], nodes[1]["config_hash"]);
}

#[test]
fn one_node_leads_and_another_takes_over_when_it_dies() {
    let etcd = Etcd::start();
    let mut nodes = fleet(&etcd, "/sy/leader");
    let leader_of = |nodes: &[Running]| -> Vec<usize> {
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.admin().get("/v1/cluster").json["leader_here"] == true)
            .map(|(i, _)| i)
            .collect()
    };
    let mut leaders = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            leaders = leader_of(&nodes);
            leaders.len() == 1
        }),
        "leaders: {leaders:?}"
    );
    let first = leaders[0];
    let names = ["a", "b", "c"];
    let other = nodes[(first + 1) % 3].admin();
    let mut view = other.get("/v1/cluster");
    let ok = wait_until(Duration::from_secs(5), || {
        view = other.get("/v1/cluster");
        view.json["leader"] == names[first]
            && view.json["nodes"].as_array().map(Vec::len) == Some(3)
    });
    assert!(ok, "{}", view.text);
    // The leader matches itself; the others' configs differ here (ports, backends, paths).
    for n in view.json["nodes"].as_array().into_iter().flatten() {
        assert_eq!(
            n["matches_leader"],
            n["node"] == names[first],
            "{}",
            view.text
        );
    }

    // SIGKILL: no goodbye; its lease runs out (2 s) and another node is elected.
    nodes[first].proxy.signal("KILL");
    let killed = Instant::now();
    let rest: Vec<Running> = nodes
        .drain(..)
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, n)| n)
        .collect();
    let ok = wait_until(Duration::from_secs(15), || leader_of(&rest).len() == 1);
    assert!(ok, "no node took over");
    eprintln!("takeover after {:?}", killed.elapsed());
    let new_leader = rest
        .iter()
        .find(|n| n.admin().get("/v1/cluster").json["leader_here"] == true)
        .expect("a leader");
    let table = BIN.ctl(
        &[("SWITCHYARD_ADMIN", &new_leader.admin_url())],
        &["cluster"],
    );
    assert_eq!(table.code, 0, "{table}");
    assert!(table.stdout.contains("leader: this node"), "{table}");
    assert!(table.stdout.contains("NODE"), "{table}");
    let status = BIN.ctl(
        &[("SWITCHYARD_ADMIN", &new_leader.admin_url())],
        &["status"],
    );
    assert!(status.stdout.starts_with("cluster: ok"), "{status}");
    let admin = rest[0].admin();
    let ok = wait_until(Duration::from_secs(10), || {
        admin.get("/v1/cluster").json["nodes"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    });
    assert!(
        ok,
        "the dead node's entry outlived its lease: {}",
        admin.get("/v1/cluster").text
    );
}

#[test]
fn a_session_ticket_from_one_node_resumes_on_another() {
    let etcd = Etcd::start();
    let key = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let tls_node = |name: &str| {
        World::bare()
            .https()
            .fallback_certificate("localhost")
            .catch_all_blue()
            .admin()
            .toml(&format!(
                "{}encryption_key = \"{key}\"\n",
                etcd.cluster_toml("/sy/tickets", name)
            ))
            .start(BIN)
    };
    let (a, b) = (tls_node("a"), tls_node("b"));
    a.wait_joined();
    b.wait_joined();
    // Both keys (this epoch's and the next) are in etcd, sealed.
    assert!(wait_until(Duration::from_secs(5), || etcd
        .keys("/sy/tickets/tls/tickets/")
        .len()
        == 2));
    for k in etcd.keys("/sy/tickets/tls/tickets/") {
        assert!(etcd.get(&k).is_some_and(|v| v.starts_with("v1:")));
    }
    let ca = format!("{CERTS}/test-ca.crt");
    let request = Some("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let dir = tempfile::tempdir().expect("dir");
    for version in ["-tls1_3", "-tls1_2"] {
        let file = dir.path().join(version);
        let file = file.to_str().expect("path");
        // A ticket from A, offered to B. The keys reach both nodes a little after they join.
        let ok = wait_until(Duration::from_secs(10), || {
            let first = Handshake::run(
                a.https(),
                "localhost",
                &ca,
                &[version, "-sess_out", file],
                request,
            );
            assert!(first.out.contains("New, TLS"), "{}", first.out);
            let second = Handshake::run(
                b.https(),
                "localhost",
                &ca,
                &[version, "-sess_in", file],
                request,
            );
            second.out.contains("Reused, TLS")
        });
        assert!(
            ok,
            "a {version} ticket from node a did not resume on node b"
        );
    }
}

#[test]
fn a_node_starts_from_its_cache_while_etcd_is_away_and_joins_when_it_returns() {
    let mut etcd = Etcd::start();
    let mut a = node(&etcd, "/sy/cache", "a", "");
    a.wait_joined();
    let reply = weights(&a.admin(), json!({"blue": 65, "green": 35}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    a.proxy.stop();
    etcd.stop();

    // The state file is the cache: the node starts, degraded, with the fleet's last state.
    let config = a.config();
    a.restart(&config);
    let admin = a.admin();
    assert_eq!(admin.get("/v1/services/api").weight("green"), 35);
    let ready = admin.get("/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["cluster"], "degraded", "{}", ready.text);
    let refused = weights(&admin, json!({"blue": 100, "green": 0}), None);
    assert_eq!(refused.status, 503, "{}", refused.text);

    etcd.resume();
    a.wait_joined();
    let view = admin.get("/v1/services/api");
    assert_eq!(view.weight("green"), 35, "{}", view.text);
    assert!(
        view.generation() > 0,
        "the ETag is the entry's revision again: {}",
        view.text
    );
}

#[test]
fn nodes_reach_etcd_over_mutual_tls_with_a_user_and_a_wrong_password_is_named() {
    let etcd = Etcd::start_secure("s3cret-pw");
    let secure = |name: &str, password: &str| {
        World::blue_green()
            .admin()
            .toml(&format!(
                "{}ca = \"{CERTS}/test-ca.crt\"\ncert = \"{CERTS}/client.crt\"\nkey = \"{CERTS}/client.key\"\n\
                 username = \"root\"\npassword = \"{password}\"\n",
                etcd.cluster_toml("/sy/tls", name)
            ))
            .start(BIN)
    };
    assert!(etcd.url().starts_with("https://"));
    let a = secure("a", "s3cret-pw");
    a.wait_joined();
    let reply = weights(&a.admin(), json!({"blue": 80, "green": 20}), None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let stored = etcd.get("/sy/tls/services/api").expect("the entry");
    assert!(stored.contains("\"green\":20"), "{stored}");
    // The password never shows in the config view.
    let config = a.admin().get("/v1/config").text;
    assert!(!config.contains("s3cret-pw"), "{config}");

    // A wrong password: the node serves, degraded, and says why.
    let b = secure("b", "wrong");
    let admin = b.admin();
    let mut reason = String::new();
    let named = wait_until(Duration::from_secs(20), || {
        let view = admin.get("/v1/cluster");
        reason = view.json["reason"].as_str().unwrap_or_default().to_string();
        view.json["state"] == "degraded" && reason.contains("authentication failed")
    });
    assert!(named, "reason: {reason}\n{}", b.proxy.stderr());
    assert_eq!(admin.get("/v1/services/api").weight("blue"), 100);
}
