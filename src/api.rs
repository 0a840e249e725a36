//! The admin API's answers as typed structs: the admin API writes them and `switchyard ctl` reads them, so the two cannot drift.
//!
//! Only the shapes live here; the code that fills them in stays with what it describes (`control`
//! for services and rollouts, `acme` for certificates, `admin` for the envelopes). Every struct
//! is `Serialize + Deserialize`; unknown fields are ignored when reading, so a newer proxy may add
//! fields without breaking an older `ctl`. Rollout events are the rollout engine's own
//! [`Event`]s, served as they are kept.

use serde::{Deserialize, Serialize};

pub use crate::rollout::{Event, Kind, Phase};

/// `GET /v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Services {
    pub generation: u64,
    pub services: Vec<ServiceView>,
    /// In a fleet: `ok`, or `degraded` with why (absent on a node of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// `GET /v1/services/{s}`, and the answer to a weight change or a switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub generation: u64,
    /// `round_robin` or `least_conn`.
    pub balance: String,
    pub pools: Vec<PoolView>,
    /// Present while the service is in maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceView>,
    /// The service's active rollout or watched switch (progressing or paused), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// A service in maintenance (`PUT /v1/services/{s}/maintenance`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceView {
    /// When it was turned on (RFC 3339).
    pub since: String,
    pub retry_after_seconds: u64,
    /// Client networks let through.
    pub allow: Vec<String>,
    /// Path prefixes let through (besides the service's health check paths).
    pub exempt: Vec<String>,
    /// Size of the HTML page, when one was given.
    pub page_bytes: Option<usize>,
    /// Size of the JSON body, when one was given.
    pub json_bytes: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    /// The weight in force.
    pub weight: u32,
    /// The weight the config file gives.
    pub config_weight: u32,
    /// Whether `weight` comes from a runtime override (admin API / ctl) rather than the file.
    pub overridden: bool,
    pub healthy_servers: usize,
    pub servers: Vec<ServerView>,
    /// The pool's server names with what they resolve to now (empty without names).
    #[serde(default)]
    pub names: Vec<NameView>,
    /// The pool's live window (see `rollout::window`).
    pub live: LiveView,
}

/// A server name of a pool (`name:port`) and its current addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameView {
    /// As the config writes it: `api.internal:8080`.
    pub name: String,
    /// `ip:port` of each address: each is a server of the pool.
    pub addresses: Vec<String>,
    /// When the addresses were last confirmed by an answer (RFC 3339); `null` if never.
    pub resolved_at: Option<String>,
    /// Why the last lookup failed (the addresses are the last good ones); `null` when it did not.
    pub error: Option<String>,
}

/// A pool's requests, errors and latency quantiles over its live window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveView {
    /// The window's length; it covers between one bucket less and this much history.
    pub window_seconds: f64,
    pub requests: u64,
    /// 5xx sent and upstream failures.
    pub errors: u64,
    pub error_rate: f64,
    /// `null` without requests. Within about 3 % of the true quantile.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerView {
    pub address: String,
    /// The DNS name this address belongs to; `null` for a server given by IP.
    #[serde(default)]
    pub name: Option<String>,
    pub weight: u32,
    /// Takes requests only while no other server of the pool can.
    #[serde(default)]
    pub backup: bool,
    /// Active checks' verdict.
    pub healthy: bool,
    /// Taken out by passive checks for now.
    pub ejected: bool,
    /// Gets requests: healthy and not ejected.
    pub available: bool,
    pub in_flight: usize,
}

/// `POST /v1/services/{s}/switch` with `watch`: the service, and the watch it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Switched {
    #[serde(flatten)]
    pub service: ServiceView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// A rollout as the admin API shows it (`GET …/rollouts/current`, and every rollout action).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutView {
    pub id: u64,
    pub service: String,
    pub kind: Kind,
    pub canary: String,
    pub stable: String,
    pub state: Phase,
    pub step: usize,
    pub steps: Vec<u32>,
    pub canary_weight: u32,
    pub interval_seconds: f64,
    pub max_error_rate: f64,
    pub max_p99_ms: Option<f64>,
    pub min_requests: u64,
    pub shield: bool,
    pub started_at: String,
    pub step_started_at: String,
    pub finished_at: Option<String>,
    pub reason: Option<String>,
    pub holding: Option<String>,
    pub step_requests: u64,
    pub canary_live: LiveView,
    pub stable_live: LiveView,
    pub generation: u64,
}

/// `GET …/rollouts/current/events`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Event>,
}

/// `GET /v1/services/{service}/traffic`: the service's requests per pool over the last minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Traffic {
    pub service: String,
    /// How often a sample is taken.
    pub step_seconds: f64,
    /// Oldest first; at most 10 minutes of them.
    pub samples: Vec<TrafficSample>,
}

