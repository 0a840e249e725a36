//! The listener wrappers around the proxy's pingora app: connection caps, open connections and TLS handshakes per listener.
//!
//! pingora calls an app's `process_new` once per client connection (after the TLS handshake on
//! TLS listeners) and its HTTP app returns only when the connection closes (it loops over
//! keep-alive requests and h2 streams itself), so a guard held across the call counts the
//! connection exactly. Over a connection cap, a plain-HTTP client gets a 503 and the connection
//! is closed; a TLS client (possibly speaking h2) is just closed after the handshake.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::{PreTlsCallback, PreTlsProcess};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{
    GetSocketDigest, Shutdown, SocketDigest, Stream, UniqueID, UniqueIDType,
};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::{Tracer, Tracing};
use pingora_proxy::HttpProxy;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tokio::io::AsyncWriteExt;

use crate::config::ListenerConfig;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::runtime::Runtime;

/// The pingora service of [`proxy_service`].
pub type ProxyService = Service<ObservedApp<HttpProxy<Proxy>>>;

/// The HTTP proxy service for every listener, with client connections and TLS handshakes
/// counted per listener.
///
/// Use it in place of `pingora_proxy::http_proxy_service_with_name`: it builds the same app and
/// wraps it in an [`ObservedApp`]; when a listener has TLS it also sets the pre-TLS hook that
/// counts failed handshakes. Add the endpoints afterwards as usual; if another pre-TLS callback
/// is needed, chain it with [`TlsWatch::hook`] (a service has one), or the count stops.
pub fn proxy_service(
    conf: &Arc<ServerConf>,
    metrics: &Metrics,
    proxy: Proxy,
    listeners: &[ListenerConfig],
    runtime: Arc<Runtime>,
    pre_tls: Option<PreTlsCallback>,
    h2_idle_timeout: Duration,
) -> ProxyService {
    let index = Arc::new(listener_index(metrics, listeners));
    let watch = listeners.iter().any(|l| l.tls).then(|| {
        Arc::new(TlsWatch {
            listeners: index.clone(),
            pending: Mutex::new(HashMap::new()),
        })
    });
    let mut http = pingora_proxy::http_proxy(conf, proxy);
    // An idle h2 connection (no stream open) is closed like an idle HTTP/1 keep-alive one.
    let mut options = pingora_core::apps::HttpServerOptions::default();
    // ("0s", keep-alive off for HTTP/1, leaves h2 connections without an idle limit.)
    options.h2_idle_timeout = (!h2_idle_timeout.is_zero()).then_some(h2_idle_timeout);
    // Listeners with `h2c` (never TLS ones) get a service of their own (`server::build_server`).
    let options_h2c = listeners.iter().any(|l| l.h2c);
    options.h2c = options_h2c;
    http.server_options = Some(options);
    let runtime_for_hook = runtime.clone();
    let app = ObservedApp::new(http, index, watch.clone()).with_admission(runtime);
    let name = if options_h2c { "proxy (h2c)" } else { "proxy" };
    let mut svc = Service::new(name.to_string(), app);
    // One callback for every endpoint added afterwards (vendor patch 14): PROXY headers where
    // configured, then on TLS endpoints the handshake watch and what `pre_tls` chains.
    let tls_endpoints = listeners.iter().filter(|l| l.tls).map(|l| l.address);
    let tls = watch.map(|watch| TlsWatch::hook(&watch, pre_tls));
    svc.endpoints()
        .set_pre_tls_callback(super::prehandshake::callback(
            runtime_for_hook,
            tls_endpoints.collect(),
            tls,
        ));
    svc
}

/// Per-listener connection handles, found by a connection's local address.
pub struct ListenerIndex {
    entries: Vec<ListenerHandles>,
    /// For a connection that matches no listener (not expected: every socket has its address).
    unknown: OnceLock<ListenerHandles>,
    downstream_connections: IntGaugeVec,
    downstream_opened: IntCounterVec,
    tls_handshake_errors: IntCounterVec,
    tls_handshaking: IntGaugeVec,
}

