//! One builder for the worlds the integration tests run in: named echo backends and dead servers, a proxy config built from typed parts (emitted with `toml::to_string`), the proxy started on it, and handles to all of them.
//!
//! ```ignore
//! const BIN: Bin = testkit::bin!();
//! let mut w = World::blue_green()
//!     .dead("red")
//!     .pool("api", "red", 0, &["red"])
//!     .admin_token(TOKEN)
//!     .start(BIN);
//! assert_eq!(backend_via(&http1_client(), w.http(), "api.test"), "blue");
//! let view = w.admin().get("/v1/services/api");
//! w.proxy.reload_with(&w.config_with(|w| w.weights("api", &[("blue", 0), ("green", 100)])));
//! ```
//!
//! Servers are named: a pool's servers are backend names ([`World::backend`]), dead servers
//! ([`World::dead`]) or addresses registered with [`World::address`], each named before it is
//! used; `host:port` is taken as it is. Settings the builder has no method for come as TOML text
//! ([`World::toml`]), with the world's ports and names as `{placeholders}`, merged into the
//! document.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::{Table, Value};

use crate::admin::Admin;
use crate::ports::{closed_addr, port};
use crate::proxy::Proxy;
use crate::template::{fill, CERTS, SERVER};
use crate::{Backend, Bin};

/// The description of a test world: its backends (running from the moment they are named) and the
/// proxy config. Cloned to describe a changed config of a running world.
#[derive(Clone)]
pub struct World {
    doc: Table,
    /// Server names (backends, dead servers, registered addresses) and their addresses.
    names: BTreeMap<String, String>,
    backends: BTreeMap<String, Arc<Backend>>,
    /// Listener names and their ports.
    listeners: BTreeMap<String, u16>,
    admin: Option<u16>,
    token: Option<String>,
}

impl World {
    /// A `[server]` section for tests (see [`SERVER`]) and nothing else.
    pub fn bare() -> World {
        World {
            doc: toml::from_str(SERVER).expect("SERVER is valid TOML"),
            names: BTreeMap::new(),
            backends: BTreeMap::new(),
            listeners: BTreeMap::new(),
            admin: None,
            token: None,
        }
    }

    /// [`World::bare`] with a plain listener named "http" ([`World::http`]).
    pub fn new() -> World {
        World::bare().http()
    }

    /// [`World::new`] with backends "blue" and "green" and every host routed to service "api",
    /// whose pools "blue" (weight 100) and "green" (weight 0) are those backends.
    pub fn blue_green() -> World {
        World::new()
            .backend("blue")
            .backend("green")
            .route("*", "api")
            .pool("api", "blue", 100, &["blue"])
            .pool("api", "green", 0, &["green"])
    }

    /// Backend "blue", and every host routed to service "api", whose one pool "blue" (weight 1)
    /// is that backend (the `{catch_all_blue}` of hand-written templates).
    pub fn catch_all_blue(self) -> World {
        self.backend("blue")
            .route("*", "api")
            .pool("api", "blue", 1, &["blue"])
    }

    /// A plain listener named "http" ([`Running::http`]).
    pub fn http(self) -> World {
        self.listener("http", false)
    }

    /// A TLS listener named "https" ([`Running::https`]); the certificates are up to the test
    /// ([`World::certificate`]).
    pub fn https(self) -> World {
        self.listener("https", true)
    }

    /// A listener called `name` on 127.0.0.1 and a port of its own ([`Running::port`]), with
    /// TLS or not.
    pub fn listener(mut self, name: &str, tls: bool) -> World {
        let port = port();
        self.listeners.insert(name.into(), port);
        let mut table = Table::new();
        table.insert("name".into(), name.into());
        table.insert("address".into(), format!("127.0.0.1:{port}").into());
        if tls {
            table.insert("tls".into(), true.into());
        }
        self.push("listeners", table)
    }

    /// Sets `key` on the listener named `name`.
    pub fn listener_option(mut self, name: &str, key: &str, value: impl Into<Value>) -> World {
        let listener = self
            .doc
            .get_mut("listeners")
            .and_then(Value::as_array_mut)
            .and_then(|all| {
                all.iter_mut()
                    .filter_map(Value::as_table_mut)
                    .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
            })
            .unwrap_or_else(|| panic!("no listener named {name:?}"));
        listener.insert(key.into(), value.into());
        self
    }

    /// The checked-in certificate `certs/NAME.crt` with its key.
    pub fn certificate(self, name: &str) -> World {
        let cert = certificate(name);
        self.push("certificates", cert)
    }

    /// [`World::certificate`], marked as the fallback for names no certificate covers.
    pub fn fallback_certificate(self, name: &str) -> World {
        let mut cert = certificate(name);
        cert.insert("fallback".into(), true.into());
        self.push("certificates", cert)
    }

