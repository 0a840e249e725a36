//! `[tls]`: protocol versions, cipher suites and key-exchange groups as OpenSSL's client sees them, changed by a reload for new handshakes; session resumption.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::Duration;

use testkit::*;

const BIN: Bin = testkit::bin!();

/// A TLS listener with the (ECDSA) localhost certificate, `[tls]` from `tls`.
fn world(tls: &str) -> World {
    World::bare()
        .https()
        .fallback_certificate("localhost")
        .catch_all_blue()
        .toml(tls)
}

/// `openssl s_client` with `args` against `localhost` on `port`, the test CA trusted.
fn handshake(port: u16, args: &[&str]) -> Handshake {
    handshake_with(port, args, None)
}

/// [`handshake`], sending `request` after the handshake and reading until the server closes
/// (TLS 1.3 session tickets come after the handshake).
fn handshake_with(port: u16, args: &[&str], request: Option<&str>) -> Handshake {
    let ca = format!("{CERTS}/test-ca.crt");
    Handshake::run(port, "localhost", &ca, args, request)
}

/// Asserts the suite a handshake with `args` agrees on (`None`: the handshake fails).
fn expect_cipher(port: u16, args: &[&str], want: Option<&str>) -> Handshake {
    let h = handshake(port, args);
    assert_eq!(h.cipher(), want, "{args:?}:\n{}", h.out);
    h
}

/// Reloads `running` with its world's config plus `tls`, and waits for `generation`.
fn reload(running: &mut Running, tls: &str, generation: u64) {
    let config = running.config_with(|w| w.toml(tls));
    running.proxy.reload_with(&config);
    let logged = format!("(generation {generation})");
    assert!(
        running.proxy.wait_for_log(&logged, Duration::from_secs(10)),
        "{}",
        running.proxy.stderr()
    );
}

#[test]
fn suites_groups_and_versions_follow_the_policy_and_a_reload() {
    let tls = r#"
[tls]
min_version = "1.2"
cipher_suites = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:TLS_AES_128_GCM_SHA256"
kx_groups = ["X25519", "P-256"]
"#;
    let mut running = world(tls).start(BIN);
    let port = running.https();
    let (aes256, chacha) = (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    );

    expect_cipher(port, &["-tls1_2", "-cipher", aes256], Some(aes256));
    // A suite left out is not negotiated, in TLS 1.2 and 1.3.
    expect_cipher(port, &["-tls1_2", "-cipher", chacha], None);
    let tls13 = |suite| ["-tls1_3", "-ciphersuites", suite];
    expect_cipher(port, &tls13("TLS_AES_256_GCM_SHA384"), None);
    let ok = "TLS_AES_128_GCM_SHA256";
    expect_cipher(port, &tls13(ok), Some(ok));
    // Groups: P-384 is not offered, P-256 is.
    expect_cipher(port, &["-tls1_3", "-groups", "P-384"], None);
    let h = expect_cipher(port, &["-tls1_3", "-groups", "P-256"], Some(ok));
    assert!(
        h.out.contains("Server Temp Key: ECDH, prime256v1"),
        "{}",
        h.out
    );

    // A reload: AES-256 out of TLS 1.2, ChaCha20 in, X25519 only.
    let new_tls = r#"
[tls]
cipher_suites = ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"]
kx_groups = "X25519"
"#;
    reload(&mut running, new_tls, 2);
    expect_cipher(port, &["-tls1_2", "-cipher", aes256], None);
    expect_cipher(port, &["-tls1_2", "-cipher", chacha], Some(chacha));
    expect_cipher(port, &["-tls1_3", "-groups", "P-256"], None);
    let h = handshake(port, &["-tls1_3"]);
    assert_eq!(h.group(), Some("X25519"), "{}", h.out);

    // TLS 1.3 only (the world's TLS 1.2 suites replaced: they would be an error).
    let only13 = "[tls]\nmin_version = \"1.3\"\ncipher_suites = [\"TLS13_AES_256_GCM_SHA384\"]\n";
    reload(&mut running, only13, 3);
    expect_cipher(port, &["-tls1_2"], None);
    expect_cipher(port, &["-tls1_3"], Some("TLS_AES_256_GCM_SHA384"));
    // And the proxy still answers over it.
    let resp = https_client()
        .get(format!("https://localhost:{port}/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// One connection that saves its session to `file`, then one that offers it: whether the
/// second was resumed ("Reused" in s_client's output).
fn resumed(port: u16, version: &str, extra: &[&str], file: &std::path::Path) -> bool {
    let file = file.to_str().unwrap();
    let request = Some("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut args = vec![version, "-sess_out", file];
    args.extend(extra);
    let first = handshake_with(port, &args, request);
    assert!(first.cipher().is_some(), "{}", first.out);
    assert!(first.out.contains("New, TLS"), "{}", first.out);
    if !std::path::Path::new(file).exists() {
        // s_client saves nothing when the server gave the session no id and no ticket.
        return false;
    }
    let mut args = vec![version, "-sess_in", file];
    args.extend(extra);
    let second = handshake_with(port, &args, request);
    assert!(second.cipher().is_some(), "{}", second.out);
    second.out.contains("Reused, TLS")
}

#[test]
fn sessions_resume_by_id_and_by_ticket_across_a_reload() {
    let mut running = world("[tls]\nsession_cache = 100\n").start(BIN);
    let port = running.https();
    let dir = tempfile::tempdir().unwrap();
    let sess = |name: &str| dir.path().join(name);
    // TLS 1.2 by session id (no ticket asked for): the server's cache.
    assert!(resumed(port, "-tls1_2", &["-no_ticket"], &sess("id")));
    // TLS 1.2 and 1.3 by ticket.
    assert!(resumed(port, "-tls1_2", &[], &sess("t12")));
    assert!(resumed(port, "-tls1_3", &[], &sess("t13")));

    // Tickets issued before a reload resume after it (one ticketer per process); a TLS 1.3
    // ticket is for one use, so a fresh one is taken first.
    let request = Some("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let before = sess("before").to_str().unwrap().to_string();
    let h = handshake_with(port, &["-tls1_3", "-sess_out", &before], request);
    assert!(h.cipher().is_some(), "{}", h.out);
    reload(
        &mut running,
        "[tls]\nkx_groups = [\"X25519\", \"P-256\"]\n",
        2,
    );
    let h = handshake_with(port, &["-tls1_3", "-sess_in", &before], request);
    assert!(h.out.contains("Reused, TLSv1.3"), "{}", h.out);

    // No cache and no tickets: nothing resumes.
    reload(
        &mut running,
        "[tls]\nsession_cache = 0\nsession_tickets = false\n",
        3,
    );
    assert!(!resumed(port, "-tls1_2", &["-no_ticket"], &sess("off-id")));
    assert!(!resumed(port, "-tls1_2", &[], &sess("off-t12")));
    assert!(!resumed(port, "-tls1_3", &[], &sess("off-t13")));
}
