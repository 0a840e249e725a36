//! The fleet's pool windows: what each node publishes of its canary and stable pools during a rollout, and the other nodes' latest counts that the leader adds to its own to judge a canary on the fleet's sum.
//!
//! Every node publishes one [`Publication`] (every [`PUBLISH_EVERY`], under its lease) while a
//! rollout is active; the cluster service hands every other node's publication to
//! [`FleetWindows::heard`] (or `None` once its key is gone: its lease ended). Window counts add up
//! exactly ([`WindowCounts::add`]), so the fleet's figures are those of all its requests, up to
//! one publishing period late for the other nodes' part. Request totals are carried into each
//! pool's window ([`crate::rollout::PoolWindow::add_elsewhere`]) as their growth between two
//! publications of one node, so a step's request count is the fleet's, never counts a node's
//! requests twice, and never goes back when a node leaves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::book::CanaryFigures;
use crate::rollout::{Rollout, WindowCounts};
use crate::snapshot::Snapshot;

/// How often a node publishes its windows while a rollout is active.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// A node's publication heard longer ago than this is left out of the sum (its publisher is
/// stuck or cut off while its lease lives on): the leader judges on fresh figures only.
pub const MAX_AGE: Duration = Duration::from_secs(3);

/// One node's windows, as it publishes them (JSON, one etcd key per node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub node: String,
    pub pools: Vec<PoolCounts>,
}

/// One pool's counts on the publishing node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolCounts {
    pub service: String,
    pub pool: String,
    /// The active rollout these counts were published for: the leader adds only counts of the
    /// rollout it judges (a node a little behind may still publish the previous one).
    pub rollout: u64,
    /// Requests this node has served in the pool since its window was made.
    pub total: u64,
    /// The pool's window on this node.
    pub window: WindowCounts,
}

impl Publication {
    /// The canary and stable pools of every active rollout of `snap`, as this node saw them.
    pub fn of(node: &str, snap: &Snapshot) -> Publication {
        let mut pools = Vec::new();
        for r in snap.book.rollouts.all_active() {
            for pool in [&r.canary, &r.stable] {
                if let Some(p) = snap.pool(&r.service, pool) {
                    pools.push(PoolCounts {
                        service: r.service.clone(),
                        pool: pool.clone(),
                        rollout: r.id,
                        total: p.window.own_requests(),
                        window: p.window.counts(),
                    });
                }
            }
        }
        Publication {
            node: node.to_string(),
            pools,
        }
    }
}

/// The other nodes' latest publications, by node.
#[derive(Default)]
pub struct FleetWindows {
    nodes: parking_lot::Mutex<BTreeMap<String, Heard>>,
}

struct Heard {
    at: Instant,
    pools: Vec<PoolCounts>,
}

impl FleetWindows {
    /// Node `node`'s publication heard at `at`, or `None` once its key is gone. The growth of
    /// each pool's total since the node's previous publication is carried into that pool's
    /// window in `snap`; a pool heard for the first time (a node that joined, or that starts
    /// publishing a new rollout) carries nothing, and a total that went back (the node
    /// restarted) counts from 0.
    pub fn heard(
        &self,
        node: &str,
        publication: Option<Publication>,
        snap: &Snapshot,
        at: Instant,
    ) {
        let mut nodes = self.nodes.lock();
        let Some(publication) = publication else {
            nodes.remove(node);
            return;
        };
        if let Some(before) = nodes.get(node) {
            for now in &publication.pools {
                let Some(then) = before
                    .pools
                    .iter()
                    .find(|p| p.service == now.service && p.pool == now.pool)
                else {
                    continue;
                };
                let grown = if now.total >= then.total {
                    now.total - then.total
                } else {
                    now.total
                };
                if let Some(p) = snap.pool(&now.service, &now.pool) {
                    p.window.add_elsewhere(grown);
                }
            }
        }
        nodes.insert(
            node.to_string(),
            Heard {
                at,
                pools: publication.pools,
            },
        );
    }

    /// Forgets every node (this node's session with etcd ended: what it heard goes stale).
    pub fn clear(&self) {
        self.nodes.lock().clear();
    }

    /// The other nodes' counts of `pool` of `service` for rollout `rollout`, heard within
    /// [`MAX_AGE`] of `now`, summed; and how many nodes they came from.
    pub fn sum(
        &self,
        service: &str,
        pool: &str,
        rollout: u64,
        now: Instant,
    ) -> (WindowCounts, usize) {
        let mut sum = WindowCounts::default();
        let mut from = 0;
        for heard in self.nodes.lock().values() {
            if now.saturating_duration_since(heard.at) > MAX_AGE {
                continue;
            }
            for p in &heard.pools {
                if p.service == service && p.pool == pool && p.rollout == rollout {
                    sum.add(&p.window);
                    from += 1;
                }
            }
        }
        (sum, from)
    }

