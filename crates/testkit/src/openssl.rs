//! `openssl s_client` as a real TLS client: what one handshake agreed on, as it prints it.

use std::process::{Command, Stdio};

use crate::peer;

/// What `openssl s_client` printed about one handshake.
pub struct Handshake {
    /// Its stdout and stderr.
    pub out: String,
}

impl Handshake {
    /// A handshake with 127.0.0.1:`port` for `server_name` (SNI), trusting `ca_file`, with
    /// `args` added (`-tls1_2`, `-cipher ...`). With `request`, sends it after the handshake and
    /// reads until the server closes, so that TLS 1.3 session tickets are read too.
    pub fn run(
        port: u16,
        server_name: &str,
        ca_file: &str,
        args: &[&str],
        request: Option<&str>,
    ) -> Handshake {
        use std::io::Write;
        let openssl = peer("openssl", "openssl");
        let mut child = Command::new(openssl)
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", server_name, "-CAfile", ca_file])
            .args(args)
            .args(request.map(|_| "-ign_eof"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl s_client");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(request) = request {
            stdin
                .write_all(request.as_bytes())
                .expect("write the request");
        }
        drop(stdin);
        let output = child.wait_with_output().expect("openssl s_client");
        let mut out = String::from_utf8_lossy(&output.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&output.stderr));
        Handshake { out }
    }

    /// The suite agreed on, `None` when the handshake failed.
    pub fn cipher(&self) -> Option<&str> {
        let line = self.out.lines().find(|l| l.contains(", Cipher is "))?;
        let cipher = line.rsplit("Cipher is ").next()?.trim();
        (cipher != "(NONE)").then_some(cipher)
    }

    /// `Server Temp Key: X25519, 253 bits` → `X25519`.
    pub fn group(&self) -> Option<&str> {
        let line = self
            .out
            .lines()
            .find(|l| l.starts_with("Server Temp Key:"))?;
        line["Server Temp Key:".len()..]
            .split(',')
            .next()
            .map(str::trim)
    }
}
