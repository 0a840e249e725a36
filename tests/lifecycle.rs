//! Process lifecycle: SIGTERM drains in-flight requests within the configured timeout, and a
//! zero-downtime binary upgrade (SIGQUIT + `serve --upgrade`) loses no request.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

/// Every host to backend "blue", no access log, draining for at most `drain_timeout`.
fn world(drain_timeout: &str) -> World {
    World::new()
        .server_option("drain_timeout", drain_timeout)
        .server_option("access_log", "off")
        .catch_all_blue()
}

/// [`world`] started.
fn start(drain_timeout: &str) -> Running {
    world(drain_timeout).start(BIN)
}

/// Waits until `backend` has received `n` requests in all.
fn wait_received(backend: &Backend, n: u64) {
    assert!(
        wait_until(Duration::from_secs(10), || backend.requests() >= n),
        "the backend got {} requests, not {n}",
        backend.requests()
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut w = start("3s");
    let url = w.url("127.0.0.1", "/delay/1000");
    let in_flight = std::thread::spawn(move || {
        let resp = http1_client().get(url).send().unwrap();
        (resp.status().as_u16(), json_body(resp)["backend"].clone())
    });
    // In flight once the backend has it.
    wait_received(w.backend("blue"), 1);
    let signalled = Instant::now();
    w.proxy.sigterm();
    let (status, backend) = in_flight.join().unwrap();
    assert_eq!(
        status, 200,
        "the in-flight request must complete during the drain"
    );
    assert_eq!(backend, "blue");
    let exited = w.proxy.wait_exit(Duration::from_secs(15));
    assert!(exited.is_some(), "proxy did not exit after SIGTERM");
    // Exits soon after the last request (about 1 s), well before pingora's 300 s default grace
    // period; room for a loaded machine.
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "{:?}",
        signalled.elapsed()
    );
}

#[test]
fn sigterm_gives_up_on_requests_after_the_drain_timeout() {
    let mut w = start("1s");
    let url = w.url("127.0.0.1", "/delay/20000");
    let _stuck = std::thread::spawn(move || http1_client().get(url).send().is_ok());
    wait_received(w.backend("blue"), 1);
    let signalled = Instant::now();
    w.proxy.sigterm();
    assert!(
        w.proxy.wait_exit(Duration::from_secs(5)).is_some(),
        "no exit within the timeout"
    );
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited before the drain timeout: {took:?}"
    );
}

#[test]
fn binary_upgrade_hands_over_sockets_without_failed_requests() {
    upgrade_under_load(3, 3);
}

/// A process with fewer worker threads than the one it replaces serves every socket handed over:
/// one left without an accept loop would take its share of new connections and never answer.
#[test]
fn binary_upgrade_to_fewer_threads_serves_every_socket_handed_over() {
    upgrade_under_load(3, 2);
}

/// The inodes of the listening TCP sockets on `port` that process `pid` holds.
fn listening_sockets(pid: u32, port: u16) -> std::collections::BTreeSet<u64> {
    let mut listening = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex, st 0A is LISTEN, the inode is field 9.
            let local_port = fields[1].rsplit(':').next().unwrap();
            if fields[3] == "0A" && u16::from_str_radix(local_port, 16) == Ok(port) {
                listening.insert(fields[9].parse::<u64>().unwrap());
            }
        }
    }
    let held: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    listening.intersection(&held).copied().collect()
}

/// Upgrades a process with `old_threads` worker threads (one listening socket each, `reuseport`
/// by default) to one with `new_threads`, under a load of one new connection per request, and
/// checks that no request failed and that the new process holds every socket of the old one.
fn upgrade_under_load(old_threads: i64, new_threads: i64) {
    let mut w = world("2s").server_option("threads", old_threads).start(BIN);
    let http = w.http();
    // The port answers once one socket listens; the others may be a moment behind on a busy
    // machine (the stress run saw 1 of 3 here): wait for them, then count.
    let pid = w.proxy.pid();
    wait_until(Duration::from_secs(10), || {
        listening_sockets(pid, http).len() >= old_threads as usize
    });
    let handed_over = listening_sockets(pid, http);
    assert_eq!(
        handed_over.len(),
        old_threads as usize,
        "one listening socket per worker thread"
    );
    if new_threads != old_threads {
        let config = std::fs::read_to_string(w.proxy.config_path()).unwrap();
        let changed = config.replace(
            &format!("threads = {old_threads}\n"),
            &format!("threads = {new_threads}\n"),
        );
        assert_ne!(changed, config, "the config names its threads");
        std::fs::write(w.proxy.config_path(), changed).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // A new connection per request: the claim is that the hand-over refuses no connection.
            // (An idle keep-alive connection is closed at shutdown, as nginx does; a client racing
            // that close must retry, see docs/operations.md.)
            let client = client_builder().pool_max_idle_per_host(0).build().unwrap();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match client.get(format!("http://127.0.0.1:{http}/")).send() {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push((sent, format!("status {}", r.status()))),
                    Err(e) => failed.push((sent, format!("{e:?}"))),
                }
            }
            (ok, failed)
        })
    };
    // The load runs.
    wait_received(w.backend("blue"), 10);
    let old = &mut w.proxy;
    let mut new = old.spawn_upgrade();
    // The new process binds the upgrade socket, then waits there for the old one's sockets.
    let socket = old.upgrade_socket();
    assert!(
        wait_until(Duration::from_secs(20), || socket.exists()),
        "the upgraded process never waited on {}",
        socket.display()
    );
    old.signal("QUIT");
    let quit = Instant::now();
    assert!(
        old.wait_exit(Duration::from_secs(8)).is_some(),
        "old process did not exit"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    let served_by_new = http1_client()
        .get(format!("http://127.0.0.1:{http}/"))
        .send()
        .map(|r| r.status().as_u16());
    let held_by_new = listening_sockets(new.id(), http);
    let _ = new.kill();
    let _ = new.wait();
    // When each failed request was sent, relative to the SIGQUIT (the old process stops
    // accepting about 5 s after it).
    let failed: Vec<String> = failed
        .iter()
        .map(|(sent, e)| {
            let (sign, at) = match sent.checked_duration_since(quit) {
                Some(after) => ("+", after),
                None => ("-", quit.duration_since(*sent)),
            };
            format!("sent at QUIT{sign}{at:?}: {e}")
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}\n--- upgraded process ---\n{}",
        failed.len(),
        &failed[..failed.len().min(5)],
        std::fs::read_to_string(w.proxy.dir().join("stderr-upgrade.log")).unwrap_or_default()
    );
    assert!(ok > 20, "load loop made only {ok} requests");
    assert_eq!(
        held_by_new, handed_over,
        "the new process holds every listening socket of the old one, and no other"
    );
    assert_eq!(
        served_by_new.ok(),
        Some(200),
        "the upgraded process does not serve"
    );
}