    /// Sets `key` in `[server]`.
    pub fn server_option(mut self, key: &str, value: impl Into<Value>) -> World {
        self.table(&["server"]).insert(key.into(), value.into());
        self
    }

    /// The admin API on a port of its own, without a token ([`Running::admin`]).
    pub fn admin(mut self) -> World {
        let port = port();
        self.admin = Some(port);
        let address = format!("127.0.0.1:{port}");
        self.table(&["admin"])
            .insert("address".into(), address.into());
        self
    }

    /// The admin API with a bearer token.
    pub fn admin_token(mut self, token: &str) -> World {
        if self.admin.is_none() {
            self = self.admin();
        }
        self.token = Some(token.to_string());
        self.admin_option("token", token)
    }

    /// Sets `key` in `[admin]`.
    pub fn admin_option(mut self, key: &str, value: impl Into<Value>) -> World {
        assert!(self.admin.is_some(), "admin_option before admin()");
        self.table(&["admin"]).insert(key.into(), value.into());
        self
    }

    /// Starts an echo backend called `name` (it answers with its name) and names its address.
    pub fn backend(self, name: &str) -> World {
        let backend = Backend::spawn(name).unwrap_or_else(|e| panic!("start backend {name}: {e}"));
        self.with_backend(name, backend)
    }

    /// A backend the test built (`Backend::builder(...)...spawn()`), under `name`.
    pub fn with_backend(mut self, name: &str, backend: Backend) -> World {
        self.names.insert(name.into(), backend.addr.to_string());
        self.backends.insert(name.into(), Arc::new(backend));
        self
    }

    /// Names an address (a server the test runs itself, or one it stops and starts).
    pub fn address(mut self, name: &str, addr: impl Display) -> World {
        self.names.insert(name.into(), addr.to_string());
        self
    }

    /// Names a dead server: an address nothing listens on ([`closed_addr`]).
    pub fn dead(self, name: &str) -> World {
        self.address(name, closed_addr())
    }

    /// A route for `host` to `service`.
    pub fn route(self, host: &str, service: &str) -> World {
        self.route_with(Route::new(host, service))
    }

    /// A route with more settings than a host.
    pub fn route_with(self, route: Route) -> World {
        self.push("routes", route.0)
    }

    /// Pool `pool` of `service` with `weight`, its servers named (see the module docs).
    pub fn pool(mut self, service: &str, pool: &str, weight: u32, servers: &[&str]) -> World {
        let servers: Vec<Value> = servers.iter().map(|s| self.resolve(s).into()).collect();
        let table = self.table(&["services", service, "pools", pool]);
        table.insert("weight".into(), i64::from(weight).into());
        table.insert("servers".into(), servers.into());
        self
    }

    /// Sets the weights of pools of `service`.
    pub fn weights(mut self, service: &str, weights: &[(&str, u32)]) -> World {
        for (pool, weight) in weights {
            self.table(&["services", service, "pools", pool])
                .insert("weight".into(), i64::from(*weight).into());
        }
        self
    }

    /// Passive health checks for `service`: a server is ejected after `max_fails` failures for
    /// `fail_timeout`.
    pub fn passive(mut self, service: &str, max_fails: u32, fail_timeout: &str) -> World {
        let table = self.table(&["services", service, "passive"]);
        table.insert("max_fails".into(), i64::from(max_fails).into());
        table.insert("fail_timeout".into(), fail_timeout.into());
        self
    }

