//! The pingora peer of one upstream server: its address and timeouts, and its pool's transport (TLS with the rustls config built at load, h2 or h2c).

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Protocol, RouteOptions, Transport};
use crate::upstream::Server;

/// How many requests may share one HTTP/2 connection to a server.
const H2_STREAMS: usize = 100;

/// The peer for a request to `server` of a pool reached by `transport`, with the route's
/// timeouts (the caller adds the service's keep-alive settings).
pub(super) fn build(server: &Server, transport: &Transport, o: &RouteOptions) -> Box<HttpPeer> {
    // Built in its box (allocated first), not on the stack and copied there.
    let mut peer = Box::write(
        Box::new_uninit(),
        match &transport.tls {
            Some(tls) => {
                let sni = tls.sni.as_deref().unwrap_or(&server.host).to_string();
                let mut peer = HttpPeer::new(server.addr, true, sni);
                peer.options.rustls_config = Some(tls.config.clone());
                peer
            }
            None => HttpPeer::new(server.addr, false, String::new()),
        },
    );
    if transport.protocol != Protocol::H1 {
        // h2 over TLS is offered by ALPN (the rustls config says "h2"); on plain TCP, h2 with
        // prior knowledge.
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = H2_STREAMS;
    }
    peer.options.connection_timeout = Some(o.connect_timeout);
    peer.options.read_timeout = Some(o.read_timeout);
    peer.options.write_timeout = Some(o.send_timeout);
    peer
}
