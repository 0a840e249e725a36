//! The `[admin]` table: where the admin API listens and the token it wants.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::RawConfig;
use super::values::Text;
use super::Validator;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<Spanned<Text>>,
    pub token: Option<Text>,
    pub token_file: Option<Spanned<Text>>,
    #[serde(default)]
    pub metrics_require_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Bearer token; from `token`, else `token_file`, else $SWITCHYARD_TOKEN.
    pub token: Option<Secret>,
    /// Whether `GET /metrics` needs the token too (default: scrapable without it).
    pub metrics_require_token: bool,
}

/// The default admin API address, when `[admin]` gives none.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9900";

impl Validator {
    pub(super) fn admin(&mut self, raw: &RawConfig) -> Option<AdminConfig> {
        let spanned = raw.admin.as_ref()?;
        let a = spanned.get_ref();
        let address = match &a.address {
            Some(addr) => self.socket_addr(addr)?,
            None => DEFAULT_ADMIN_ADDRESS.parse().ok()?,
        };
        let mut token = a.token.as_ref().map(|t| t.0.clone());
        if token.is_none() {
            if let Some(file) = &a.token_file {
                let path = self.resolve_path(file.get_ref());
                match crate::fsutil::read_regular_to_string(&path) {
                    Ok(t) => token = Some(t.trim().to_string()),
                    Err(e) => self.error(
                        file.span(),
                        format!("cannot read token file \"{}\": {e}", path.display()),
                    ),
                }
            }
        }
        if token.is_none() {
            token = std::env::var("SWITCHYARD_TOKEN").ok();
        }
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() && !address.ip().is_loopback() {
            let span = a.address.as_ref().map_or(spanned.span(), |s| s.span());
            self.error(
                span,
                format!(
                    "the admin API on non-loopback address {address} needs a token (token, token_file or SWITCHYARD_TOKEN)"
                ),
            );
        }
        Some(AdminConfig {
            address,
            token: token.map(Secret::new),
            metrics_require_token: a.metrics_require_token,
        })
    }
}
