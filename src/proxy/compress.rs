//! Response compression per response: pingora's `ResponseCompression` module, its levels set from the route's `compression` before the module sees the response header.
//!
//! The module's response header filter runs after `response_filter` (pingora writes the header
//! through the modules once our phase is done), so the levels set here decide for this response.

use pingora::modules::http::compression::ResponseCompression;
use pingora::modules::http::HttpModuleCtx;
use pingora::protocols::http::compression::Algorithm;
use pingora_proxy::Session;

use crate::config::compression::Levels;
use crate::config::RouteOptions;

/// Sets the module's levels. `None`: nothing more of this request is compressed, and the module
/// leaves it. Turned down to 0 it would still run for every response header and body chunk, with
/// a boxed future for each header, only to pass them through unchanged. It is the only
/// downstream module (`init_downstream_modules`).
fn set_levels(session: &mut Session, levels: Option<Levels>) {
    let Some(l) = levels else {
        session.downstream_modules_ctx = HttpModuleCtx::empty();
        return;
    };
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        c.adjust_algorithm_level(Algorithm::Gzip, l.gzip);
        c.adjust_algorithm_level(Algorithm::Brotli, l.br);
        c.adjust_algorithm_level(Algorithm::Zstd, l.zstd);
    }
}

/// Nothing of this response is compressed (a precompressed file, a range).
pub(super) fn off(session: &mut Session) {
    set_levels(session, None);
}

/// In `request_filter`: the route's levels, or off for a route without compression and for gRPC
/// (it compresses its messages itself). Switchyard's own answers follow this (pingora's checks:
/// a compressible type over 20 bytes); upstream answers are decided again by [`response`].
pub(super) fn request(session: &mut Session, options: &RouteOptions, grpc: bool) {
    let on = options.compression && !grpc;
    set_levels(session, on.then_some(options.compression_settings.level));
}

/// In `response_filter`: whether this response is compressed (a configured type, not one that
/// is never compressed, at least `min_length` long, not encoded already).
pub(super) fn response(
    session: &mut Session,
    options: &RouteOptions,
    resp: &pingora::http::ResponseHeader,
) {
    if !options.compression || super::grpc::is_grpc(session) {
        return; // turned off in request_filter already
    }
    if resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
        return; // the final response decides (an upgrade is never compressed: below)
    }
    let header = |name| resp.headers.get(name).and_then(|v| v.to_str().ok());
    let length = header(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    let settings = &options.compression_settings;
    let yes = settings.compresses(
        header(http::header::CONTENT_TYPE),
        length,
        resp.headers.contains_key(http::header::CONTENT_ENCODING),
    );
    set_levels(session, yes.then_some(settings.level));
}
