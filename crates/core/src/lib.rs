//! Switchyard's model and pure parts: config, routing, pools and picks, limits, rollouts, the book, and every parser of untrusted input.
//!
//! This crate is the bottom of the layering (docs/architecture.md): it cannot import the
//! runtime, the request path or the admin API, which live in the `switchyard` crate above it.
//! Nothing here owns a lock over config-derived state or does I/O beyond reading config files
//! (and, for `import`, the other proxy's config and manifests). The parsers of what clients and
//! operators send (`head`, `proxy_protocol`, `admin_request`, `path`, `config`, `import`) live
//! here so that the fuzz targets build without the runtime; `import` is a surface (floor 10 of
//! `tests/layers.rs`, beside the command that runs it) that happens to need nothing above the
//! model.

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
