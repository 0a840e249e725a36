// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The listening service
//!
//! A [Service] (listening service) responds to incoming requests on its endpoints.
//! Each [Service] can be configured with custom application logic (e.g. an `HTTPProxy`) and one or
//! more endpoints to listen to.

use crate::apps::ServerApp;
use crate::listeners::tls::TlsSettings;
#[cfg(feature = "connection_filter")]
use crate::listeners::AcceptAllFilter;
use crate::listeners::{
    ConnectionFilter, ListenerConfig, Listeners, ServerAddress, TcpSocketOptions, TransportStack,
    UninitializedStream,
};
use crate::protocols::Stream;
#[cfg(unix)]
use crate::server::ListenFds;
use crate::server::{RuntimeOpts, ShutdownWatch};
use crate::services::Service as ServiceTrait;

use async_trait::async_trait;
use log::{debug, error, info};
use pingora_error::Result;
use pingora_runtime::current_handle;
use pingora_timeout::timeout;
use std::fs::Permissions;
use std::sync::Arc;

/// Override the runtime options used to run a listening service.
pub type RuntimeOptsOverride = Arc<dyn Fn(&RuntimeOpts) -> Option<RuntimeOpts> + Send + Sync>;

/// The type of service that is associated with a list of listening endpoints and a particular application
pub struct Service<A> {
    name: String,
    listeners: Listeners,
    app_logic: Option<A>,
    /// The number of preferred threads. `None` to follow global setting.
    pub threads: Option<usize>,
    runtime_opts_override: Option<RuntimeOptsOverride>,
    #[cfg(feature = "connection_filter")]
    connection_filter: Arc<dyn ConnectionFilter>,
}

impl<A> Service<A> {
    /// Create a new [`Service`] with the given application (see [`crate::apps`]).
    pub fn new(name: String, app_logic: A) -> Self {
        Service {
            name,
            listeners: Listeners::new(),
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
        }
    }

    /// Create a new [`Service`] with the given application (see [`crate::apps`]) and the given
    /// [`Listeners`].
    pub fn with_listeners(name: String, listeners: Listeners, app_logic: A) -> Self {
        Service {
            name,
            listeners,
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
        }
    }

    /// Set a runtime options override for this service.
    ///
    /// Returning [`None`] from the override uses the global runtime options.
    pub fn set_runtime_opts_override(&mut self, override_fn: RuntimeOptsOverride) {
        self.runtime_opts_override = Some(override_fn);
    }

    /// Set a custom connection filter for this service.
    ///
    /// The connection filter will be applied to all incoming connections
    /// on all endpoints of this service. Connections that don't pass the
    /// filter will be dropped immediately at the TCP level, before TLS
    /// handshake or any HTTP processing.
    ///
    /// # Feature Flag
    ///
    /// This method requires the `connection_filter` feature to be enabled.
    /// When the feature is disabled, this method is a no-op.
    ///
    /// # Example
    ///
    /// ```rust,no_run
    /// # use std::sync::Arc;
    /// # use pingora_core::listeners::{ConnectionFilter, AcceptAllFilter};
    /// # struct MyService;
    /// # impl MyService {
    /// #   fn new() -> Self { MyService }
    /// # }
    /// let mut service = MyService::new();
    /// let filter = Arc::new(AcceptAllFilter);
    /// service.set_connection_filter(filter);
    /// ```
    #[cfg(feature = "connection_filter")]
    pub fn set_connection_filter(&mut self, filter: Arc<dyn ConnectionFilter>) {
        self.connection_filter = filter.clone();
        self.listeners.set_connection_filter(filter);
    }

    #[cfg(not(feature = "connection_filter"))]
    pub fn set_connection_filter(&mut self, _filter: Arc<dyn ConnectionFilter>) {}

    /// Get the [`Listeners`], mostly to add more endpoints.
    pub fn endpoints(&mut self) -> &mut Listeners {
        &mut self.listeners
    }

    // the follow add* function has no effect if the server is already started

    /// Add a TCP listening endpoint with the given address (e.g., `127.0.0.1:8000`).
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Add a listening endpoint configured by a [`ListenerConfig`].
    pub fn add_listener(&mut self, endpoint: ListenerConfig) {
        self.listeners.add_listener(endpoint);
    }

    /// Add a TCP listening endpoint with the given [`TcpSocketOptions`].
    pub fn add_tcp_with_settings(&mut self, addr: &str, sock_opt: TcpSocketOptions) {
        self.listeners.add_tcp_with_settings(addr, sock_opt);
    }