/// The access log's lines in `path` (0 when it does not exist).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Sends `n` requests and checks each is answered.
fn send_requests(w: &Running, n: usize) {
    let client = http1_client();
    for _ in 0..n {
        let resp = client.get(w.url("127.0.0.1", "/")).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
}

#[test]
fn sigusr1_reopens_the_access_log_after_logrotate_renames_it() {
    let mut w = World::new().catch_all_blue().start(BIN);
    let log = w.proxy.access_log_path();
    let rotated = log.with_extension("log.1");
    send_requests(&w, 5);
    // Every line of the first requests is out before the rotation.
    assert!(
        wait_until(Duration::from_secs(10), || lines_in(&log) == 5),
        "{} lines before the rotation",
        lines_in(&log)
    );
    std::fs::rename(&log, &rotated).unwrap();
    // Until the signal the process keeps writing to the renamed file (its open file).
    send_requests(&w, 2);
    w.proxy.signal("USR1");
    assert!(
        w.proxy
            .wait_for_log("access log reopened", Duration::from_secs(10)),
        "no reopen in the process log:\n{}",
        w.proxy.stderr()
    );
    assert!(log.exists(), "USR1 did not create the access log again");
    send_requests(&w, 3);
    // None lost: 7 lines in the rotated file, the 3 sent after the signal in the new one.
    assert!(
        wait_until(Duration::from_secs(10), || lines_in(&rotated)
            + lines_in(&log)
            == 10),
        "rotated {} + new {} lines, 10 requests",
        lines_in(&rotated),
        lines_in(&log)
    );
    assert_eq!(lines_in(&rotated), 7);
    assert_eq!(lines_in(&log), 3);
    assert!(
        w.proxy.try_exit().is_none(),
        "USR1 must not stop the process"
    );
}

#[test]
fn sigusr2_is_ignored_and_the_pid_file_names_the_process() {
    let mut w = World::new()
        .catch_all_blue()
        .server_option("pid_file", "{tmp}/switchyard.pid")
        .start(BIN);
    let pid_file = w.proxy.dir().join("switchyard.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        w.proxy.pid().to_string()
    );
    w.proxy.signal("USR2");
    assert!(
        w.proxy
            .wait_for_log("SIGUSR2 ignored", Duration::from_secs(10)),
        "{}",
        w.proxy.stderr()
    );
    send_requests(&w, 1);
    w.proxy.sigterm();
    assert!(w.proxy.wait_exit(Duration::from_secs(15)).is_some());
    assert!(!pid_file.exists(), "the pid file outlived the process");
}

/// A config whose HTTP listener is on `port`, in `dir` (the `{tmp}` of the templates).
fn config_on_port(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let world = World::new().catch_all_blue().listener_option(
        "http",
        "address",
        format!("127.0.0.1:{port}"),
    );
    let config = world.config().replace("{tmp}", dir.to_str().unwrap());
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn a_port_in_use_stops_the_start_with_the_address_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = config_on_port(dir.path(), port);
    let started = Instant::now();
    let out = BIN
        .command()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("in use"),
        "{stderr}"
    );
    // Measured in milliseconds; pingora alone retries for about 30 s. Room for a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // `check --probe-listeners` finds it too; plain `check` only reads the file.
    let check = |probe: bool| {
        let mut cmd = BIN.command();
        cmd.args(["check", "--config"]).arg(&config);
        if probe {
            cmd.arg("--probe-listeners");
        }
        cmd.output().unwrap()
    };
    let probed = check(true);
    assert_eq!(probed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&probed.stderr).contains(&format!("127.0.0.1:{port}")));
    assert_eq!(check(false).status.code(), Some(0));
    drop(taken);
    assert_eq!(check(true).status.code(), Some(0));
}

#[test]
fn systemd_is_told_ready_once_every_listener_accepts() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::port();
    let config = config_on_port(dir.path(), port);
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = BIN
        .command()
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let received = socket.recv(&mut buf);
    // At READY the listener accepts.
    let accepts = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    send_signal_term(&child);
    let stopping = socket.recv(&mut [0u8; 256]).map(|_| ());
    let _ = child.wait();
    let n = received.expect("no notification from switchyard within 60 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1");
    assert!(accepts, "READY was sent before the listener accepts");
    assert!(stopping.is_ok(), "no STOPPING=1 at the drain");
}

fn send_signal_term(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
