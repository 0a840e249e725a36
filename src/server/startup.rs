//! Start-up as service managers expect: listen addresses probed before the server runs, systemd's READY once they accept.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Every address the process listens on: the listeners', then the admin API's.
pub fn listen_addresses(config: &Config) -> Vec<(String, SocketAddr)> {
    let mut all: Vec<(String, SocketAddr)> = config
        .listeners
        .iter()
        .map(|l| (format!("listener \"{}\"", l.name), l.address))
        .collect();
    if let Some(admin) = &config.admin {
        all.push(("the admin API".to_string(), admin.address));
    }
    all
}

/// A listen address that cannot be bound, with the system's reason.
#[derive(Debug, thiserror::Error)]
#[error("{what} cannot listen on {address}: {reason}")]
pub struct BindError {
    pub what: String,
    pub address: SocketAddr,
    pub reason: io::Error,
}

/// Binds each address once and lets it go, so that a port in use or a privileged port fails the
/// start at once with the address named (pingora itself retries a bind for about 30 s and then
/// panics). The socket is set up as pingora's is (`SO_REUSEADDR`), so connections still in
/// TIME_WAIT from a previous run do not count as in use.
pub fn probe_binds(addresses: &[(String, SocketAddr)]) -> Result<(), BindError> {
    for (what, address) in addresses {
        bind_without_listening(*address).map_err(|reason| BindError {
            what: what.clone(),
            address: *address,
            reason,
        })?;
    }
    Ok(())
}

/// A socket bound to `address` that does not listen. A listening probe (`TcpListener::bind`)
/// would accept, for the instant it lives, the connection of a client already waiting for the
/// server (a health check, a load balancer, a test), and drop it the moment after.
fn bind_without_listening(address: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket)
}

/// Writes this process's id (and a newline) to `path`, replacing what is there.
pub fn write_pid_file(path: &std::path::Path) -> io::Result<()> {
    crate::fsutil::write_atomic(path, format!("{}\n", std::process::id()).as_bytes(), 0o644)
}

/// Removes `path` if it still holds this process's id (an upgraded process may own it now).
pub fn remove_pid_file(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Where a readiness probe connects: a wildcard address is reached on loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

/// Sends `state` to systemd's notification socket (`sd_notify`): `$NOTIFY_SOCKET` is a path, or
/// an abstract name when it starts with `@`. Returns false when no service manager asked for it.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    match target.as_bytes() {
        [b'@', name @ ..] => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        _ => {
            socket.send_to(state.as_bytes(), &target)?;
        }
    }
    Ok(true)
}

/// Watches, on a thread of its own, until every address accepts a TCP connection, then tells
/// systemd READY=1 (with MAINPID= on an upgrade start, so the unit follows the new process).
/// Gives up with a warning after `timeout`.
pub fn notify_when_accepting(
    addresses: Vec<(String, SocketAddr)>,
    upgrade: bool,
    timeout: Duration,
) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sd-notify".into())
        .spawn(move || {
            let deadline = Instant::now() + timeout;
            let mut pending: Vec<SocketAddr> =
                addresses.iter().map(|(_, a)| reachable(*a)).collect();
            while !pending.is_empty() {
                if Instant::now() >= deadline {
                    log::warn!("not ready after {timeout:?}: nothing accepts on {pending:?}; systemd is not told READY");
                    return;
                }
                pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
                if !pending.is_empty() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let state = if upgrade {
                format!("MAINPID={}\nREADY=1", std::process::id())
            } else {
                "READY=1".to_string()
            };
            match sd_notify(&state) {
                Ok(_) => log::info!("every listener accepts; told systemd READY"),
                Err(e) => log::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}"),
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the sd_notify watcher: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_taken_port_is_named_in_the_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = taken.local_addr().expect("addr");
        let err = probe_binds(&[("listener \"http\"".into(), address)]).expect_err("in use");
        let text = err.to_string();
        assert!(text.contains(&address.to_string()), "{text}");
        assert!(text.contains("listener \"http\""), "{text}");
        assert_eq!(err.reason.kind(), io::ErrorKind::AddrInUse);
        drop(taken);
        probe_binds(&[("listener \"http\"".into(), address)]).expect("free again");
    }

    #[test]
    fn a_probe_binds_without_ever_accepting_a_connection() {
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let probe = bind_without_listening(address).expect("bound");
        // Bound (the port is taken) but not listening: a client is refused, not accepted.
        let err = TcpStream::connect(address).expect_err("nothing listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        drop(probe);
    }

    #[test]
    fn wildcards_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:80".parse().expect("addr");
        let v6: SocketAddr = "[::]:443".parse().expect("addr");
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:80");
        assert_eq!(reachable(v6).to_string(), "[::1]:443");
    }
}
