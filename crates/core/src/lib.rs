//! Switchyard's model and pure parts: config, routing, pools and picks, limits, rollouts, the book.
//!
//! This crate is the bottom of the layering (docs/architecture.md): it cannot import the
//! runtime, the request path or the admin API, which live in the `switchyard` crate above it.
//! Nothing here owns a lock over config-derived state or does I/O beyond reading config files.

pub mod admin_request;
pub mod book;
pub mod config;
pub mod fsutil;
pub mod head;
pub mod hex;
pub mod htpasswd;
pub mod import;
pub mod limits;
pub mod lograte;
pub mod maintenance;
pub mod path;
pub mod proxy_protocol;
pub mod rollout;
pub mod routing;
pub mod secret;
pub mod static_files;
pub mod trace_context;
pub mod upstream;