struct ListenerHandles {
    address: SocketAddr,
    open: IntGauge,
    opened: IntCounter,
    /// TLS listeners only.
    tls_errors: Option<IntCounter>,
    /// TLS handshakes in progress (TLS listeners only).
    handshaking: Option<IntGauge>,
}

/// Index of `ListenerIndex::unknown` in the places that store an index.
const UNKNOWN_LISTENER: usize = usize::MAX;

impl ListenerIndex {
    /// The listener bound to `local` (a wildcard bind matches any IP), as an index.
    fn find(&self, local: Option<SocketAddr>) -> usize {
        local
            .and_then(|local| {
                self.entries
                    .iter()
                    .position(|l| crate::proxy::bound_to(l.address, local))
            })
            .unwrap_or(UNKNOWN_LISTENER)
    }

    fn get(&self, index: usize) -> &ListenerHandles {
        self.entries.get(index).unwrap_or_else(|| {
            self.unknown.get_or_init(|| ListenerHandles {
                address: SocketAddr::from(([0, 0, 0, 0], 0)),
                open: self.downstream_connections.with_label_values(&[""]),
                opened: self.downstream_opened.with_label_values(&[""]),
                tls_errors: Some(self.tls_handshake_errors.with_label_values(&[""])),
                handshaking: Some(self.tls_handshaking.with_label_values(&[""])),
            })
        })
    }
}

/// The local address pingora recorded for a socket at accept.
fn local_addr(digest: Option<Arc<SocketDigest>>) -> Option<SocketAddr> {
    digest?.local_addr()?.as_inet().copied()
}

/// Pingora's app with client connections counted per listener and admitted by the connection
/// caps.
///
/// pingora calls `process_new` once per connection, after accept or after a completed TLS
/// handshake, and the HTTP app returns only when the connection closes (it loops over
/// keep-alive requests and h2 streams itself), so the gauge is exact for HTTP apps.
///
/// Counting and admission are one wrapper, not two: each wrapper's `process_new` is a boxed
/// future (`async_trait`) that lives as long as the connection, idle keep-alive waits included.
pub struct ObservedApp<A> {
    inner: Arc<A>,
    listeners: Arc<ListenerIndex>,
    tls: Option<Arc<TlsWatch>>,
    /// Connection admission: the caps of the snapshot in force at accept, the counts of the
    /// whole process. None: every connection is admitted.
    admission: Option<Arc<Runtime>>,
}

impl<A> ObservedApp<A> {
    fn new(app: A, listeners: Arc<ListenerIndex>, tls: Option<Arc<TlsWatch>>) -> ObservedApp<A> {
        ObservedApp {
            inner: Arc::new(app),
            listeners,
            tls,
            admission: None,
        }
    }

    /// Admits each connection by `runtime`'s caps (counted first: a refused connection was
    /// still opened, and its TLS handshake completed, so it counts there and never as a
    /// handshake error).
    fn with_admission(mut self, runtime: Arc<Runtime>) -> ObservedApp<A> {
        self.admission = Some(runtime);
        self
    }
}

/// Decrements the gauge when the connection ends, also when its task is cancelled.
struct OpenConnection<'a>(&'a IntGauge);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ObservedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if let Some(watch) = &self.tls {
            watch.completed(session.id());
        }
        let index = self.listeners.find(local_addr(session.get_socket_digest()));
        let listener = self.listeners.get(index);
        listener.opened.inc();
        listener.open.inc();
        let _open = OpenConnection(&listener.open);
        let Some(runtime) = &self.admission else {
            return self.inner.process_new(session, shutdown).await;
        };
        let ip = session
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let caps = runtime.snapshot().caps;
        match runtime.connections.admit(ip, caps) {
            Ok(_guard) => self.inner.process_new(session, shutdown).await,
            Err(reason) => {
                log::debug!("connection from {ip:?} refused: {reason:?}");
                // Boxed: a rare path, kept out of the future every connection holds.
                Box::pin(refuse(session)).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }

    fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout()
    }
}

