//! Response compression per response: pingora's `ResponseCompression` module, built for a request only when its route compresses, its levels set from the route's `compression` before the module sees the response header.
//!
//! The module's response header filter runs after `response_filter` (pingora writes the header
//! through the modules once our phase is done), so the levels set here decide for this response.

use pingora::http::RequestHeader;
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::{HttpModuleCtx, HttpModules};
use pingora::protocols::http::compression::Algorithm;
use pingora_proxy::Session;

use crate::config::compression::{Levels, DEFAULT_LEVEL};
use crate::config::RouteOptions;

/// The compression module, built into a request's module context by [`request`] when the
/// request's route compresses. pingora builds no downstream module for a session
/// (`init_downstream_modules` adds none): building the module, reading the request's
/// `Accept-Encoding` into it and dropping it again cost three allocations (the module, the
/// context's list of modules, a boxed future) and a lookup a request on every route without
/// compression, where the module had been turned off in `request_filter` (benches/RESULTS.md,
/// 2026-12-02).
/// Nothing before `request_filter`'s end writes through the modules (our own answers go to the
/// downstream session directly), so a module built there sees every response it saw before.
pub(super) struct Module(HttpModules);

impl Module {
    pub(super) fn new() -> Module {
        let mut modules = HttpModules::new();
        // Every algorithm starts at the default; `request` sets the route's levels.
        modules.add_module(ResponseCompressionBuilder::enable(DEFAULT_LEVEL));
        Module(modules)
    }

    /// The module context of a request whose route compresses at `levels`: the module, with the
    /// request's `Accept-Encoding` read, as pingora's request header filter reads it.
    fn context(&self, req: &RequestHeader, levels: Levels) -> HttpModuleCtx {
        let mut ctx = self.0.build_ctx();
        if let Some(c) = ctx.get_mut::<ResponseCompression>() {
            c.request_filter(req);
        }
        set_context_levels(&mut ctx, levels);
        ctx
    }
}

/// Sets the module's levels. `None`: nothing more of this request is compressed, and the module
/// leaves it: turned down to 0 it would still run for every response header and body chunk,
/// with a boxed future for each header, only to pass them through unchanged.
fn set_levels(session: &mut Session, levels: Option<Levels>) {
    match levels {
        Some(l) => set_context_levels(&mut session.downstream_modules_ctx, l),
        None => session.downstream_modules_ctx = HttpModuleCtx::empty(),
    }
}

fn set_context_levels(ctx: &mut HttpModuleCtx, l: Levels) {
    if let Some(c) = ctx.get_mut::<ResponseCompression>() {
        c.adjust_algorithm_level(Algorithm::Gzip, l.gzip);
        c.adjust_algorithm_level(Algorithm::Brotli, l.br);
        c.adjust_algorithm_level(Algorithm::Zstd, l.zstd);
    }
}

/// Nothing of this response is compressed (a precompressed file, a range).
pub(super) fn off(session: &mut Session) {
    set_levels(session, None);
}

/// In `request_filter`: the module at the route's levels, or none for a route without
/// compression and for gRPC (it compresses its messages itself). Switchyard's own answers
/// after this follow it (pingora's checks: a compressible type over 20 bytes); upstream answers
/// are decided again by [`response`].
pub(super) fn request(session: &mut Session, module: &Module, options: &RouteOptions, grpc: bool) {
    session.downstream_modules_ctx = if options.compression && !grpc {
        module.context(session.req_header(), options.compression_settings.level)
    } else {
        HttpModuleCtx::empty()
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    fn request(accept_encoding: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        if let Some(v) = accept_encoding {
            req.insert_header(http::header::ACCEPT_ENCODING, v)
                .expect("a header");
        }
        req
    }

    /// The Content-Encoding the module puts on a 1000-byte HTML answer.
    fn encoding(ctx: &mut HttpModuleCtx) -> Option<String> {
        let mut resp = ResponseHeader::build(200, None).expect("a response");
        resp.insert_header(http::header::CONTENT_TYPE, "text/html")
            .expect("a header");
        resp.insert_header(http::header::CONTENT_LENGTH, "1000")
            .expect("a header");
        ctx.get_mut::<ResponseCompression>()
            .expect("the module is in the context")
            .response_header_filter(&mut resp, false);
        resp.headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    #[test]
    fn the_module_built_for_a_request_reads_its_accept_encoding_and_the_route_levels() {
        let module = Module::new();
        let on = |gzip, br| Levels { gzip, br, zstd: 0 };
        // The request's Accept-Encoding is read when the context is built.
        let mut ctx = module.context(&request(Some("gzip")), on(5, 5));
        assert_eq!(encoding(&mut ctx).as_deref(), Some("gzip"));
        let mut ctx = module.context(&request(Some("br, gzip")), on(5, 5));
        assert_eq!(encoding(&mut ctx).as_deref(), Some("br"));
        let mut ctx = module.context(&request(None), on(5, 5));
        assert_eq!(encoding(&mut ctx), None);
        // The route's levels, not the module's default: all 0 compresses nothing.
        let mut ctx = module.context(&request(Some("gzip")), on(0, 0));
        assert_eq!(encoding(&mut ctx), None);
        // A context is the request's own: one built before is not changed by the next.
        let mut first = module.context(&request(Some("gzip")), on(5, 5));
        let _second = module.context(&request(None), on(0, 0));
        assert_eq!(encoding(&mut first).as_deref(), Some("gzip"));
    }
}
