//! `pingora-floor`: the least a pingora reverse proxy can do, as the floor of
//! `benches/vs-nginx.sh`. `ProxyHttp::upstream_peer` returns one fixed `HttpPeer` (the backend,
//! plain HTTP/1.1) and nothing else runs per request but `response_filter`, which adds the four
//! response headers the other proxies of the benchmark add, so that every answer has the same size.
//! No routing, no forwarded headers, no access log, no metrics, no limits.

use std::net::SocketAddr;

use clap::Parser;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// jemalloc, as the switchyard binary uses (src/main.rs).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The four security headers of Switchyard's reference config (and of the benchmark's nginx and
/// HAProxy configs).
const RESPONSE_HEADERS: [(&str, &str); 4] = [
    (
        "Strict-Transport-Security",
        "max-age=63072000; includeSubDomains",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
];

#[derive(Parser, Debug)]
#[command(
    name = "pingora-floor",
    about = "A bare pingora reverse proxy to one fixed upstream"
)]
struct Args {
    /// Plain HTTP listen address.
    #[arg(long)]
    listen: Option<String>,
    /// TLS listen address (HTTP/1.1 and h2 by ALPN); needs --cert and --key.
    #[arg(long)]
    tls_listen: Option<String>,
    /// Certificate chain (PEM) for --tls-listen.
    #[arg(long)]
    cert: Option<String>,
    /// Private key (PEM) for --tls-listen.
    #[arg(long)]
    key: Option<String>,
    /// The one upstream (plain HTTP/1.1), host:port.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads (pingora `ServerConf::threads`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// One current-thread runtime per worker (`ServerConf::work_stealing = false`).
    #[arg(long)]
    no_work_stealing: bool,
}

struct Floor {
    peer: SocketAddr,
}

// Published pingora 0.9.1 declares the hooks through `async_trait`; the patched one returns the
// hooks' own futures (vendor/PATCHES.md, patch 49). The unpatched floor is built with the feature.
#[cfg_attr(feature = "published-pingora", async_trait::async_trait)]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.peer, false, String::new())))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        for (name, value) in RESPONSE_HEADERS {
            upstream_response.insert_header(name, value)?;
        }
        Ok(())
    }
}

fn main() {
    let args = Args::parse();
    if args.listen.is_none() && args.tls_listen.is_none() {
        eprintln!("pingora-floor: give --listen and/or --tls-listen");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: args.threads,
        work_stealing: !args.no_work_stealing,
        // A quick stop on SIGTERM: the benchmark stops it between runs of nothing.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Floor {
            peer: args.upstream,
        },
    );
    if let Some(addr) = &args.listen {
        proxy.add_tcp(addr);
    }
    if let Some(addr) = &args.tls_listen {
        let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
            eprintln!("pingora-floor: --tls-listen needs --cert and --key");
            std::process::exit(2);
        };
        let mut tls = match TlsSettings::intermediate(cert, key) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("pingora-floor: TLS settings: {e}");
                std::process::exit(1);
            }
        };
        tls.enable_h2();
        proxy.add_tls_with_settings(addr, None, tls);
    }
    server.add_service(proxy);
    server.run_forever();
}