/// TLS handshakes that started and have not finished yet, by socket.
///
/// The pre-TLS hook runs after accept, before the handshake, on every TLS connection: it notes
/// the socket's fd (and listener) here and attaches a [`Tracer`] that pingora calls when the TCP
/// stream is dropped. A completed handshake reaches [`ObservedApp::process_new`], which takes the
/// fd out; a stream dropped while its fd is still here never completed its handshake: one
/// error. The fd cannot be reused meanwhile, since the tracer runs before the socket is closed.
pub struct TlsWatch {
    listeners: Arc<ListenerIndex>,
    /// fd → listener index.
    pending: Mutex<HashMap<UniqueIDType, usize>>,
}

impl fmt::Debug for TlsWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWatch")
            .field("pending", &self.pending.lock().len())
            .finish_non_exhaustive()
    }
}

impl TlsWatch {
    /// The pre-TLS callback that starts the watch, then runs `inner` (another pre-TLS
    /// callback, e.g. one answering TLS-ALPN-01 challenges) if given.
    pub fn hook(watch: &Arc<TlsWatch>, inner: Option<PreTlsCallback>) -> PreTlsCallback {
        Arc::new(TlsHook {
            watch: watch.clone(),
            inner,
        })
    }

    fn started(self: &Arc<Self>, stream: &mut L4Stream) {
        let fd = stream.id();
        let listener = self.listeners.find(local_addr(stream.get_socket_digest()));
        if let Some(gauge) = &self.listeners.get(listener).handshaking {
            gauge.inc();
        }
        self.pending.lock().insert(fd, listener);
        stream.tracer = Some(Tracer(Box::new(HandshakeTracer {
            fd,
            watch: self.clone(),
        })));
    }

    /// Ends the watch of `fd`; the listener's handles if it was still in progress.
    fn end(&self, fd: UniqueIDType) -> Option<&ListenerHandles> {
        let listener = self.pending.lock().remove(&fd)?;
        let handles = self.listeners.get(listener);
        if let Some(gauge) = &handles.handshaking {
            gauge.dec();
        }
        Some(handles)
    }

    fn completed(&self, fd: UniqueIDType) {
        self.end(fd);
    }

    fn closed(&self, fd: UniqueIDType) {
        if let Some(errors) = self.end(fd).and_then(|l| l.tls_errors.as_ref()) {
            errors.inc();
        }
    }
}

struct TlsHook {
    watch: Arc<TlsWatch>,
    inner: Option<PreTlsCallback>,
}

#[async_trait]
impl PreTlsProcess for TlsHook {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        self.watch.started(stream);
        match &self.inner {
            Some(inner) => {
                let result = inner.process(stream).await;
                if result.is_err() {
                    // The inner hook took the connection over (an ACME TLS-ALPN-01 challenge
                    // answered): not a client handshake that failed.
                    self.watch.completed(stream.id());
                }
                result
            }
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
struct HandshakeTracer {
    fd: UniqueIDType,
    watch: Arc<TlsWatch>,
}

impl fmt::Debug for HandshakeTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeTracer")
            .field("fd", &self.fd)
            .finish()
    }
}

impl Tracing for HandshakeTracer {
    fn on_connected(&self) {}

