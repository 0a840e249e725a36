//! A real ACME CA for the tests: Debian's pebble, with its directory certificate generated here and its DNS pointed at a test DNS server.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::{peer, port, wait_until};

/// How pebble is started.
#[derive(Clone, Copy)]
pub struct CaOptions {
    /// `certificateValidityPeriod` in seconds (pebble's default when `None`: about 5 years).
    pub validity: Option<u64>,
    /// PEBBLE_WFE_NONCEREJECT: percentage of good nonces refused.
    pub nonce_reject: u32,
    /// Require external account binding with [`EAB_KID`] and [`EAB_KEY`].
    pub eab: bool,
}

pub const EAB_KID: &str = "kid-1";
/// An HMAC key as a CA hands it out: base64url.
pub const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// pebble's defaults: certificates valid for years, no nonce refused, no EAB.
pub const NORMAL: CaOptions = CaOptions {
    validity: None,
    nonce_reject: 0,
    eab: false,
};

/// A pebble process (killed by PID on drop), restartable on the same ports.
pub struct Pebble {
    dir: tempfile::TempDir,
    child: Option<Child>,
    listen: u16,
    management: u16,
    /// The DNS server pebble resolves with (`-dnsserver`): a pebble-challtestsrv.
    dns: u16,
    http_port: u16,
    tls_port: u16,
    /// Log files of every pebble started so far (one per start).
    logs: Vec<PathBuf>,
}

impl Pebble {
    /// Starts pebble, resolving names with the DNS server on 127.0.0.1:`dns`; its validation
    /// authority connects to port `http_port` (HTTP-01) and `tls_port` (TLS-ALPN-01).
    pub fn start(dns: u16, http_port: u16, tls_port: u16, options: CaOptions) -> Pebble {
        peer("pebble", "pebble");
        let dir = tempfile::tempdir().expect("temp dir");
        // The directory's own HTTPS certificate (Debian ships none): a CA and a leaf for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "switchyard test ACME directory CA",
        );
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf parameters")
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("leaf certificate");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write pebble file")
        };
        write("directory-ca.pem", ca_cert.pem());
        write("cert.pem", leaf.pem());
        write("key.pem", leaf_key.serialize_pem());
        let mut pebble = Pebble {
            dir,
            child: None,
            listen: port(),
            management: port(),
            dns,
            http_port,
            tls_port,
            logs: Vec::new(),
        };
        // Another process on the machine may bind a port before pebble (which spends a moment
        // generating keys) does: then pebble exits, and gets other ports.
        for _ in 0..5 {
            if pebble.try_start(options) {
                return pebble;
            }
            (pebble.listen, pebble.management) = (port(), port());
        }
        panic!("pebble did not start:\n{}", pebble.log());
    }

    /// (Re)starts pebble on the same ports. A new pebble has a new root and forgets every
    /// account and order.
    pub fn restart(&mut self, options: CaOptions) {
        assert!(
            self.try_start(options),
            "pebble did not start:\n{}",
            self.log()
        );
    }

    fn try_start(&mut self, options: CaOptions) -> bool {
        assert!(self.child.is_none(), "pebble already runs");
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.listen),
            "managementListenAddress": format!("127.0.0.1:{}", self.management),
            "certificate": self.dir.path().join("cert.pem"),
            "privateKey": self.dir.path().join("key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = options.validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        if options.eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ EAB_KID: EAB_KEY });
        }
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble.json");
        let log = format!("pebble-{}.log", self.logs.len());
        self.logs.push(self.dir.path().join(&log));
        let child = Command::new(peer("pebble", "pebble"))
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject.to_string())
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log_file(self.dir.path(), &log))
            .stderr(log_file(self.dir.path(), &log))
            .spawn()
            .expect("start pebble");
        self.child = Some(child);
        let ports = [self.listen, self.management];
        let mut exited = false;
        let up = wait_until(Duration::from_secs(15), || {
            exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            exited
                || ports
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        assert!(up, "pebble does not listen on {ports:?}:\n{}", self.log());
        // Something listening there may be another test's socket: ask for the directory.
        let answers = !exited
            && self
                .https()
                .get(self.directory())
                .send()
                .is_ok_and(|r| r.status() == 200);
        if !answers {
            self.stop();
        }
        answers
    }

    /// Stops pebble; nothing else is handed its ports (see `testkit::port`) until it starts
    /// again on them.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A temp dir that lives as long as this pebble.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen)
    }

    /// The PEM file the proxy trusts for the directory's HTTPS (`ca_root`).
    pub fn directory_ca(&self) -> PathBuf {
        self.dir.path().join("directory-ca.pem")
    }

    fn https(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read(self.directory_ca()).expect("read directory-ca.pem");
        reqwest::blocking::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("parse CA"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build client")
    }

    /// The root pebble signs certificates with (a new one at each start).
    pub fn roots(&self) -> RootCertStore {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let pem = self
            .https()
            .get(url)
            .send()
            .and_then(|r| r.text())
            .expect("pebble's root");
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("root");
        }
        assert!(!roots.is_empty(), "no root from pebble: {pem}");
        roots
    }

    /// The root as PEM, for clients other than rustls (curl, openssl).
    pub fn roots_pem(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        self.https()
            .get(url)
            .send()
            .and_then(|r| r.text())
            .expect("pebble's root")
    }

    /// New orders pebble received, over all its starts (its log has a line per request).
    pub fn new_orders(&self) -> usize {
        self.logs
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("POST /order-plz"))
                    .count()
            })
            .sum()
    }

    /// Everything pebble logged, over all its starts.
    pub fn log(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- pebble log ---\n{}", self.log());
        }
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("open log file")
}
