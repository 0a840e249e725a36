//! OCSP stapling against a real responder (`openssl ocsp`) for a test CA's certificate that names it, checked with `openssl s_client -status`; and `testssl.sh` against a listener configured like the Gorax edge.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

const BIN: Bin = testkit::bin!();

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(peer("openssl", "openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root CA, an intermediate and a leaf for localhost/127.0.0.1 whose authorityInfoAccess
/// names the OCSP responder at `responder_port`; the responder's index says the leaf is good.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(responder_port: u16) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        write(
            "ca.cnf",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        );
        write(
            "leaf.cnf",
            &format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
                 subjectAltName=DNS:localhost,IP:127.0.0.1\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{responder_port}\n"
            ),
        );
        let mut root = vec!["req", "-x509"];
        root.extend(ec);
        root.extend(["-keyout", "root.key", "-out", "root.crt", "-days", "3"]);
        root.extend(["-subj", "/CN=Switchyard OCSP test root"]);
        root.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        root.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(d, &root);
        for (name, subject, ca, ext) in [
            (
                "inter",
                "/CN=Switchyard OCSP test intermediate",
                "root",
                "ca.cnf",
            ),
            ("leaf", "/CN=localhost", "inter", "leaf.cnf"),
        ] {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
            openssl(d, &req);
            let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_crt,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    ext,
                    "-out",
                    &crt,
                ],
            );
        }
        let chain = [d.join("leaf.crt"), d.join("inter.crt")]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<String>();
        write("chain.crt", &chain);
        // The responder's database: the leaf, valid ("V").
        let field = |flag: &str| {
            let out = Command::new(peer("openssl", "openssl"))
                .args(["x509", "-noout", flag, "-in"])
                .arg(d.join("leaf.crt"))
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            text.trim().split_once('=').unwrap().1.to_string()
        };
        let serial = field("-serial");
        let end = field("-enddate"); // "Nov 30 12:00:00 2026 GMT"
        let end = openssl_date(&end);
        write(
            "index.txt",
            &format!("V\t{end}\t\t{serial}\tunknown\t/CN=localhost\n"),
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl ocsp` answering for the intermediate's certificates on `port`.
    fn responder(&self, port: u16) -> Responder {
        // (It serves one connection at a time: a probe connection would hold it up, so its
        // log says when it listens.)
        let log = self.path(&format!("responder-{port}.log"));
        let child = Command::new(peer("openssl", "openssl"))
            .args(["ocsp", "-index", "index.txt", "-port", &port.to_string()])
            .args([
                "-rsigner",
                "inter.crt",
                "-rkey",
                "inter.key",
                "-CA",
                "inter.crt",
            ])
            .args(["-ndays", "1", "-ignore_err"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("waiting for OCSP client"))
        });
        assert!(up, "openssl ocsp did not start on {port}");
        Responder(child)
    }
}

/// `Nov 30 12:00:00 2026 GMT` → `261130120000Z` (the index's UTCTime).
fn openssl_date(text: &str) -> String {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split_whitespace().collect();
    let month = months.iter().position(|m| *m == parts[0]).unwrap() + 1;
    let day: u32 = parts[1].parse().unwrap();
    let time = parts[2].replace(':', "");
    let year = &parts[3][2..];
    format!("{year}{month:02}{day:02}{time}Z")
}

/// The responder process, stopped by PID when dropped.
struct Responder(Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TLS listener like the Gorax edge's (TLS 1.2 + 1.3, ECDHE AES-GCM, h2) with the test
/// PKI's certificate as the fallback.
fn gorax_edge(pki: &Pki) -> Running {
    gorax_edge_with(pki, "")
}

/// [`gorax_edge`] with `[defaults]` keys added.
fn gorax_edge_with(pki: &Pki, defaults: &str) -> Running {
    let tls = format!(
        r#"
[defaults]
{defaults}

[tls]
min_version = "1.2"
cipher_suites = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
kx_groups = ["X25519", "P-256", "P-384"]

[[certificates]]
cert = "{}"
key = "{}"
fallback = true

[[certificates]]
cert = "{CERTS}/example.com.crt"
key = "{CERTS}/example.com.key"
"#,
        pki.path("chain.crt").display(),
        pki.path("leaf.key").display()
    );
    World::bare()
        .https()
        .listener_option("https", "h2", true)
        .catch_all_blue()
        .toml(&tls)
        .start(BIN)
}

/// `openssl s_client -status` against the listener: its whole output.
fn s_client_status(port: u16, pki: &Pki) -> String {
    let out = Command::new(peer("openssl", "openssl"))
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-status", "-CAfile"])
        .arg(pki.path("root.crt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn ocsp_responses_are_fetched_and_stapled() {
    let responder_port = port();
    let pki = Pki::new(responder_port);
    let _responder = pki.responder(responder_port);
    let running = gorax_edge(&pki);
    assert!(
        running
            .proxy
            .wait_for_log("stapled (good", Duration::from_secs(20)),
        "{}",
        running.proxy.stderr()
    );
    let out = s_client_status(running.https(), &pki);
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // The certificate without a responder URL is served unstapled, noted once at info.
    let stderr = running.proxy.stderr();
    let noted = stderr
        .lines()
        .filter(|l| {
            l.contains("INFO") && l.contains("example.com") && l.contains("names no OCSP responder")
        })
        .count();
    assert_eq!(noted, 1, "{stderr}");
}

#[test]
fn a_failed_refresh_keeps_nothing_stale_and_the_first_fetch_retries() {
    // The responder is not up yet: the proxy serves unstapled, logs, and staples once it is.
    let responder_port = port();
    let pki = Pki::new(responder_port);
    let running = gorax_edge(&pki);
    assert!(
        running
            .proxy
            .wait_for_log("served unstapled; retrying", Duration::from_secs(20)),
        "{}",
        running.proxy.stderr()
    );
    let out = s_client_status(running.https(), &pki);
    assert!(out.contains("OCSP response: no response sent"), "{out}");
    let _responder = pki.responder(responder_port);
    assert!(
        running
            .proxy
            .wait_for_log("stapled (good", Duration::from_secs(30)),
        "{}",
        running.proxy.stderr()
    );
    let out = s_client_status(running.https(), &pki);
    assert!(out.contains("Cert Status: good"), "{out}");
}

#[test]
fn testssl_finds_nothing_not_ok_on_the_gorax_edge() {
    let responder_port = port();
    let pki = Pki::new(responder_port);
    let _responder = pki.responder(responder_port);
    // Compression off: BREACH (compressed answers with secrets in them) has nothing to find.
    // With it on, testssl's only finding is "BREACH ... potentially NOT ok" (docs/config.md).
    let running = gorax_edge_with(&pki, "compression = false");
    assert!(running
        .proxy
        .wait_for_log("stapled (good", Duration::from_secs(20)));
    let started = Instant::now();
    let out = Command::new(peer("testssl", "testssl.sh"))
        .args(["--quiet", "--color", "0", "--warnings", "batch", "--sneaky"])
        // Protocols, server defaults (certificate, OCSP stapling, resumption), forward
        // secrecy, cipher categories, headers and the vulnerabilities.
        .args(["-p", "-S", "-f", "-s", "-h", "-U"])
        .arg("--add-ca")
        .arg(pki.path("root.crt"))
        .args(["--ip", "127.0.0.1"])
        .arg(format!("localhost:{}", running.https()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("testssl took {:?}\n{text}", started.elapsed());
    let not_ok: Vec<&str> = text.lines().filter(|l| l.contains("NOT ok")).collect();
    assert!(not_ok.is_empty(), "NOT ok lines: {not_ok:#?}\n{text}");
    let line = |start: &str| {
        let found = text.lines().find(|l| l.trim_start().starts_with(start));
        found
            .unwrap_or_else(|| panic!("no {start:?} line:\n{text}"))
            .to_string()
    };
    assert!(
        line("BREACH").contains("no HTTP compression (OK)"),
        "{text}"
    );
    assert!(
        line("OCSP stapling").contains("offered, not revoked"),
        "{text}"
    );
    // (Resumption is checked with s_client in tests/tls_policy.rs: testssl's probe of it
    // times out on a busy machine.)
    assert!(line("TLS 1.2").contains("offered (OK)"), "{text}");
    assert!(line("TLS 1.3").contains("offered (OK)"), "{text}");
    assert!(line("TLS 1.1").contains("not offered"), "{text}");
}
