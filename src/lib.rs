//! Switchyard: an edge reverse proxy and traffic switcher on pingora.
//!
//! Dependencies point down, one floor at a time (docs/architecture.md; `tests/layers.rs` checks
//! it): the model and the pure parts are the `switchyard_core` crate (re-exported here under
//! their old paths), then parts with I/O (metrics, tls, access_log, state), the snapshot, the
//! store (runtime), the changes (control, health, acme), the surfaces (proxy, admin, ctl), and
//! the shell that wires them (server, cli, demo).

pub use switchyard_core::{
    admin_request, book, config, fsutil, head, htpasswd, limits, lograte, maintenance, path,
    proxy_protocol, rollout, routing, secret, static_files, trace_context, upstream,
};

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod ctl;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dns;
pub mod etcd;
pub mod health;
pub mod import;
pub mod keepalive;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod proxy;
pub mod redis_limits;
pub mod runtime;
pub mod scrape;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