/// The requests of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficSample {
    /// When the step ended, in Unix milliseconds (as rollout events' `time`).
    pub time: u64,
    /// The step's actual length.
    pub seconds: f64,
    pub pools: Vec<PoolTraffic>,
}

/// One pool in a [`TrafficSample`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolTraffic {
    pub name: String,
    /// Requests that reached the pool during the step (as its live window counts them).
    pub requests: u64,
    /// The pool's weight in force at the end of the step.
    pub weight: u32,
}

/// `POST /v1/reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reloaded {
    pub generation: u64,
    /// Always `reloaded`.
    pub status: String,
}

/// `GET /v1/certs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Certificates {
    pub certificates: Vec<CertStatus>,
    /// The certificates of `[[certificates]]` in force (files), with their validity.
    #[serde(default)]
    pub files: Vec<FileCert>,
}

/// A certificate of `[[certificates]]`, as loaded at start or at the last reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCert {
    pub file: String,
    /// The names it serves (from the config, else the certificate's own).
    pub names: Vec<String>,
    pub fallback: bool,
    /// `null` when the leaf does not parse as X.509.
    pub issuer: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub not_after_unix: Option<u64>,
}

/// One ACME certificate as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertStatus {
    /// The certificate id: its first configured name.
    pub id: String,
    pub names: Vec<String>,
    /// `http-01`, `tls-alpn-01` or `dns-01`.
    pub challenge: String,
    pub status: CertState,
    pub issuer: Option<String>,
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub not_after_unix: Option<u64>,
    /// When the next order is due: renewal time, or the next retry after a failure.
    pub next_attempt: Option<String>,
    pub next_attempt_unix: Option<u64>,
    /// Failed orders in a row.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Orders this process placed for it (successful or not).
    pub orders: u64,
    /// Where its files are.
    pub stored_at: String,
}

/// Where an ACME certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// No certificate yet: a self-signed fallback serves.
    Pending,
    Valid,
    /// An order is running.
    Renewing,
    /// The last order failed; the current certificate, if any, keeps serving.
    Failing,
    Expired,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Valid => "valid",
            CertState::Renewing => "renewing",
            CertState::Failing => "failing",
            CertState::Expired => "expired",
        }
    }
}

/// `POST /v1/certs/{name}/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewalRequested {
    /// The id of the certificate that covers the name.
    pub certificate: String,
    /// Always `renewal requested`.
    pub status: String,
}

/// Every error answer: the message and the status, plus what a client needs to act on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Each config error of a rejected reload, as `file:line:column: reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    /// The current generation, on a conflict (412).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The rollout that refused the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<u64>,
    pub status: u16,
}

/// `GET /v1/cluster`: the fleet as this node sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    pub prefix: String,
    /// `ok`, or `degraded` (etcd out of reach: the node serves its last state and refuses writes).
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The node that leads the fleet's rollouts, if one does.
    #[serde(default)]
    pub leader: Option<String>,
    /// Whether this node is the leader.
    #[serde(default)]
    pub leader_here: bool,
    pub etcd: EtcdView,
    /// Live nodes, from their leases, by name.
    #[serde(default)]
    pub nodes: Vec<NodeView>,
    /// Fleet entries this node ignores, by service, with why (a service or pool its config lacks).
    #[serde(default)]
    pub ignored: std::collections::BTreeMap<String, String>,
    /// The fleet's Redis for `scope = "cluster"` zones, when `[cluster] redis` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisView>,
}

/// Redis as this node sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RedisView {
    /// `redis://HOST:PORT` (no credentials).
    pub address: String,
    /// `up`, or `down`: cluster zones count locally at `rate / nodes` until it answers again.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// `[cluster] redis_timeout`, in milliseconds.
    #[serde(default)]
    pub timeout_ms: u64,
    /// Requests each cluster zone decided with its local fallback since the start.
    #[serde(default)]
    pub fallbacks: std::collections::BTreeMap<String, u64>,
}

/// etcd as the cluster service last saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EtcdView {
    pub endpoints: Vec<String>,
    pub reachable: bool,
    /// The store's revision at the last listing.
    #[serde(default)]
    pub revision: u64,
}

/// One live node of the fleet, as it published itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    /// Its config generation.
    pub generation: u64,
    /// A hash of its config (node-specific values left out): nodes of one fleet should agree.
    pub config_hash: String,
    /// Whether its config hash is the leader's (none while there is no leader).
    #[serde(default)]
    pub matches_leader: Option<bool>,
    #[serde(default)]
    pub admin: Option<String>,
    pub version: String,
    /// Unix ms when the process started.
    pub started_at: u64,
}
