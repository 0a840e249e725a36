//! Assembles the pingora server: one proxy service for every listener, TLS by SNI, background services, signals, drain timeouts.

pub mod background;
pub mod listeners;
pub mod ocsp;
mod prehandshake;
pub mod proxy_protocol;
pub mod startup;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::access_log::AccessLog;
use crate::config::{self, Config, ConfigErrors};
use crate::health::HealthChecker;
use crate::proxy::{ListenerInfo, Proxy};
use crate::runtime::Runtime;
use crate::state::{StateError, StateStore};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Start(#[from] crate::runtime::StartError),
    #[error("cannot install the signal handlers: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Bind(#[from] startup::BindError),
    #[error("cannot write the pid file {}: {error}", .path.display())]
    PidFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("cannot set up listener \"{name}\": {reason}")]
    Listener { name: String, reason: String },
}

/// How `serve` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Take the listening sockets over from a running instance (zero-downtime upgrade).
    pub upgrade: bool,
}

/// Loads the config and runs until SIGTERM (drain), SIGQUIT (upgrade hand-off) or SIGINT (fast stop).
pub fn serve(config_path: &Path, options: &ServeOptions) -> Result<(), ServeError> {
    let config = config::load(config_path)?;
    crate::logging::set_format(config.server.log_format);
    let addresses = startup::listen_addresses(&config);
    // On an upgrade the old process holds the addresses and hands them over.
    if !options.upgrade {
        startup::probe_binds(&addresses)?;
    }
    let pid_file = config.server.pid_file.clone().map(std::path::PathBuf::from);
    let runtime = build_runtime(config, config_path)?;
    let server = build_server(&runtime, options)?;
    install_signal_handlers(runtime.clone())?;
    // pingora writes `pid_file` only when it daemonizes, which Switchyard never does. An
    // upgraded process writes its own id over the old one's.
    if let Some(path) = &pid_file {
        startup::write_pid_file(path).map_err(|error| ServeError::PidFile {
            path: path.clone(),
            error,
        })?;
    }
    startup::notify_when_accepting(addresses, options.upgrade, Duration::from_secs(60));
    log::info!(
        "switchyard {} serving {} (generation 1)",
        env!("CARGO_PKG_VERSION"),
        runtime.snapshot().config.summary()
    );
    // pingora's signals: SIGTERM stop, SIGQUIT upgrade, SIGINT fast stop. `DrainWatch` ends a
    // graceful stop early once nothing is left in flight.
    server.run(RunArgs::default());
    runtime.access_log.flush(Duration::from_secs(2));
    if let Some(path) = &pid_file {
        startup::remove_pid_file(path);
    }
    Ok(())
}

/// Starts the drain when pingora broadcasts its shutdown, that is after the listeners stopped
/// accepting (and, for an upgrade, after the sockets were handed over).
struct DrainWatch {
    runtime: Arc<Runtime>,
}

#[async_trait::async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let timeout = self.runtime.snapshot().config.server.drain_timeout;
        let _ = startup::sd_notify("STOPPING=1");
        log::info!(
            "draining: listeners closed, {} connection(s) and {} request(s) get up to {timeout:?}",
            self.runtime.connections.open(),
            self.runtime.in_flight()
        );
        exit_when_drained(self.runtime.clone(), timeout);
    }
}

