//! Every Prometheus metric in one place (placeholder until the metrics work lands).

use crate::runtime::Runtime;

/// The text exposition of every metric, for `GET /metrics`.
pub fn render(_runtime: &Runtime) -> String {
    String::new()
}
