//! The config file as written: a serde mirror of the TOML, with spans kept for error locations.
//!
//! Nothing here is validated beyond its type; `config::validate` turns it into the model. Each
//! section's own raw types live beside its validation (`server.rs`, `services.rs`, ...).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::acme::RawAcme;
use super::admin::RawAdmin;
use super::cluster::RawCluster;
use super::limits::RawLimits;
use super::listeners::{RawCertificate, RawListener};
use super::routes::{RawDefaults, RawRoute};
use super::server::RawServer;
use super::services::RawService;
use super::tls_policy::RawTls;
use super::tracing::RawTracing;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub certificates: Vec<Spanned<RawCertificate>>,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    /// Not `Spanned`: a service is often an implicit table (`[services.api.pools.blue]` only),
    /// which toml cannot span; its errors point at its pools or its header instead.
    pub services: BTreeMap<String, RawService>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub limits: Option<RawLimits>,
    pub acme: Option<Spanned<RawAcme>>,
    pub tls: Option<RawTls>,
    pub tracing: Option<Spanned<RawTracing>>,
    pub cluster: Option<Spanned<RawCluster>>,
}