    /// Add a Unix domain socket listening endpoint with the given path.
    ///
    /// Optionally take a permission of the socket file. The default is read and write access for
    /// everyone (0o666).
    #[cfg(unix)]
    pub fn add_uds(&mut self, addr: &str, perm: Option<Permissions>) {
        self.listeners.add_uds(addr, perm);
    }

    /// Add a TLS listening endpoint with the given certificate and key paths.
    pub fn add_tls(&mut self, addr: &str, cert_path: &str, key_path: &str) -> Result<()> {
        self.listeners.add_tls(addr, cert_path, key_path)
    }

    /// Add a TLS listening endpoint with the given [`TlsSettings`] and [`TcpSocketOptions`].
    pub fn add_tls_with_settings(
        &mut self,
        addr: &str,
        sock_opt: Option<TcpSocketOptions>,
        settings: TlsSettings,
    ) {
        self.listeners
            .add_tls_with_settings(addr, sock_opt, settings)
    }

    /// Add an endpoint according to the given [`ServerAddress`]
    pub fn add_address(&mut self, addr: ServerAddress) {
        self.listeners.add_address(addr);
    }

    /// Get a reference to the application inside this service
    pub fn app_logic(&self) -> Option<&A> {
        self.app_logic.as_ref()
    }

    /// Get a mutable reference to the application inside this service
    pub fn app_logic_mut(&mut self) -> Option<&mut A> {
        self.app_logic.as_mut()
    }
}

