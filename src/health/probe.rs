//! One health probe: a GET to one server over its pool's transport (plain or TLS, HTTP/1.1 or HTTP/2), with the server's name as Host.

use std::net::SocketAddr;
use std::time::Duration;

use pingora_rustls::{ServerName, TlsConnector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HealthCheck, Protocol, Transport};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("invalid TLS server name \"{0}\"")]
    ServerName(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("HTTP/2 error: {0}")]
    H2(h2::Error),
    #[error("not an HTTP response")]
    Malformed,
    #[error("status {0} is not the expected one")]
    Status(u16),
}

/// The server a probe goes to, and how.
pub struct Endpoint<'a> {
    pub addr: SocketAddr,
    /// The server's name: the SNI, and the Host unless the check names one.
    pub name: &'a str,
    pub transport: &'a Transport,
}

impl Endpoint<'_> {
    /// A plain HTTP/1.1 server at `addr`, called by its address.
    pub fn plain(addr: SocketAddr, name: &str) -> Endpoint<'_> {
        static PLAIN: Transport = Transport {
            protocol: Protocol::H1,
            tls: None,
        };
        Endpoint {
            addr,
            name,
            transport: &PLAIN,
        }
    }
}

/// One GET of `check.path`; Ok(status) when the status is the expected one.
pub async fn probe(to: &Endpoint<'_>, check: &HealthCheck) -> Result<u16, ProbeError> {
    let host = match &check.host {
        Some(host) => host.clone(),
        None => to.transport.authority(to.name, to.addr.port()),
    };
    let status = tokio::time::timeout(check.timeout, status(to, &host, &check.path))
        .await
        .map_err(|_| ProbeError::Timeout(check.timeout))??;
    let expected = match check.expect_status {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    if expected {
        Ok(status)
    } else {
        Err(ProbeError::Status(status))
    }
}

/// Connects (TLS with the pool's own client config) and asks.
async fn status(to: &Endpoint<'_>, host: &str, path: &str) -> Result<u16, ProbeError> {
    let tcp = TcpStream::connect(to.addr)
        .await
        .map_err(ProbeError::Connect)?;
    let h2 = to.transport.protocol != Protocol::H1;
    let Some(tls) = &to.transport.tls else {
        return ask(tcp, h2, "http", host, path).await;
    };
    let sni = tls.sni.as_deref().unwrap_or(to.name);
    let server_name =
        ServerName::try_from(sni.to_string()).map_err(|_| ProbeError::ServerName(sni.into()))?;
    let stream = TlsConnector::from(tls.config.clone())
        .connect(server_name, tcp)
        .await
        .map_err(ProbeError::Tls)?;
    // An h2 pool's server may still pick HTTP/1.1 by ALPN (the proxy falls back the same way).
    let h2 = h2 && stream.get_ref().1.alpn_protocol() == Some(b"h2");
    ask(stream, h2, "https", host, path).await
}

async fn ask<S>(
    stream: S,
    h2: bool,
    scheme: &str,
    host: &str,
    path: &str,
) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        ask_h2(stream, scheme, host, path).await
    } else {
        ask_h1(stream, host, path).await
    }
}

async fn ask_h1<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> Result<u16, ProbeError> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let mut buf = [0u8; 64];
    let mut len = 0;
    // The status line is all we need: "HTTP/1.1 200 ..." fits in the first bytes.
    while len < 12 {
        let n = stream.read(&mut buf[len..]).await.map_err(ProbeError::Io)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    parse_status(&buf[..len]).ok_or(ProbeError::Malformed)
}

async fn ask_h2<S>(stream: S, scheme: &str, host: &str, path: &str) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(stream)
        .await
        .map_err(ProbeError::H2)?;
    // The connection is driven beside the request and ends with it, also when the probe's
    // timeout drops this future.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    async {
        let mut send = send.ready().await.map_err(ProbeError::H2)?;
        let request = http::Request::get(format!("{scheme}://{host}{path}"))
            .header(http::header::USER_AGENT, "switchyard-health-check")
            .body(())
            .map_err(|_| ProbeError::Malformed)?;
        let (response, _) = send.send_request(request, true).map_err(ProbeError::H2)?;
        let response = response.await.map_err(ProbeError::H2)?;
        Ok(response.status().as_u16())
    }
    .await
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    if !text.starts_with("HTTP/1.") {
        return None;
    }
    text.get(9..12)?.parse().ok()
}
