//! The integration tests' harness, compiled once: the real `switchyard` binary as a child process, a world builder for its config, ports, clients and parsers.
//!
//! Integration test files `use testkit::*;` and name the binary under test once:
//! `const BIN: Bin = testkit::bin!();` (only the switchyard package's own tests know its path).

pub mod admin;
pub mod chromium;
pub mod ctl;
pub mod differential;
pub mod dns;
pub mod etcd;
pub mod grpc;
pub mod http;
pub mod killable;
pub mod load;
pub mod nginx;
pub mod openssl;
pub mod pebble;
pub mod peers;
pub mod ports;
pub mod prom;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod template;
pub mod wait;
pub mod world;

use std::path::Path;
use std::process::Command;

pub use admin::{Admin, AdminReply};
pub use chromium::{artifact_dir, Chromium};
pub use ctl::{CtlChild, Outcome};
pub use differential::{Differential, Report, Tolerated, TOLERATED};
pub use dns::Dns;
pub use etcd::Etcd;
pub use grpc::{grpc_calls, Call, GrpcOutcome, GrpcServer};
pub use http::{
    assert_proxy_error, backend_via, client_builder, h2c_client, header, http1_client,
    https_client, is_request_id, json_body, test_ca,
};
pub use killable::KillableBackend;
pub use load::{failures, Load, Seen};
pub use nginx::Nginx;
pub use openssl::Handshake;
pub use pebble::{CaOptions, Pebble};
pub use peers::{peer, spawn_for_process, stop_for_process};
pub use ports::{closed_addr, closed_port, port, udp_and_tcp_port};
pub use prom::{metric, metric_sum, metric_value, samples, Labels, Sample};
pub use proxy::{check, Proxy};
pub use raw::{connect, raw_request, read_head, read_response, RawResponse};
pub use redis::Redis;
pub use template::{fill, CATCH_ALL_BLUE, CERTS, HTTPS_LISTENER, HTTP_LISTENER, REPO, SERVER};
pub use wait::wait_until;
pub use world::{Route, Running, World};

/// The echo backend the tests proxy to (the one place that names where it comes from).
pub use echo::Backend;
/// The chunked-body decoder the raw clients read with (the one place that names where it comes
/// from).
pub use echo::ChunkedDecoder;

/// The `switchyard` binary under test; see [`bin!`].
#[derive(Debug, Clone, Copy)]
pub struct Bin(&'static str);

impl Bin {
    /// The binary at `path` (use [`bin!`] in a test of the switchyard package).
    pub const fn new(path: &'static str) -> Bin {
        Bin(path)
    }

    pub fn path(&self) -> &'static Path {
        Path::new(self.0)
    }

    /// A command running the binary, with nothing from the environment that the tests set
    /// themselves (`SWITCHYARD_TOKEN`, `SWITCHYARD_ADMIN`) and stdin closed.
    pub fn command(&self) -> Command {
        let mut command = Command::new(self.0);
        command
            .env_remove("SWITCHYARD_TOKEN")
            .env_remove("SWITCHYARD_ADMIN")
            .stdin(std::process::Stdio::null());
        command
    }
}

/// The `switchyard` binary of the package whose integration test expands this: cargo tells only
/// those (`CARGO_BIN_EXE_switchyard`).
#[macro_export]
macro_rules! bin {
    () => {
        $crate::Bin::new(env!("CARGO_BIN_EXE_switchyard"))
    };
}