impl<A: ServerApp + Send + Sync + 'static> Service<A> {
    /// One accepted connection, from its handshake to its close: the connection's task.
    ///
    /// `io` comes boxed, and leaves its box in a block with no wait in it: an argument's or a
    /// local's room in an async function's state lasts to the end of its scope, moved out or
    /// not, and this future lives as long as the connection, idle keep-alive waits included.
    /// Captured by value, the accepted stream (448 bytes) stayed in every connection's task.
    async fn serve_connection(
        mut io: Box<UninitializedStream>,
        app: Arc<A>,
        shutdown: ShutdownWatch,
        accepted_on: std::thread::ThreadId,
    ) {
        // Under single-threaded runtimes, a connection served on another thread than the one
        // that accepted it moves to its own thread's I/O driver.
        if std::thread::current().id() != accepted_on
            && tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            io.rebind_to_current_runtime();
        }
        let peer_addr = io.peer_addr();
        let handshake_timeout = app.handshake_timeout();
        // Boxed: a TLS handshake's future is large and done early; inline, it would size this
        // task (which lives as long as the connection).
        let handshake = {
            let io: Box<UninitializedStream> = io;
            let io = *io;
            Box::pin(io.handshake())
        };
        match timeout(handshake_timeout, handshake).await {
            Ok(handshake) => {
                match handshake {
                    Ok(io) => Self::handle_event(io, app, shutdown).await,
                    Err(e) => {
                        // A failed handshake is the client's doing (a scanner, an old client,
                        // a reset): debug, not error. Apps count them through a pre-TLS
                        // callback's tracer.
                        if let Some(addr) = peer_addr {
                            debug!("Downstream handshake error from {}: {e}", addr);
                        } else {
                            debug!("Downstream handshake error: {e}");
                        }
                    }
                }
            }
            Err(_) => {
                debug!("Downstream handshake timeout");
            }
        }
    }

    pub async fn handle_event(event: Stream, app_logic: Arc<A>, shutdown: ShutdownWatch) {
        debug!("new event!");
        let mut reuse_event = app_logic.process_new(event, &shutdown).await;
        while let Some(event) = reuse_event {
            // TODO: with no steal runtime, consider spawn() the next event on
            // another thread for more evenly load balancing
            debug!("new reusable event!");
            reuse_event = app_logic.process_new(event, &shutdown).await;
        }
    }

    /// Accept on `stack` until shutdown. With `local`, each connection is served on this
    /// thread (the accept loop of one of a group's sockets, patch 25); otherwise on a random
    /// thread of the service's runtime.
    async fn run_endpoint(
        app_logic: Arc<A>,
        mut stack: TransportStack,
        mut shutdown: ShutdownWatch,
        local: bool,
    ) {
        // the accept loop, until the system is shutting down
        loop {
            let new_io = tokio::select! { // TODO: consider biased for perf reason?
                new_io = stack.accept() => new_io,
                shutdown_signal = shutdown.changed() => {
                    match shutdown_signal {
                        Ok(()) => {
                            if !*shutdown.borrow() {
                                // happen in the initial read
                                continue;
                            }
                            info!("Shutting down {}", stack.as_str());
                            break;
                        }
                        Err(e) => {
                            error!("shutdown_signal error {e}");
                            break;
                        }
                    }
                }
            };
            match new_io {
                Ok(io) => {
                    let app = app_logic.clone();
                    let shutdown = shutdown.clone();
                    let accepted_on = std::thread::current().id();
                    let serve = Self::serve_connection(Box::new(io), app, shutdown, accepted_on);
                    if local {
                        tokio::spawn(serve);
                    } else {
                        current_handle().spawn(serve);
                    }
                }
                Err(e) => {
                    error!("Accept() failed {e}");
                    if let Some(io_error) = e
                        .root_cause()
                        .downcast_ref::<std::io::Error>()
                        .and_then(|e| e.raw_os_error())
                    {
                        // 24: too many open files. In this case accept() will continue return this
                        // error without blocking, which could use up all the resources
                        if io_error == 24 {
                            // call sleep to calm the thread down and wait for others to release
                            // some resources
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }

        stack.cleanup();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for Service<A> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let runtime = current_handle();
        // With one socket per thread (patch 25), each accept loop runs on its own thread.
        let workers = crate::server::accept_workers();
        let groups = self
            .listeners
            .build_groups(
                #[cfg(unix)]
                fds,
                workers.as_ref().map_or(1, |w| w.len()),
            )
            .await
            .expect("Failed to build listeners");

        let app_logic = self
            .app_logic
            .take()
            .expect("can only start_service() once");
        let app_logic = Arc::new(app_logic);

        let mut handlers = Vec::new();

        for group in groups {
            let per_thread = workers.as_ref().filter(|_| group.len() > 1);
            for (index, endpoint) in group.into_iter().enumerate() {
                if let Some(workers) = per_thread {
                    let shutdown = shutdown.clone();
                    let my_app_logic = app_logic.clone();
                    let jh = workers[index % workers.len()].spawn(async move {
                        match endpoint.rebind_to_current_runtime() {
                            Ok(endpoint) => {
                                Self::run_endpoint(my_app_logic, endpoint, shutdown, true).await
                            }
                            Err(e) => error!("Cannot accept on a listening socket: {e}"),
                        }
                    });
                    handlers.push(jh);
                    continue;
                }
                for _ in 0..listeners_per_fd {
                    let shutdown = shutdown.clone();
                    let my_app_logic = app_logic.clone();
                    let endpoint = endpoint.clone();

                    let jh = runtime.spawn(async move {
                        Self::run_endpoint(my_app_logic, endpoint, shutdown, false).await;
                    });

                    handlers.push(jh);
                }
            }
        }

        futures::future::join_all(handlers).await;
        self.listeners.cleanup();
        app_logic.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.runtime_opts_override
            .as_ref()
            .and_then(|override_fn| override_fn(global))
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.listeners.addresses())
    }
}

#[cfg(all(test, unix))]
mod accept_per_thread_tests {
    use super::*;
    use crate::server::{accepting_on, Fds};
    use std::io::Read;
    use std::os::fd::BorrowedFd;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;

    /// Answers one byte and records the thread each connection is served on.
    struct WhoServes {
        threads: Arc<parking_lot::Mutex<Vec<ThreadId>>>,
    }

    #[async_trait]
    impl ServerApp for WhoServes {
        async fn process_new(
            self: &Arc<Self>,
            mut session: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            self.threads.lock().push(std::thread::current().id());
            let _ = session.write_all(b"x").await;
            let _ = session.flush().await;
            None
        }
    }

    /// One two-thread no-steal runtime for these tests, kept for the process's life: a
    /// runtime's threads that exit leave their thread-local pool handles to the next threads
    /// given the same thread-local slot (pingora-runtime's `current_handle` would then spawn on
    /// a runtime that is gone), so the tests share one instead of each starting and ending one.
    static WORKERS: std::sync::LazyLock<(Arc<[tokio::runtime::Handle]>, Vec<ThreadId>)> =
        std::sync::LazyLock::new(|| {
            let runtime: &'static pingora_runtime::Runtime = Box::leak(Box::new(
                pingora_runtime::Runtime::new_no_steal(2, "accept-per-thread"),
            ));
            let pingora_runtime::Runtime::NoSteal(pool) = runtime else {
                unreachable!("a no-steal runtime")
            };
            let workers: Arc<[tokio::runtime::Handle]> =
                (0..2).map(|i| pool.get_runtime_at(i).clone()).collect();
            let threads = workers
                .iter()
                .map(|handle| {
                    let (tx, rx) = std::sync::mpsc::channel();
                    handle.spawn(async move { tx.send(std::thread::current().id()).unwrap() });
                    rx.recv().unwrap()
                })
                .collect();
            (workers, threads)
        });

    /// Serve on the two-thread runtime, with or without accepting on each thread; make 40
    /// connections. Returns the fd table's keys, the threads that served and the workers.
    fn serve_40_connections(
        per_thread: bool,
        close_first_socket: bool,
    ) -> (Vec<String>, Vec<ThreadId>, Vec<ThreadId>) {
        let (workers, worker_threads) = (WORKERS.0.clone(), WORKERS.1.clone());

        let threads = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut service = Service::new(
            "accept test".into(),
            WhoServes {
                threads: threads.clone(),
            },
        );
        service.add_tcp("127.0.0.1:0");
        let fds: ListenFds = Arc::new(parking_lot::Mutex::new(Fds::new()));
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let group = per_thread.then(|| workers.clone());
        let table = fds.clone();
        workers[0].spawn(accepting_on(group, async move {
            ServiceTrait::start_service(&mut service, Some(table), shutdown_rx, 1).await
        }));

        let deadline = Instant::now() + Duration::from_secs(10);
        let first_fd = loop {
            if let Some(fd) = fds.lock().get("127.0.0.1:0") {
                break *fd;
            }
            assert!(Instant::now() < deadline, "the service listens");
            std::thread::sleep(Duration::from_millis(5));
        };
        let first = unsafe { BorrowedFd::borrow_raw(first_fd) };
        let addr = socket2::SockRef::from(&first)
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap();
        if close_first_socket {
            // Shutting a listening socket down takes it out of its SO_REUSEPORT group: every
            // connection then goes to the second socket, accepted on the second thread.
            while fds.lock().get("127.0.0.1:0#1").is_none() {
                assert!(Instant::now() < deadline, "the second socket listens");
                std::thread::sleep(Duration::from_millis(5));
            }
            nix::sys::socket::shutdown(first_fd, nix::sys::socket::Shutdown::Read).unwrap();
        }
        for _ in 0..40 {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut byte = [0u8; 1];
            client
                .read_exact(&mut byte)
                .expect("every connection is served");
        }
        let (mut keys, _) = fds.lock().serialize();
        keys.sort();
        let served = threads.lock().clone();
        shutdown_tx.send(true).unwrap();
        (keys, served, worker_threads)
    }

    #[test]
    fn with_accept_per_thread_each_thread_has_a_socket_and_serves_connections() {
        let (keys, served, workers) = serve_40_connections(true, false);
        assert_eq!(keys, vec!["127.0.0.1:0", "127.0.0.1:0#1"]);
        assert_eq!(served.len(), 40);
        assert!(served.iter().all(|t| workers.contains(t)));
        // The kernel spreads the connections over both sockets (all 40 on one: 2 in 2^40).
        for worker in &workers {
            assert!(served.contains(worker), "a thread served none: {served:?}");
        }
    }

    #[test]
    fn with_accept_per_thread_a_connection_is_served_on_the_thread_that_accepted_it() {
        let (_, served, workers) = serve_40_connections(true, true);
        assert_eq!(served.len(), 40);
        assert!(
            served.iter().all(|t| *t == workers[1]),
            "all served by the second socket's thread: {served:?}, workers {workers:?}"
        );
    }

    #[test]
    fn without_accept_per_thread_one_socket_serves_every_thread() {
        let (keys, served, workers) = serve_40_connections(false, false);
        assert_eq!(keys, vec!["127.0.0.1:0"]);
        assert_eq!(served.len(), 40);
        assert!(served.iter().all(|t| workers.contains(t)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::l4::stream::Stream as L4Stream;

    struct Closes;

    #[async_trait]
    impl ServerApp for Closes {
        async fn process_new(
            self: &Arc<Self>,
            _session: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            None
        }
    }

    /// A connection's task keeps no room for the stream as accepted: it comes boxed and leaves
    /// its box before the first wait (captured by value, its 448 bytes stayed in the task for
    /// the connection's life).
    #[tokio::test]
    async fn a_connection_task_keeps_no_room_for_the_accepted_stream() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let io = UninitializedStream::plain(L4Stream::from(ours));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let task = Service::<Closes>::serve_connection(
            Box::new(io),
            Arc::new(Closes),
            shutdown,
            std::thread::current().id(),
        );
        let size = std::mem::size_of_val(&task);
        assert!(
            size < std::mem::size_of::<UninitializedStream>(),
            "a connection's task takes {size} bytes"
        );
        // And it serves: the handshake of a plain stream, then the app, which closes.
        task.await;
    }
}
