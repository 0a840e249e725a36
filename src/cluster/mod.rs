//! The fleet's link to etcd: lists and watches the shared runtime state, writes this node's changes, keeps its lease and node entry, and campaigns to lead rollouts.
//!
//! Keys under `[cluster] prefix`:
//! - `services/NAME`: the service's [`ServiceRecord`] (JSON); its mod-revision is its ETag.
//! - `nodes/NODE`: each live node's [`NodeView`], attached to the node's lease.
//! - `leader/...`: etcd's election for the node that drives rollouts (v3election, on the lease).
//! - `windows/NODE`: while a rollout is active, the node's canary and stable pool windows
//!   ([`Publication`], JSON), put every [`PUBLISH_EVERY`] on the node's lease; every node lists
//!   and watches the others' (`FleetWindows`), and the leader judges canaries on the sum.
//!
//! A session connects, grants a lease, lists every service entry (applied whole: services
//! without an entry are cleared), watches from the listing's revision on, publishes its node
//! entry and campaigns. Anything that fails (a call past `timeout`, the watch ending, the lease
//! renewal) ends the session: the node is degraded (it keeps serving its last state, refuses
//! writes, leads nothing) and starts a new session after a short backoff, so catching up after
//! an outage is a fresh listing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::api::{ClusterView, EtcdView, NodeView};
use crate::config::{ClusterConfig, Config};
use crate::etcd::{bounded, list_then_watch, next_events, resume_watch, Keys};
use crate::runtime::{Fleet, FleetError, Publication, Runtime, PUBLISH_EVERY};

mod tickets;

/// The longest pause between two sessions.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The cluster service: present only when the config has `[cluster]` (read at start; a reload
/// that changes `[cluster]` is logged and takes a restart).
pub struct ClusterService {
    runtime: Arc<Runtime>,
    config: ClusterConfig,
    /// Seals the fleet's session-ticket keys (with `[cluster] encryption_key`).
    sealer: Option<Arc<crate::etcd::Sealer>>,
}

impl ClusterService {
    pub fn new(runtime: Arc<Runtime>, config: ClusterConfig) -> ClusterService {
        let sealer = config
            .encryption_key
            .as_ref()
            .map(|k| Arc::new(crate::etcd::Sealer::new(k.expose())));
        ClusterService {
            runtime,
            config,
            sealer,
        }
    }
}

/// The writer the runtime uses while a session is up.
struct Link {
    client: parking_lot::Mutex<Option<Client>>,
    handle: tokio::runtime::Handle,
    keys: Keys,
    timeout: Duration,
}

impl Fleet for Link {
    fn write(&self, service: &str, record: &[u8], expected: u64) -> Result<u64, FleetError> {
        let Some(mut client) = self.client.lock().clone() else {
            return Err(FleetError::Unavailable("not connected to etcd".into()));
        };
        let key = self.keys.service(service);
        let expected = i64::try_from(expected).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(key.clone(), record.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let timeout = self.timeout;
        // On the cluster service's runtime: the caller may be a blocking thread or another
        // runtime's task, and waits here at most `timeout`.
        self.handle.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, client.txn(txn)).await);
        });
        let answer = rx
            .recv_timeout(timeout + Duration::from_millis(200))
            .ok()
            .and_then(Result::ok);
        let resp = match answer {
            Some(Ok(resp)) => resp,
            Some(Err(e)) => return Err(FleetError::Unavailable(format!("etcd: {e}"))),
            None => {
                return Err(FleetError::Unavailable(format!(
                    "etcd did not answer within {}",
                    humantime::format_duration(timeout)
                )))
            }
        };
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(u64::try_from(revision).unwrap_or(0));
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map_or(0, |kv| kv.mod_revision())),
                _ => None,
            })
            .unwrap_or(0);
        Err(FleetError::Conflict {
            service: service.to_string(),
            current: u64::try_from(current).unwrap_or(0),
        })
    }
}

