//! A real DNS server for the tests: Debian's pebble-challtestsrv, its records set through its management API.
//!
//! pebble-challtestsrv answers NOERROR with no records for a name it has none for (NODATA) and
//! SERVFAIL on request; it never answers NXDOMAIN. Its answers have TTL 0.

use std::process::Child;
use std::time::Duration;

use crate::{
    http1_client, peer, port, spawn_for_process, stop_for_process, udp_and_tcp_port, wait_until,
};

/// A pebble-challtestsrv process, killed on drop or, at the latest, when the test process ends
/// (see [`spawn_for_process`]).
pub struct Dns {
    child: Child,
    dns: u16,
    management: u16,
}

impl Dns {
    /// A server with no default answer: a name has only the records set through it.
    pub fn start() -> Dns {
        Dns::start_with_default("")
    }

    /// A server that answers `default_ipv4` for any name it has no A record for ("": none).
    pub fn start_with_default(default_ipv4: &str) -> Dns {
        let bin = peer("pebble-challtestsrv", "pebble");
        let (dns, management) = (udp_and_tcp_port(), port());
        let args = [
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            default_ipv4,
            "-defaultIPv6",
            "",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["-dns01".into(), format!("127.0.0.1:{dns}")]);
        args.extend(["-management".into(), format!("127.0.0.1:{management}")]);
        let log = std::env::temp_dir().join(format!(
            "switchyard-dns-test-{}-{dns}.log",
            std::process::id()
        ));
        let child = spawn_for_process(&bin, &args, &log);
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", management)).is_ok()
        });
        assert!(up, "pebble-challtestsrv's management API never listened");
        Dns {
            child,
            dns,
            management,
        }
    }

    pub fn post(&self, path: &str, body: serde_json::Value) {
        let resp = http1_client()
            .post(format!("http://127.0.0.1:{}{path}", self.management))
            .body(body.to_string())
            .send()
            .expect("challtestsrv management API");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    /// Makes `host` answer A queries with `ips` (and nothing else).
    pub fn set_a(&self, host: &str, ips: &[&str]) {
        self.clear(host);
        self.post(
            "/add-a",
            serde_json::json!({ "host": format!("{host}."), "addresses": ips }),
        );
    }

    /// Removes `host`'s A records and SERVFAIL: it answers NODATA.
    pub fn clear(&self, host: &str) {
        let host = format!("{host}.");
        self.post("/clear-a", serde_json::json!({ "host": host }));
        self.post("/clear-servfail", serde_json::json!({ "host": host }));
    }

    pub fn servfail(&self, host: &str) {
        self.post(
            "/set-servfail",
            serde_json::json!({ "host": format!("{host}.") }),
        );
    }

    /// Adds a TXT value to `host` (its other values stay).
    pub fn add_txt(&self, host: &str, value: &str) {
        self.post(
            "/set-txt",
            serde_json::json!({ "host": format!("{host}."), "value": value }),
        );
    }

    /// The management API's base URL (the DNS-01 hook's CHALLTESTSRV_URL).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management)
    }

    /// The DNS port (UDP and TCP) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.dns
    }

    pub fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.dns)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        stop_for_process(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_server_is_gone_not_orphaned() {
        let dns = Dns::start();
        let management = dns.management;
        let listening = || std::net::TcpStream::connect(("127.0.0.1", management)).is_ok();
        assert!(listening());
        drop(dns);
        // The shell stops pebble-challtestsrv by PID on its way out: its port closes. A SIGKILL
        // to the shell left the server running, reparented, for the rest of the machine's life.
        assert!(
            wait_until(Duration::from_secs(10), || !listening()),
            "pebble-challtestsrv still listens on {management} after its Dns was dropped"
        );
    }
}
