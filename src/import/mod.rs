//! `switchyard import`: configs of other proxies turned into a checked Switchyard config.

pub mod ingress;