#[async_trait]
impl BackgroundService for ClusterService {
    /// Runs the sessions on a runtime of the service's own (one worker thread, I/O and timers),
    /// which the runtime's writes are spawned onto: the etcd client's tasks never wait behind
    /// another background service.
    async fn start(&self, shutdown: ShutdownWatch) {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cluster")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("cluster: cannot start its runtime: {e}; the node stays degraded");
                self.runtime
                    .cluster
                    .set_degraded(&format!("no runtime: {e}"));
                return;
            }
        };
        let worker = ClusterService {
            runtime: self.runtime.clone(),
            config: self.config.clone(),
            sealer: self.sealer.clone(),
        };
        let _ = rt.spawn(async move { worker.run(shutdown).await }).await;
        rt.shutdown_background();
    }
}

impl ClusterService {
    async fn run(&self, mut shutdown: ShutdownWatch) {
        let keys = Keys::new(&self.config);
        let link = Arc::new(Link {
            client: parking_lot::Mutex::new(None),
            handle: tokio::runtime::Handle::current(),
            keys: keys.clone(),
            timeout: self.config.timeout,
        });
        self.runtime.cluster.attach(link.clone());
        let mut backoff = Duration::from_millis(100);
        // The last fleet revision this node applied: a new session resumes the watch from it.
        let mut seen = None;
        loop {
            let outcome = self.session(&link, &keys, &mut seen, &mut shutdown).await;
            *link.client.lock() = None;
            // What the other nodes published goes stale with the session.
            self.runtime.cluster.windows.clear();
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    if self.runtime.cluster.degraded().is_none() {
                        tracing::error!(
                            target: "switchyard::cluster",
                            event = "degraded",
                            reason = %e,
                            "cluster: degraded: {e}; serving the last state, refusing changes until etcd is back"
                        );
                    } else {
                        crate::lograte::warn(
                            "cluster-session",
                            format_args!("cluster: still degraded: {e}"),
                        );
                    }
                    self.runtime.cluster.set_degraded(&e);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl ClusterService {
    /// One connected session; returns `Ok` only at shutdown.
    async fn session(
        &self,
        link: &Link,
        keys: &Keys,
        seen: &mut Option<i64>,
        shutdown: &mut ShutdownWatch,
    ) -> Result<(), String> {
        let cfg = &self.config;
        let t = cfg.timeout;
        let mut client = crate::etcd::connect(cfg).await?;
        let ttl = i64::try_from(cfg.lease_ttl.as_secs()).unwrap_or(5);
        let lease = bounded(t, "lease grant", client.lease_grant(ttl, None))
            .await?
            .id();
        let (mut keeper, mut renewals) =
            bounded(t, "lease keep-alive", client.lease_keep_alive(lease)).await?;

        // Every change since the last session, or (first session, history compacted) the whole
        // state; then every change after it.
        let services = keys.services();
        let resumed = match *seen {
            Some(from) => match resume_watch(&mut client, t, &services, from).await? {
                Some(watch) => {
                    tracing::info!(
                        target: "switchyard::cluster",
                        event = "resumed",
                        from,
                        "cluster: resuming the fleet's watch from revision {from}: the changes made since come on it"
                    );
                    Some((watch, from))
                }
                None => {
                    tracing::warn!(
                        target: "switchyard::cluster",
                        event = "relist",
                        "cluster: etcd compacted its history past revision {from}: listing the fleet's whole state"
                    );
                    None
                }
            },
            None => None,
        };
        let (mut watch, revision) = match resumed {
            Some(resumed) => resumed,
            None => {
                let (listing, watch) = list_then_watch(&mut client, t, "", &services).await?;
                let revision = listing.header().map_or(0, |h| h.revision());
                let entries = listing
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        let name = kv.key_str().ok()?.strip_prefix(&services)?.to_string();
                        Some((name, Some(kv.value().to_vec()), rev(kv.mod_revision())))
                    })
                    .collect();
                let rt = self.runtime.clone();
                let _ = tokio::task::spawn_blocking(move || rt.apply_fleet(entries, true)).await;
                (watch, revision)
            }
        };
        *seen = Some(revision);

        // The other nodes' windows, the same way.
        let windows = keys.windows();
        let (listing, mut window_watch) =
            list_then_watch(&mut client, t, "window ", &windows).await?;
        for kv in listing.kvs() {
            self.heard_window(&windows, kv.key_str().ok(), Some(kv.value()));
        }
        let mut publisher = Publisher::default();
        let mut publish_every = tokio::time::interval(PUBLISH_EVERY);
        publish_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut published = self.runtime.subscribe();
        self.put_node(&mut client, keys, lease).await?;
        *link.client.lock() = Some(client.clone());
        self.runtime.cluster.set_joined();
        // Rollbacks made here while cut off go to the fleet now (off the loop: the writer lock).
        let rt = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || rt.push_rollbacks()).await;
        tracing::info!(
            target: "switchyard::cluster",
            event = "joined",
            node = %cfg.node,
            revision,
            "cluster: node \"{}\" joined the fleet at {} (revision {revision})",
            cfg.node,
            cfg.prefix
        );
        self.refresh_view(&mut client, keys, revision).await;
        self.sync_tickets(&mut client, keys).await;

        // Leadership: etcd's election on this node's lease, so it ends when the lease does.
        let (elected_tx, mut elected) = tokio::sync::oneshot::channel();
        let campaign = {
            let mut client = client.clone();
            let name = keys.election();
            let node = cfg.node.clone();
            tokio::spawn(async move {
                loop {
                    match client.campaign(name.clone(), node.clone(), lease).await {
                        Ok(_) => {
                            let _ = elected_tx.send(());
                            return;
                        }
                        Err(e) => {
                            crate::lograte::warn(
                                "cluster-campaign",
                                format_args!("cluster: campaign for leadership: {e}; trying again"),
                            );
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        };

        let mut every = tokio::time::interval(cfg.lease_ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_revision = revision;
        let mut campaigning = true;
        let started_with = serde_json::to_string(&cfg).unwrap_or_default();
        let outcome = loop {
            tokio::select! {
                message = next_events(&mut watch, "") => {
                    let resp = match message {
                        Ok(resp) => resp,
                        Err(e) => {
                            if e.contains(crate::etcd::COMPACTED) {
                                // The next session lists the whole state.
                                *seen = None;
                            }
                            break Err(e);
                        }
                    };
                    let entries = service_entries(&resp, &services, &mut last_revision);
                    *seen = Some(last_revision);
                    if !entries.is_empty() {
                        // Off this runtime: the writer lock may be held by a change waiting for
                        // its own etcd answer, which this runtime's thread must process.
                        let rt = self.runtime.clone();
                        let _ = tokio::task::spawn_blocking(move || rt.apply_fleet(entries, false)).await;
                    }
                }
                message = next_events(&mut window_watch, "window ") => {
                    let resp = match message {
                        Ok(resp) => resp,
                        Err(e) => break Err(e),
                    };
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let value = match ev.event_type() {
                            EventType::Put => Some(kv.value()),
                            EventType::Delete => None,
                        };
                        self.heard_window(&windows, kv.key_str().ok(), value);
                    }
                }
                _ = publish_every.tick() => {
                    publisher.publish(&self.runtime, &client, keys, &cfg.node, lease, t);
                }
                _ = every.tick() => {
                    if let Err(e) = bounded(t, "lease renewal", keeper.keep_alive()).await {
                        break Err(e);
                    }
                    match bounded(t, "lease renewal", renewals.message()).await {
                        Ok(Some(r)) if r.ttl() > 0 => {}
                        Ok(_) => break Err("this node's lease expired".to_string()),
                        Err(e) => break Err(e),
                    }
                    self.refresh_view(&mut client, keys, last_revision).await;
                    self.sync_tickets(&mut client, keys).await;
                }
                won = &mut elected, if campaigning => {
                    campaigning = false;
                    if won.is_ok() {
                        self.runtime.cluster.set_leader(true);
                        tracing::info!(
                            target: "switchyard::cluster",
                            event = "leader",
                            node = %cfg.node,
                            "cluster: node \"{}\" now leads the fleet's rollouts",
                            cfg.node
                        );
                        self.refresh_view(&mut client, keys, last_revision).await;
                    }
                }
                changed = published.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    let snap = published.borrow_and_update().clone();
                    if let Some(now) = &snap.config.cluster {
                        if serde_json::to_string(now).unwrap_or_default() != started_with {
                            crate::lograte::warn(
                                "cluster-config",
                                format_args!("cluster: [cluster] changed in the config; it takes a restart"),
                            );
                        }
                    }
                    if let Err(e) = self.put_node(&mut client, keys, lease).await {
                        break Err(e);
                    }
                }
                _ = shutdown.changed() => {
                    // Leave at once: the node entry and any leadership go with the lease.
                    let _ = bounded(t, "lease revoke", client.lease_revoke(lease)).await;
                    break Ok(());
                }
            }
        };
        campaign.abort();
        self.runtime.cluster.set_leader(false);
        outcome
    }

    /// Keeps the fleet's session-ticket keys (with an encryption key and tickets on; a failure
    /// keeps the keys in force and is logged).
    async fn sync_tickets(&self, client: &mut Client, keys: &Keys) {
        let (Some(sealer), snap) = (&self.sealer, self.runtime.snapshot()) else {
            return;
        };
        if !snap.config.tls.session_tickets {
            return;
        }
        let fleet_keys = self.runtime.tls.fleet_ticket_keys();
        if let Err(e) = tickets::sync(
            client,
            keys,
            sealer,
            snap.config.tls.ticket_rotation,
            self.config.timeout,
            &fleet_keys,
        )
        .await
        {
            crate::lograte::warn(
                "cluster-tickets",
                format_args!("cluster: session-ticket keys: {e}; the keys in force stay"),
            );
        }
    }

    /// Another node's window publication (`None` once its key is gone) under `key`.
    fn heard_window(&self, windows: &str, key: Option<&str>, value: Option<&[u8]>) {
        let Some(node) = key.and_then(|k| k.strip_prefix(windows)) else {
            return;
        };
        if node == self.config.node {
            return;
        }
        let publication = match value.map(serde_json::from_slice::<Publication>) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                crate::lograte::warn(
                    "cluster-windows",
                    format_args!("cluster: ignoring node \"{node}\"'s windows: {e}"),
                );
                return;
            }
        };
        let snap = self.runtime.snapshot();
        self.runtime
            .cluster
            .windows
            .heard(node, publication, &snap, std::time::Instant::now());
    }

    /// Publishes this node's entry (its config generation and hash) on its lease.
    async fn put_node(&self, client: &mut Client, keys: &Keys, lease: i64) -> Result<(), String> {
        let snap = self.runtime.snapshot();
        let entry = NodeView {
            node: self.config.node.clone(),
            generation: snap.generation,
            config_hash: config_hash(&snap.config),
            matches_leader: None,
            admin: snap.config.admin.as_ref().map(|a| a.address.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: started_at(),
        };
        let value = serde_json::to_vec(&entry).unwrap_or_default();
        bounded(
            self.config.timeout,
            "node entry",
            client.put(
                keys.node(&self.config.node),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Lists the live nodes and the leader for `GET /v1/cluster` (and the node count the
    /// cluster-scope zones fall back on). A failed listing keeps the last view.
    async fn refresh_view(&self, client: &mut Client, keys: &Keys, revision: i64) {
        let t = self.config.timeout;
        let Ok(listing) = bounded(
            t,
            "node list",
            client.get(keys.nodes(), Some(GetOptions::new().with_prefix())),
        )
        .await
        else {
            return;
        };
        let mut nodes: Vec<NodeView> = listing
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let leader = match bounded(t, "leader", client.leader(keys.election())).await {
            Ok(resp) => resp
                .kv()
                .and_then(|kv| kv.value_str().ok())
                .map(str::to_string),
            Err(_) => None,
        };
        let leader_hash = leader
            .as_ref()
            .and_then(|l| nodes.iter().find(|n| &n.node == l))
            .map(|n| n.config_hash.clone());
        for n in &mut nodes {
            n.matches_leader = leader_hash.as_ref().map(|h| *h == n.config_hash);
        }
        self.runtime.cluster.set_view(ClusterView {
            node: self.config.node.clone(),
            prefix: self.config.prefix.clone(),
            state: String::new(),
            reason: None,
            leader,
            leader_here: false,
            etcd: EtcdView {
                endpoints: self.config.etcd.clone(),
                reachable: true,
                revision: rev(revision),
            },
            nodes,
            ignored: Default::default(),
            redis: None,
        });
    }
}

/// Puts this node's windows while a rollout is active, off the session's loop: one put at a
/// time (a tick that finds the last one still in flight skips), bounded by the timeout. A
/// failed put is logged and the next tick tries again; an etcd outage is noticed by the lease
/// renewal. When no rollout is active any more, the key is deleted once.
#[derive(Default)]
struct Publisher {
    in_flight: Arc<std::sync::atomic::AtomicBool>,
    /// The key holds a publication (put since the last delete).
    holding: bool,
}

impl Publisher {
    fn publish(
        &mut self,
        runtime: &Runtime,
        client: &Client,
        keys: &Keys,
        node: &str,
        lease: i64,
        timeout: Duration,
    ) {
        use std::sync::atomic::Ordering;
        let snap = runtime.snapshot();
        let publication = Publication::of(node, &snap);
        if publication.pools.is_empty() && !self.holding {
            return;
        }
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let key = keys.window(node);
        let value = if publication.pools.is_empty() {
            self.holding = false;
            None
        } else {
            self.holding = true;
            Some(serde_json::to_vec(&publication).unwrap_or_default())
        };
        let mut client = client.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let done = match value {
                Some(value) => bounded(
                    timeout,
                    "window put",
                    client.put(key, value, Some(PutOptions::new().with_lease(lease))),
                )
                .await
                .map(|_| ()),
                None => bounded(timeout, "window delete", client.delete(key, None))
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = done {
                crate::lograte::warn(
                    "cluster-publish",
                    format_args!("cluster: publishing this node's windows: {e}"),
                );
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

/// The services a watch answer changed (`None`: deleted), with their revisions; `last` becomes
/// the newest revision seen.
fn service_entries(
    resp: &etcd_client::WatchResponse,
    services: &str,
    last: &mut i64,
) -> Vec<(String, Option<Vec<u8>>, u64)> {
    resp.events()
        .iter()
        .filter_map(|ev| {
            let kv = ev.kv()?;
            let name = kv.key_str().ok()?.strip_prefix(services)?.to_string();
            *last = (*last).max(kv.mod_revision());
            let value = match ev.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            Some((name, value, rev(kv.mod_revision())))
        })
        .collect()
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// A short hash of the config as nodes of one fleet should share it: `GET /v1/config`'s form
/// without the file's path and this node's name.
pub fn config_hash(config: &Config) -> String {
    let mut value = serde_json::to_value(config).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("source");
        if let Some(cluster) = map.get_mut("cluster").and_then(|c| c.as_object_mut()) {
            cluster.remove("node");
        }
    }
    let text = serde_json::to_vec(&value).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &text);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// When this process started (Unix ms), once.
fn started_at() -> u64 {
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(crate::book::unix_ms)
}
