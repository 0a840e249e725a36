//! Progressive delivery's pure parts: each pool's live window, and the rollout state machine judged by it.
//!
//! [`engine`] is the rollout state machine; `book::tick` runs it. Every finished request that
//! reached a pool is recorded in that pool's [`PoolWindow`] (see [`window`] for the ring of
//! buckets, the histogram and its error, and the races). A window belongs to a (service, pool)
//! name pair, not to a snapshot: the writer's `ServerRegistry` hands the same window to each new
//! snapshot's pool while the pool and the window's shape stay, so a reload or a weight change
//! keeps every pool's figures, and a pool that leaves the config loses its window. A request
//! reaches its window through the snapshot it loaded: no lookup, no lock.

pub mod engine;
pub mod window;

pub use engine::{
    Decision, Event, EventKind, History, Kind, Phase, Plan, Rollout, Rollouts, StepClock,
};
pub use window::{is_error, PoolWindow, WindowCounts, WindowError, WindowSpec, WindowStats};