/// Exits the process as soon as no connection or request is left (or leaves it to pingora at the
/// timeout).
fn exit_when_drained(runtime: Arc<Runtime>, timeout: Duration) {
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            let deadline = Instant::now() + timeout;
            // Idle keep-alive connections are closed by pingora at shutdown; a connection that
            // is open has a request in flight or one on its way. Zero twice in a row covers a
            // connection accepted just before the listeners closed.
            let mut idle_checks = 0;
            while Instant::now() < deadline {
                let idle = runtime.in_flight() == 0 && runtime.connections.open() == 0;
                idle_checks = if idle { idle_checks + 1 } else { 0 };
                if idle_checks >= 3 {
                    log::info!("drained: no connection or request left, exiting");
                    runtime.access_log.flush(Duration::from_secs(2));
                    if let Some(path) = &runtime.snapshot().config.server.pid_file {
                        startup::remove_pid_file(std::path::Path::new(path));
                    }
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the drain ({e}); waiting the full drain_timeout");
    }
}

pub fn build_runtime(config: Config, config_path: &Path) -> Result<Arc<Runtime>, ServeError> {
    let fallback = tls::self_signed(&["switchyard.invalid"])?;
    let access_log = AccessLog::open(&config.server.access_log).map_err(ServeError::AccessLog)?;
    // Runtime state only changes through the admin API, so it is kept only when that is on.
    let store = match &config.admin {
        Some(_) => Some(StateStore::open(&config.server.state_dir)?),
        None => None,
    };
    // Server names resolve before the listeners accept, so the first requests have addresses;
    // a name that does not resolve is a warning, and the resolver service retries it.
    let (addresses, warnings) = crate::dns::resolve_blocking(&config);
    for w in &warnings {
        log::warn!("{w}");
    }
    let runtime = Runtime::new(
        config,
        config_path.to_path_buf(),
        fallback,
        access_log,
        store,
    )?;
    runtime.update_addresses(|table| {
        let changed = *table != addresses;
        *table = addresses;
        changed
    });
    Ok(runtime)
}

/// A pingora server with one proxy service per configured listener.
pub fn build_server(runtime: &Arc<Runtime>, options: &ServeOptions) -> Result<Server, ServeError> {
    let snap = runtime.snapshot();
    let cfg = &snap.config;
    // ACME challenges and statuses: the proxy answers HTTP-01, the ALPN hook TLS-ALPN-01, the
    // admin API shows statuses and takes renewal requests, the manager orders.
    let acme = crate::acme::AcmeState::new(runtime.metrics.registry());
    let mut conf = ServerConf {
        threads: cfg.server.threads,
        work_stealing: cfg.server.work_stealing,
        // One listening socket per worker thread (ignored with work stealing or one thread).
        accept_per_thread: cfg.server.reuseport,
        // pingora sleeps the whole grace period; `exit_when_drained` ends the process earlier once
        // no request is in flight, so the grace period is only the upper bound.
        grace_period_seconds: Some(cfg.server.drain_timeout.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: cfg.server.upgrade_socket.clone(),
        // Room in pingora's one upstream pool for every service's `keepalive` cap.
        upstream_keepalive_pool_size: crate::keepalive::global_pool_size(
            &cfg.services,
            cfg.server.threads,
        ),
        ..ServerConf::default()
    };
    if let Some(pid) = &cfg.server.pid_file {
        conf.pid_file = pid.clone();
    }
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // One service for every listener: one pool of `threads` workers, like nginx's workers.
    let listeners: Vec<ListenerInfo> = cfg
        .listeners
        .iter()
        .map(|l| ListenerInfo {
            name: l.name.as_str().into(),
            address: l.address,
            tls: l.tls,
        })
        .collect();
    // On TLS listeners, before the handshake: plain HTTP is answered 400, then ACME
    // TLS-ALPN-01 handshakes are answered.
    let pre_tls = crate::proxy::plain::guard(
        runtime.clone(),
        listeners.clone(),
        Some(crate::acme::alpn::responder(acme.clone())),
    );
    // pingora turns h2c (prior knowledge) on per service: listeners with `h2c = true` get a
    // service of their own, over the same runtime and snapshots.
    let (h2c, rest): (Vec<_>, Vec<_>) = cfg.listeners.iter().cloned().partition(|l| l.h2c);
    let mut pre_tls = Some(pre_tls);
    for group in [rest, h2c].iter().filter(|g| !g.is_empty()) {
        let proxy = Proxy::new(runtime.clone(), listeners.clone(), acme.clone());
        let mut svc = listeners::proxy_service(
            &server.configuration,
            &runtime.metrics,
            proxy,
            group,
            runtime.clone(),
            // TLS listeners are never h2c: the first group has them all.
            pre_tls.take(),
            // Read at start: a reload does not change it for h2 (it does for HTTP/1).
            cfg.defaults.keepalive_timeout,
        );
        add_endpoints(&mut svc, group, runtime)?;
        server.add_service(svc);
    }
    server.add_service(background_service(
        "health checks",
        HealthChecker::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "dns",
        crate::dns::NameResolver::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "drain watch",
        DrainWatch {
            runtime: runtime.clone(),
        },
    ));
    // Loads the stored ACME certificates now, before any listener accepts.
    server.add_service(background_service(
        "acme",
        crate::acme::AcmeManager::new(runtime.clone(), acme.clone()),
    ));
    server.add_service(background_service(
        "ocsp stapling",
        ocsp::OcspService::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "rate-limit upkeep",
        background::Upkeep::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "otlp export",
        background::SpanExport::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "rollouts",
        background::RolloutService::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "traffic history",
        background::TrafficSampler::new(runtime.clone()),
    ));
    if let Some(redis) = runtime.cluster.redis() {
        server.add_service(background_service(
            "redis",
            background::RedisProbe::new(redis.clone()),
        ));
    }
    if let Some(cluster) = &cfg.cluster {
        server.add_service(background_service(
            "cluster",
            crate::cluster::ClusterService::new(runtime.clone(), cluster.clone()),
        ));
    }
    if let Some(admin) = &cfg.admin {
        server.add_service(crate::admin::service(runtime.clone(), acme, admin));
    }
    Ok(server)
}

/// Adds a listening endpoint to `svc` for each listener of `group`, with TLS where it has it.
fn add_endpoints(
    svc: &mut listeners::ProxyService,
    group: &[config::ListenerConfig],
    runtime: &Runtime,
) -> Result<(), ServeError> {
    for l in group {
        let addr = l.address.to_string();
        if l.tls {
            // The listener's rustls config (certificates by SNI, ALPN, `[tls]`) comes from its
            // cell, which a reload swaps (vendor patch 17).
            let cell = runtime
                .tls
                .cell(&l.name)
                .ok_or_else(|| ServeError::Listener {
                    name: l.name.clone(),
                    reason: "no TLS config was built for it".into(),
                })?;
            let settings = TlsSettings::from_config_cell(cell);
            svc.add_listener(
                ListenerConfig::tcp(addr)
                    .tls(settings)
                    .l4_buffer(l4_buffer()),
            );
        } else {
            svc.add_listener(ListenerConfig::tcp(addr).l4_buffer(l4_buffer()));
        }
    }
    Ok(())
}

/// Client sockets read straight into the request parser's buffers (pingora's default puts a
/// 64 KB read buffer in front of every connection, idle ones included); writes keep a small
/// buffer so a response head and a short body go out in one send.
fn l4_buffer() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

/// The signals nginx users send, handled on a thread of their own: SIGHUP re-reads the config
/// (a rejected config leaves the old one serving), SIGUSR1 reopens the access log file (after
/// logrotate renamed it), SIGUSR2 (nginx's binary upgrade) is logged and ignored: here that is
/// SIGQUIT and `serve --upgrade`. SIGTERM, SIGQUIT and SIGINT are pingora's (drain, hand-off,
/// fast stop).
///
/// The handlers are installed before any listener accepts, so an early signal never kills the process.
pub fn install_signal_handlers(runtime: Arc<Runtime>) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGHUP, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGUSR1, SIGUSR2])
        .map_err(ServeError::Signal)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload_and_log(&runtime),
                    SIGUSR1 => match runtime.access_log.reopen() {
                        Ok(()) => log::info!("SIGUSR1: access log reopened"),
                        Err(e) => log::error!(
                            "SIGUSR1: cannot reopen the access log ({e}); still writing to the old file"
                        ),
                    },
                    _ => log::warn!(
                        "SIGUSR2 ignored: a binary upgrade is SIGQUIT to this process and `serve --upgrade` for the new one"
                    ),
                }
            }
        })
        .map_err(ServeError::Signal)?;
    Ok(())
}

pub fn reload_and_log(runtime: &Runtime) {
    // Logged (and counted) by the runtime; a rejected config leaves the old one serving.
    let _ = runtime.reload("");
}
