//! The process log (stderr): tracing events and bridged `log` records as text or JSON lines, filtered per module.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::ProcessLogFormat;

type FormatLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Swaps the format once the config is read, and at each reload.
static FORMAT: OnceLock<reload::Handle<FormatLayer, Registry>> = OnceLock::new();

/// Filters every crate starts with, before the operator's: rustls warns once per handshake whose
/// SNI is an IP address (wrk, health checkers): the client's doing, not the operator's, and at
/// thousands of handshakes a second a measurable cost (benches/RESULTS.md).
const BASE_FILTER: &str = "rustls::msgs::handshake=error";

/// Installs the process log at `filter` (`info`, `info,pingora_core=warn`, ... as
/// `--log-level` and `SWITCHYARD_LOG` give it) in text; `set_format` switches it to JSON.
/// A second call (tests) keeps the first.
pub fn init(filter: &str) {
    let directives = format!("{BASE_FILTER},{filter}");
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("switchyard: bad log filter \"{filter}\" ({e}); using info");
        EnvFilter::new(format!("{BASE_FILTER},info"))
    });
    let (format, handle) = reload::Layer::new(layer(ProcessLogFormat::Text));
    // `try_init` also routes the `log` records of pingora and other crates into tracing.
    if Registry::default()
        .with(format)
        .with(filter)
        .try_init()
        .is_ok()
    {
        let _ = FORMAT.set(handle);
    }
}

/// Writes the lines that follow in `format` (`[server] log_format`).
pub fn set_format(format: ProcessLogFormat) {
    if let Some(handle) = FORMAT.get() {
        if let Err(e) = handle.reload(layer(format)) {
            tracing::warn!("cannot switch the process log format: {e}");
        }
    }
}

fn layer(format: ProcessLogFormat) -> FormatLayer {
    let base = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    match format {
        ProcessLogFormat::Text => base.boxed(),
        // One object per line, the event's fields beside `message` (not nested), no span data.
        ProcessLogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    }
}