    /// Merges TOML text into the config: tables are merged key by key, arrays of tables
    /// (`[[routes]]`) appended to, other values replaced. Every listener name (`{http}`,
    /// `{https}`: its port), `{admin}` (the admin port), `{token}` and every server name are
    /// placeholders (see [`fill`]).
    pub fn toml(mut self, snippet: &str) -> World {
        let vars = self.vars();
        let refs: Vec<(&str, &dyn Display)> = vars
            .iter()
            .map(|(k, v)| (k.as_str(), v as &dyn Display))
            .collect();
        let text = fill(snippet, &refs);
        let table: Table = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("TOML snippet does not parse: {e}\n{text}"));
        merge(&mut self.doc, table);
        self
    }

    /// The port of the listener called `name`.
    pub fn port(&self, name: &str) -> u16 {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("the world has no listener {name:?}"))
    }

    /// The admin API's port.
    pub fn admin_port(&self) -> u16 {
        self.admin.expect("the world has no admin API")
    }

    /// The config text (`{tmp}` is filled in when a proxy starts on it).
    pub fn config(&self) -> String {
        toml::to_string(&self.doc).expect("a TOML table serialises")
    }

    /// Starts the proxy on this config in a temp dir of its own.
    pub fn start(self, bin: Bin) -> Running {
        let temp = tempfile::tempdir().expect("create temp dir");
        let dir = temp.path().to_path_buf();
        Running::start(self, bin, dir, Some(temp))
    }

    /// Starts the proxy on this config in `dir` (the caller's, kept across restarts).
    pub fn start_in(self, bin: Bin, dir: &Path) -> Running {
        Running::start(self, bin, dir.to_path_buf(), None)
    }

    /// The address of a server named in a pool: a name given before, or an address as it is.
    fn resolve(&self, server: &str) -> String {
        match self.names.get(server) {
            Some(addr) => addr.clone(),
            None if server.contains(':') => server.to_string(),
            None => panic!(
                "server {server:?} is neither an address nor a name given before (backend, \
                 dead, address)"
            ),
        }
    }

    /// The placeholders [`World::toml`] fills.
    fn vars(&self) -> Vec<(String, String)> {
        self.listeners
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .chain(self.admin.map(|p| ("admin".to_string(), p.to_string())))
            .chain(self.token.iter().map(|t| ("token".to_string(), t.clone())))
            .chain(self.names.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    /// The table at `path`, created (empty) where missing.
    fn table(&mut self, path: &[&str]) -> &mut Table {
        let mut table = &mut self.doc;
        for key in path {
            table = table
                .entry(key.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key} in {path:?} is not a table"));
        }
        table
    }

    /// Appends `entry` to the array of tables `key`.
    fn push(mut self, key: &str, entry: Table) -> World {
        let array = self
            .doc
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .unwrap_or_else(|| panic!("{key} is not an array"));
        array.push(Value::Table(entry));
        self
    }
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

/// A route: `host`, `service` and any other route settings.
#[derive(Debug, Clone)]
pub struct Route(Table);

impl Route {
    pub fn new(host: &str, service: &str) -> Route {
        let mut table = Table::new();
        table.insert("host".into(), host.into());
        table.insert("service".into(), service.into());
        Route(table)
    }

    /// Only requests under this path prefix.
    pub fn path(self, path: &str) -> Route {
        self.set("path", path)
    }

    /// Any route setting (`redirect_https`, `read_timeout`, `limits`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Route {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// A started world: the proxy, the backends, the ports and the config it was started on.
pub struct Running {
    /// The proxy child; stopped first when the world is dropped.
    pub proxy: Proxy,
    world: World,
    bin: Bin,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Running {
    fn start(world: World, bin: Bin, dir: PathBuf, temp: Option<tempfile::TempDir>) -> Running {
        let proxy = Proxy::start_in(bin, &dir, &world.config());
        Running {
            proxy,
            world,
            bin,
            dir,
            _temp: temp,
        }
    }

    /// The port of the listener named "http".
    pub fn http(&self) -> u16 {
        self.port("http")
    }

    /// The port of the listener named "https".
    pub fn https(&self) -> u16 {
        self.port("https")
    }

    /// The port of the listener called `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.world.port(name)
    }

    /// The admin API's port.
    pub fn admin_port(&self) -> u16 {
        self.world.admin_port()
    }

    /// `http://127.0.0.1:PORT` of the admin API.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port())
    }

    /// A client of the admin API, sending the world's token if it has one.
    pub fn admin(&self) -> Admin {
        Admin::new(self.admin_port(), self.world.token.as_deref())
    }

    /// `http://HOST:PORT/PATH` on the "http" listener.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http())
    }

    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.world
            .backends
            .get(name)
            .unwrap_or_else(|| panic!("no backend {name:?}"))
    }

    /// The address of the server called `name` (a backend, a dead server, a named address).
    pub fn addr(&self, name: &str) -> &str {
        self.world
            .names
            .get(name)
            .unwrap_or_else(|| panic!("no server {name:?}"))
    }

    /// The config the world was described with (`{tmp}` not filled in).
    pub fn config(&self) -> String {
        self.world.config()
    }

    /// The config of this world changed by `change` (for a reload or a restart).
    pub fn config_with(&self, change: impl FnOnce(World) -> World) -> String {
        change(self.world.clone()).config()
    }

    /// Stops the proxy (if it still runs) and starts a new one on `config` in the same
    /// directory (state dir, logs), on the same ports.
    pub fn restart(&mut self, config: &str) {
        self.proxy.stop();
        self.proxy = Proxy::start_in(self.bin, &self.dir, config);
    }
}

/// A `[[certificates]]` entry for `certs/NAME.crt` and its key.
fn certificate(name: &str) -> Table {
    let mut table = Table::new();
    table.insert("cert".into(), format!("{CERTS}/{name}.crt").into());
    table.insert("key".into(), format!("{CERTS}/{name}.key").into());
    table
}

/// Merges `from` into `into`: tables key by key, arrays of tables appended, anything else replaced.
fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(mine)), Value::Table(theirs)) => merge(mine, theirs),
            (Some(Value::Array(mine)), Value::Array(theirs))
                if mine.iter().chain(&theirs).all(Value::is_table) =>
            {
                mine.extend(theirs)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
