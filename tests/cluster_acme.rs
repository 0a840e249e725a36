//! ACME for a fleet against a real CA: three Switchyard nodes order five names through real
//! pebble, sharing one real etcd: exactly one order per name, every node serves every
//! certificate, keys are encrypted in etcd, and the CA's HTTP-01 requests reach a fourth node
//! that placed no order (it answers from the tokens the fleet shares).

use std::time::Duration;

use testkit::pebble::NORMAL;
use testkit::*;

const BIN: Bin = testkit::bin!();

const NAMES: [&str; 5] = [
    "one.fleet.test",
    "two.fleet.test",
    "three.fleet.test",
    "four.fleet.test",
    "five.fleet.test",
];
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PREFIX: &str = "/sy/acme";

fn cluster(etcd: &Etcd, node: &str) -> String {
    format!(
        "{}encryption_key = \"{KEY}\"\n",
        etcd.cluster_toml(PREFIX, node)
    )
}

#[test]
fn a_fleet_places_one_order_per_name_and_any_node_answers_the_challenge() {
    let etcd = Etcd::start();
    // Node D has no [acme]: it only listens where the CA validates, and answers from the fleet.
    let d_world = World::new()
        .backend("blue")
        .route("*", "api")
        .pool("api", "blue", 1, &["blue"]);
    let dns = Dns::start_with_default("127.0.0.1");
    let pebble = Pebble::start(
        dns.port(),
        d_world.port("http"),
        ports::closed_port(),
        NORMAL,
    );
    let d = d_world.toml(&cluster(&etcd, "d")).start(BIN);

    let mut acme = format!(
        "[acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nemail = \"ops@switchyard.test\"\nbackoff_min = \"1s\"\nbackoff_max = \"2s\"\n",
        pebble.directory(),
        pebble.directory_ca().display()
    );
    for name in NAMES {
        acme.push_str(&format!(
            "\n[[acme.certificates]]\nnames = [\"{name}\"]\nchallenge = \"http-01\"\n"
        ));
    }
    let nodes: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            World::new()
                .https()
                .admin()
                .backend("blue")
                .route("*", "api")
                .pool("api", "blue", 1, &["blue"])
                .toml(&acme)
                .toml(&cluster(&etcd, n))
                .start(BIN)
        })
        .collect();

    // Every node serves all five, each the same certificate on every node.
    let mut serials = Vec::new();
    for n in &nodes {
        let admin = n.admin();
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(90), || {
            last = admin.get("/v1/certs").json["certificates"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            last.len() == 5 && last.iter().all(|c| c["status"] == "valid")
        });
        assert!(
            ok,
            "not every certificate valid: {last:#?}\n{}",
            n.proxy.stderr()
        );
        let mut mine: Vec<(String, String)> = last
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_string(),
                    c["serial"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        mine.sort();
        serials.push(mine);
    }
    assert_eq!(
        serials[0], serials[1],
        "nodes a and b serve different certificates"
    );
    assert_eq!(
        serials[0], serials[2],
        "nodes a and c serve different certificates"
    );

    // One order per name, whoever placed it.
    assert_eq!(pebble.new_orders(), 5, "{}", pebble.log());
    let placed: usize = nodes
        .iter()
        .map(|n| n.proxy.stderr().matches("acme: order http").count())
        .sum();
    assert_eq!(placed, 5, "orders placed by the nodes");
    // The CA validated on node D, which placed none.
    assert!(!d.proxy.stderr().contains("acme: order http"));

    // Nothing secret in plain text in etcd.
    for name in NAMES {
        let entry = etcd
            .get(&format!("{PREFIX}/acme/certs/{name}"))
            .unwrap_or_else(|| panic!("no entry for {name}"));
        assert!(entry.contains("BEGIN CERTIFICATE"), "{entry}");
        assert!(
            !entry.contains("PRIVATE KEY"),
            "a key in plain text: {entry}"
        );
        let json: serde_json::Value = serde_json::from_str(&entry).expect("JSON entry");
        assert!(
            json["key"].as_str().is_some_and(|k| k.starts_with("v1:")),
            "{entry}"
        );
    }
    let accounts = etcd.keys(&format!("{PREFIX}/acme/accounts/"));
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let account = etcd.get(&accounts[0]).expect("the account");
    assert!(
        account.starts_with("v1:"),
        "the account's key in plain text: {account}"
    );
    // No token or lock is left behind.
    assert!(wait_until(Duration::from_secs(10), || etcd
        .keys(&format!("{PREFIX}/acme/http01/"))
        .is_empty()));
}