    /// Rollout `r`'s canary figures for the fleet: this node's window in `snap` plus every other
    /// node's fresh counts; the total already carries the others' requests.
    pub fn canary(
        &self,
        snap_services: &[crate::upstream::Service],
        r: &Rollout,
        now: Instant,
    ) -> Option<CanaryFigures> {
        let window = crate::book::canary_window(snap_services, r)?;
        let mut counts = window.counts();
        counts.add(&self.sum(&r.service, &r.canary, r.id, now).0);
        Some((
            counts.stats(window.spec().length()),
            window.total_requests(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Runtime, TEST_CONFIG};

    fn counts(requests: u64, errors: u64, latency_ms: u64) -> WindowCounts {
        let w = crate::rollout::PoolWindow::new(Default::default());
        for i in 0..requests {
            w.record_at(0, Duration::from_millis(latency_ms), i < errors);
        }
        w.counts_at(0)
    }

    fn publication(node: &str, rollout: u64, total: u64, window: WindowCounts) -> Publication {
        Publication {
            node: node.into(),
            pools: vec![PoolCounts {
                service: "api".into(),
                pool: "green".into(),
                rollout,
                total,
                window,
            }],
        }
    }

    #[test]
    fn the_sum_has_every_live_fresh_node_of_the_same_rollout() {
        let rt = Runtime::for_tests(TEST_CONFIG);
        let snap = rt.snapshot();
        let fleet = FleetWindows::default();
        let t0 = Instant::now();
        fleet.heard(
            "b",
            Some(publication("b", 7, 10, counts(10, 1, 5))),
            &snap,
            t0,
        );
        fleet.heard(
            "c",
            Some(publication("c", 7, 20, counts(20, 2, 50))),
            &snap,
            t0,
        );
        // A node still on the previous rollout is left out.
        fleet.heard(
            "d",
            Some(publication("d", 6, 99, counts(99, 99, 1))),
            &snap,
            t0,
        );
        let (sum, from) = fleet.sum("api", "green", 7, t0);
        assert_eq!((sum.requests, sum.errors, from), (30, 3, 2));
        assert_eq!(fleet.sum("api", "blue", 7, t0).1, 0);

        // A node whose key is gone (lease ended) no longer counts.
        fleet.heard("c", None, &snap, t0);
        assert_eq!(fleet.sum("api", "green", 7, t0).0.requests, 10);
        // Nor does one not heard for longer than MAX_AGE.
        let later = t0 + MAX_AGE + Duration::from_millis(1);
        assert_eq!(fleet.sum("api", "green", 7, later).1, 0);
        fleet.clear();
        assert_eq!(fleet.sum("api", "green", 7, t0).1, 0);
    }

    #[test]
    fn totals_carry_each_nodes_growth_once() {
        let rt = Runtime::for_tests(TEST_CONFIG);
        let snap = rt.snapshot();
        let green = &snap.pool("api", "green").expect("green").window;
        let fleet = FleetWindows::default();
        let t0 = Instant::now();
        // First heard: what the node served before carries nothing.
        fleet.heard(
            "b",
            Some(publication("b", 1, 500, counts(0, 0, 1))),
            &snap,
            t0,
        );
        assert_eq!(green.total_requests(), 0);
        fleet.heard(
            "b",
            Some(publication("b", 1, 530, counts(0, 0, 1))),
            &snap,
            t0,
        );
        fleet.heard(
            "c",
            Some(publication("c", 1, 40, counts(0, 0, 1))),
            &snap,
            t0,
        );
        fleet.heard(
            "c",
            Some(publication("c", 1, 45, counts(0, 0, 1))),
            &snap,
            t0,
        );
        assert_eq!(green.total_requests(), 35);
        // B restarts: its total starts over and counts from 0.
        fleet.heard(
            "b",
            Some(publication("b", 1, 3, counts(0, 0, 1))),
            &snap,
            t0,
        );
        assert_eq!(green.total_requests(), 38);
        // C leaves: what it served still counts.
        fleet.heard("c", None, &snap, t0);
        assert_eq!(green.total_requests(), 38);
        assert_eq!(
            green.own_requests(),
            0,
            "published totals are this node's own"
        );
    }

    #[test]
    fn the_leader_judges_its_own_window_plus_the_others() {
        let rt = Runtime::for_tests(TEST_CONFIG);
        let snap = rt.snapshot();
        let green = &snap.pool("api", "green").expect("green").window;
        for i in 0..10 {
            green.record(Instant::now(), Duration::from_millis(2), i < 2);
        }
        let fleet = FleetWindows::default();
        let now = Instant::now();
        fleet.heard(
            "b",
            Some(publication("b", 1, 10, counts(10, 2, 2))),
            &snap,
            now,
        );
        fleet.heard(
            "c",
            Some(publication("c", 1, 10, counts(10, 2, 2))),
            &snap,
            now,
        );
        let mut book = (*snap.book).clone();
        // Below min_requests errors count against min_requests: 2 of "100" is no breach of 5 %
        // on any one node, 6 of "100" is one for the fleet.
        let plan = crate::rollout::Plan {
            kind: crate::rollout::Kind::Rollout,
            canary: "green".into(),
            stable: "blue".into(),
            steps: vec![10, 100],
            interval: Duration::from_secs(60),
            max_error_rate: 0.05,
            max_p99: None,
            min_requests: 100,
            shield: true,
        };
        let r = book
            .rollouts
            .start("api", plan, 0, snap.step_clock("api", "green", now))
            .clone();
        let (stats, _) = fleet.canary(&snap.services, &r, now).expect("figures");
        assert_eq!((stats.requests, stats.errors), (30, 6));

        let mut alone = book.clone();
        let out = crate::book::tick(&snap.services, &mut alone, now, |r| {
            crate::book::local_canary(&snap.services, r)
        });
        assert!(out.events.is_empty(), "{:?}", out.events);
        let out = crate::book::tick(&snap.services, &mut book, now, |r| {
            fleet.canary(&snap.services, r, now)
        });
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].event, crate::rollout::EventKind::RolledBack);
        assert_eq!(out.events[0].requests, 30);
    }
}
