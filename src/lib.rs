//! Switchyard: an edge reverse proxy and traffic switcher on pingora.
//!
//! Dependencies point one way: config → snapshot → proxy. See docs/architecture.md.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fsutil;
pub mod health;
pub mod limits;
pub mod lograte;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod rollout;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod upstream;