    fn on_disconnected(&self) {
        self.watch.closed(self.fd);
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

/// Connection handles for each listener, by address.
fn listener_index(metrics: &Metrics, listeners: &[ListenerConfig]) -> ListenerIndex {
    let entries = listeners
        .iter()
        .map(|l| {
            let name: &str = &l.name;
            ListenerHandles {
                address: l.address,
                open: metrics.downstream_connections.with_label_values(&[name]),
                opened: metrics.downstream_opened.with_label_values(&[name]),
                tls_errors: l
                    .tls
                    .then(|| metrics.tls_handshake_errors.with_label_values(&[name])),
                handshaking: l
                    .tls
                    .then(|| metrics.tls_handshaking.with_label_values(&[name])),
            }
        })
        .collect();
    ListenerIndex {
        entries,
        unknown: OnceLock::new(),
        downstream_connections: metrics.downstream_connections.clone(),
        downstream_opened: metrics.downstream_opened.clone(),
        tls_handshake_errors: metrics.tls_handshake_errors.clone(),
        tls_handshaking: metrics.tls_handshaking.clone(),
    }
}

const REFUSED_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 61\r\nconnection: close\r\n\r\n\
{\"error\":\"too many connections\",\"status\":503,\"request_id\":\"\"}";

/// Closes a connection over a cap: a plain-HTTP client gets a 503 first; a TLS one (possibly
/// speaking h2) is just closed.
async fn refuse(mut stream: Stream) {
    if stream.get_ssl_digest().is_none() {
        let _ = stream.write_all(REFUSED_503).await;
        let _ = stream.flush().await;
    }
    Shutdown::shutdown(stream.as_mut()).await;
}

#[cfg(test)]
mod tests {
    use pingora_core::listeners::tls::TlsSettings;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::metrics::testing::{text, value};

    /// Reads 4 bytes, answers "pong", and reports the open-connection gauge it saw meanwhile.
    struct Pong {
        open: IntGauge,
        seen: Arc<Mutex<Option<i64>>>,
    }

    #[async_trait]
    impl ServerApp for Pong {
        async fn process_new(
            self: &Arc<Self>,
            mut session: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            let mut ping = [0u8; 4];
            session.read_exact(&mut ping).await.ok()?;
            *self.seen.lock() = Some(self.open.get());
            session.write_all(b"pong").await.ok()?;
            session.flush().await.ok()?;
            None
        }
    }

    fn tls_client() -> pingora_rustls::TlsConnector {
        let mut roots = pingora_rustls::RootCertStore::empty();
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/test-ca.crt");
        pingora_rustls::load_ca_file_into_store(ca, &mut roots).expect("test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        pingora_rustls::TlsConnector::from(Arc::new(config))
    }

    fn listener(name: &str, address: SocketAddr, tls: bool) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address,
            tls,
            h2: false,
            h2c: false,
            redirect_https: false,
            https_port: 443,
            redirect_code: 308,
            proxy_protocol: false,
        }
    }

    /// An accepted socket as pingora's listener hands it over: with its socket digest.
    async fn accept(listener: &tokio::net::TcpListener) -> L4Stream {
        use std::os::fd::AsRawFd;
        let (tcp, _) = listener.accept().await.expect("accept");
        let fd = tcp.as_raw_fd();
        let mut l4 = L4Stream::from(tcp);
        l4.set_socket_digest(SocketDigest::from_raw_fd(fd));
        l4
    }

    #[tokio::test]
    async fn tls_hooks_count_failed_handshakes_and_open_connections() {
        let metrics = Metrics::new();
        let tls_socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let plain_socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tls_addr = tls_socket.local_addr().expect("local addr");
        let plain_addr = plain_socket.local_addr().expect("local addr");
        // The plain listener binds the wildcard address, as `0.0.0.0:80` would.
        let wildcard = SocketAddr::from(([0, 0, 0, 0], plain_addr.port()));
        let index = Arc::new(listener_index(
            &metrics,
            &[
                listener("http", wildcard, false),
                listener("https", tls_addr, true),
            ],
        ));
        let watch = Arc::new(TlsWatch {
            listeners: index.clone(),
            pending: Mutex::new(HashMap::new()),
        });
        let hook = TlsWatch::hook(&watch, None);
        let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/certs");
        let acceptor = TlsSettings::intermediate(
            &format!("{certs}/localhost.crt"),
            &format!("{certs}/localhost.key"),
        )
        .expect("TLS settings")
        .build();
        let errors = |name: &str| {
            let text = text(&metrics);
            value(
                &text,
                "switchyard_tls_handshake_errors_total",
                &[("listener", name)],
            )
        };
        let in_progress = || {
            let text = text(&metrics);
            value(
                &text,
                "switchyard_tls_handshakes_in_progress",
                &[("listener", "https")],
            )
        };
        assert_eq!(in_progress(), Some(0.0));

        // Plain HTTP sent to a TLS listener: the handshake fails.
        let plain = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(tls_addr)
                .await
                .expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let mut l4 = accept(&tls_socket).await;
        hook.process(&mut l4).await.expect("hook");
        assert_eq!(in_progress(), Some(1.0));
        assert!(acceptor.tls_handshake(l4).await.is_err());
        assert_eq!(errors("https"), Some(1.0));
        assert_eq!(errors("http"), None, "no such series on a plain listener");
        assert_eq!(in_progress(), Some(0.0));
        plain.await.expect("plain client");

        // A client that connects and goes away before its ClientHello counts too.
        let gone = tokio::net::TcpStream::connect(tls_addr)
            .await
            .expect("connect");
        let mut l4 = accept(&tls_socket).await;
        drop(gone);
        hook.process(&mut l4).await.expect("hook");
        assert!(acceptor.tls_handshake(l4).await.is_err());
        assert_eq!(errors("https"), Some(2.0));

        // A completed handshake is not an error, and its connection is counted while open.
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(tls_addr)
                .await
                .expect("connect");
            let name = pingora_rustls::ServerName::try_from("localhost").expect("name");
            let mut tls = tls_client().connect(name, tcp).await.expect("handshake");
            tls.write_all(b"ping").await.expect("write");
            let mut pong = [0u8; 4];
            tls.read_exact(&mut pong).await.expect("read");
            pong
        });
        let mut l4 = accept(&tls_socket).await;
        hook.process(&mut l4).await.expect("hook");
        let tls = acceptor.tls_handshake(l4).await.expect("handshake");
        let open = |name: &str| metrics.downstream_connections.with_label_values(&[name]);
        let seen = Arc::new(Mutex::new(None));
        let app = Arc::new(ObservedApp::new(
            Pong {
                open: open("https"),
                seen: seen.clone(),
            },
            index.clone(),
            Some(watch.clone()),
        ));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        assert!(app.process_new(Box::new(tls), &shutdown).await.is_none());
        assert_eq!(&client.await.expect("client"), b"pong");
        assert_eq!(*seen.lock(), Some(1), "counted while open");
        assert_eq!(open("https").get(), 0, "not after close");
        let opened = |name: &str| metrics.downstream_opened.with_label_values(&[name]).get();
        assert_eq!(opened("https"), 1);
        assert_eq!(
            errors("https"),
            Some(2.0),
            "a completed handshake is no error"
        );
        assert!(watch.pending.lock().is_empty());

        // A plain connection on the wildcard-bound listener is counted there.
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(plain_addr)
                .await
                .expect("connect");
            s.write_all(b"ping").await.expect("write");
            let mut pong = [0u8; 4];
            s.read_exact(&mut pong).await.expect("read");
            pong
        });
        let l4 = accept(&plain_socket).await;
        let seen = Arc::new(Mutex::new(None));
        let app = Arc::new(ObservedApp::new(
            Pong {
                open: open("http"),
                seen: seen.clone(),
            },
            index,
            Some(watch.clone()),
        ));
        assert!(app.process_new(Box::new(l4), &shutdown).await.is_none());
        assert_eq!(&client.await.expect("client"), b"pong");
        assert_eq!(*seen.lock(), Some(1));
        assert_eq!((opened("http"), open("http").get()), (1, 0));
        assert_eq!((opened("https"), errors("https")), (1, Some(2.0)));
    }

    #[test]
    fn the_refusal_body_length_is_right() {
        let text = std::str::from_utf8(REFUSED_503).expect("ascii");
        let (_, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert_eq!(body.len(), 61);
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["status"], 503);
    }
}
