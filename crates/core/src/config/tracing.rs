//! The `[tracing]` table: where request spans are exported over OTLP, if anywhere.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::RawConfig;
use super::values::{self, Text};
use super::{serialize, Validator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<Spanned<Text>>,
    pub service_name: Option<Text>,
    pub export_interval: Option<values::Duration>,
}

/// Trace context is always kept and passed on; spans leave the process only with an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TracingConfig {
    /// OTLP/HTTP traces URL (`http://collector:4318/v1/traces`), protobuf-encoded; none: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of the exported spans.
    pub service_name: String,
    /// How often the batch of finished spans is sent (it is also sent once it holds 512).
    #[serde(serialize_with = "serialize::duration")]
    pub export_interval: Duration,
}

impl Default for TracingConfig {
    fn default() -> TracingConfig {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "switchyard".into(),
            export_interval: Duration::from_secs(1),
        }
    }
}

impl Validator {
    pub(super) fn tracing(&mut self, raw: &RawConfig) -> TracingConfig {
        let defaults = TracingConfig::default();
        let Some(t) = raw.tracing.as_ref().map(Spanned::get_ref) else {
            return defaults;
        };
        let otlp_endpoint = t.otlp_endpoint.as_ref().and_then(|e| {
            let text: &str = e.get_ref();
            let ok = text
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if ok.is_none() {
                self.error(
                    e.span(),
                    format!("otlp_endpoint \"{text}\" is not an http:// or https:// URL"),
                );
            }
            ok.map(|_| text.to_string())
        });
        let export_interval = t.export_interval.map_or(defaults.export_interval, |d| d.0);
        if export_interval.is_zero() {
            let span = self.header_span("export_interval");
            self.error(span, "export_interval must be above 0");
        }
        TracingConfig {
            otlp_endpoint,
            service_name: t
                .service_name
                .as_ref()
                .map_or(defaults.service_name, |n| n.0.clone()),
            export_interval,
        }
    }
}
