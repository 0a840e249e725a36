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

use std::io::Result as IoResult;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use crate::listeners::tls::Acceptor;
use crate::protocols::raw_connect::ProxyDigest;
use crate::protocols::tls::TlsRef;
use crate::protocols::{tls::SslDigest, Peek, TimingDigest, UniqueIDType};
use crate::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, Ssl, UniqueID, ALPN,
};
use crate::utils::tls::get_organization_serial_bytes;
use pingora_error::ErrorType::{AcceptError, ConnectError, InternalError, TLSHandshakeFailure};
use pingora_error::{OkOrErr, OrErr, Result};
use pingora_rustls::TlsStream as RusTlsStream;
use pingora_rustls::{hash_certificate, NoDebug};
use pingora_rustls::{Accept, Connect, ServerName, TlsConnector};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use x509_parser::nom::AsBytes;

#[derive(Debug)]
pub struct InnerStream<T> {
    pub(crate) stream: Option<RusTlsStream<T>>,
    // Boxed: each handshake future holds a whole rustls connection (about 1.5 KB), and only one
    // of the three is ever in use. Inline, all three stayed in every connection for its whole
    // life, idle keep-alive waits included (4,752 bytes where the established stream alone
    // takes 1,568).
    connect: NoDebug<Option<Box<Connect<T>>>>,
    accept: NoDebug<Option<Box<Accept<T>>>>,
}

/// The TLS connection
#[derive(Debug)]
pub struct TlsStream<T> {
    tls: InnerStream<T>,
    digest: Option<Arc<SslDigest>>,
    ssl: Option<TlsRef>,
    timing: TimingDigest,
    /// Plaintext written but not yet given to rustls, so that small writes (an HTTP/1 head,
    /// then a small body) leave in one TLS record at the next flush: see [`COALESCE_LIMIT`].
    pending: Vec<u8>,
}

/// Writes are held back, up to this many bytes, until a flush, a shutdown or a write that
/// would go past it. Rustls seals each write it is given into records of its own (a 22-byte
/// header and tag and one AEAD seal each), so an HTTP/1 response written as a head and a body
/// took two records where one does. A write that would go past the limit is given to rustls
/// together with what is held, in one vectored write, without a copy. The limit is the l4
/// stream's write buffer (`DEFAULT_L4_WRITE_BUFFER_SIZE`): what a plain connection holds
/// back until a flush, a TLS one now holds back too.
const COALESCE_LIMIT: usize = crate::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE;

impl<T> TlsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Create a new TLS connection from the given `stream`
    ///
    /// Using RustTLS the stream is only returned after the handshake.
    /// The caller does therefor not need to perform [`Self::connect()`].
    pub async fn from_connector(connector: &TlsConnector, domain: &str, stream: T) -> Result<Self> {
        let server = ServerName::try_from(domain).or_err_with(InternalError, || {
            format!("Invalid Input: Failed to parse domain: {domain}")
        })?;

        let tls = InnerStream::from_connector(connector, server, stream)
            .await
            .explain_err(TLSHandshakeFailure, |e| format!("tls stream error: {e}"))?;

        Ok(TlsStream {
            tls,
            digest: None,
            ssl: None,
            timing: Default::default(),
            pending: Vec::new(),
        })
    }

    /// Create a new TLS connection from the given `stream`
    ///
    /// Using RustTLS the stream is only returned after the handshake.
    /// The caller does therefor not need to perform [`Self::accept()`].
    pub(crate) async fn from_acceptor(acceptor: &Acceptor, stream: T) -> Result<Self> {
        let tls = InnerStream::from_acceptor(acceptor, stream)
            .await
            .explain_err(TLSHandshakeFailure, |e| format!("tls stream error: {e}"))?;

        Ok(TlsStream {
            tls,
            digest: None,
            ssl: None,
            timing: Default::default(),
            pending: Vec::new(),
        })
    }
}

impl<S> GetSocketDigest for TlsStream<S>
where
    S: GetSocketDigest,
{
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tls.get_socket_digest()
    }
    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.tls.set_socket_digest(socket_digest)
    }
}

impl<S> GetTimingDigest for TlsStream<S>
where
    S: GetTimingDigest,
{
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        let mut ts_vec = self.tls.get_timing_digest();
        ts_vec.push(Some(self.timing.clone()));
        ts_vec
    }
    fn get_read_pending_time(&self) -> Duration {
        self.tls.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.tls.get_write_pending_time()
    }
}

impl<S> GetProxyDigest for TlsStream<S>
where
    S: GetProxyDigest,
{
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.tls.get_proxy_digest()
    }
}

impl<T> TlsStream<T> {
    pub fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.digest.clone()
    }

    /// Attempts to obtain a mutable reference to the SslDigest.
    /// This method returns `None` if the SslDigest is currently held by other references.
    pub(crate) fn ssl_digest_mut(&mut self) -> Option<&mut SslDigest> {
        Arc::get_mut(self.digest.as_mut()?)
    }
}

impl<T> Deref for TlsStream<T> {
    type Target = InnerStream<T>;

    fn deref(&self) -> &Self::Target {
        &self.tls
    }
}

impl<T> DerefMut for TlsStream<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tls
    }
}

impl<T> TlsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Connect to the remote TLS server as a client
    pub(crate) async fn connect(&mut self) -> Result<()> {
        let handshake_start = Instant::now();
        self.tls.connect().await?;
        self.timing.establishment_duration = Some(handshake_start.elapsed());
        self.timing.established_ts = SystemTime::now();
        self.digest = self.tls.digest();
        self.ssl = self.tls.tls_ref();
        Ok(())
    }

    /// Finish the TLS handshake from client as a server
    pub(crate) async fn accept(&mut self) -> Result<()> {
        let handshake_start = Instant::now();
        self.tls.accept().await?;
        self.timing.establishment_duration = Some(handshake_start.elapsed());
        self.timing.established_ts = SystemTime::now();
        self.digest = self.tls.digest();
        self.ssl = self.tls.tls_ref();
        Ok(())
    }
}

impl<T> AsyncRead for TlsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<IoResult<()>> {
        Pin::new(&mut self.tls.stream.as_mut().unwrap()).poll_read(cx, buf)
    }
}

impl<T> TlsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Gives rustls everything held back. The buffer is freed once empty: an idle connection
    /// keeps none.
    fn poll_write_pending(&mut self, cx: &mut Context) -> Poll<IoResult<()>> {
        while !self.pending.is_empty() {
            let stream = Pin::new(self.tls.stream.as_mut().unwrap());
            match ready!(stream.poll_write(cx, &self.pending))? {
                0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                n => drop(self.pending.drain(..n)),
            }
        }
        self.pending = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Holds `bufs` back: they fit under the limit with what is held already.
    fn hold<'a>(&mut self, bufs: impl IntoIterator<Item = &'a [u8]>) -> usize {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(COALESCE_LIMIT);
        }
        let before = self.pending.len();
        for buf in bufs {
            self.pending.extend_from_slice(buf);
        }
        self.pending.len() - before
    }
}

impl<T> AsyncWrite for TlsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context, buf: &[u8]) -> Poll<IoResult<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.pending.len() + buf.len() <= COALESCE_LIMIT {
            return Poll::Ready(Ok(this.hold([buf])));
        }
        while !this.pending.is_empty() {
            // What is held and `buf` go to rustls together, to be sealed into the same records.
            let held = this.pending.len();
            let bufs = [
                std::io::IoSlice::new(&this.pending),
                std::io::IoSlice::new(buf),
            ];
            let stream = Pin::new(this.tls.stream.as_mut().unwrap());
            match ready!(stream.poll_write_vectored(cx, &bufs))? {
                0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                n if n < held => drop(this.pending.drain(..n)),
                n => {
                    this.pending = Vec::new();
                    if n > held {
                        return Poll::Ready(Ok(n - held));
                    }
                }
            }
        }
        if buf.len() <= COALESCE_LIMIT {
            return Poll::Ready(Ok(this.hold([buf])));
        }
        Pin::new(this.tls.stream.as_mut().unwrap()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<IoResult<()>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(self.tls.stream.as_mut().unwrap()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<IoResult<()>> {
        ready!(self.poll_write_pending(cx))?;
        Pin::new(self.tls.stream.as_mut().unwrap()).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<IoResult<usize>> {
        // Small pieces that follow something held back (a chunk after an HTTP/1 head) join it.
        // Otherwise the writer (h2) has gathered its frames itself: they go to rustls as they
        // come, after anything held back.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.pending.is_empty() && self.pending.len() + total <= COALESCE_LIMIT {
            return Poll::Ready(Ok(self.hold(bufs.iter().map(|b| &**b))));
        }
        ready!(self.poll_write_pending(cx))?;
        Pin::new(self.tls.stream.as_mut().unwrap()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl<T> UniqueID for TlsStream<T>
where
    T: UniqueID,
{
    fn id(&self) -> UniqueIDType {
        self.tls.stream.as_ref().unwrap().get_ref().0.id()
    }
}

impl<T> Ssl for TlsStream<T> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.ssl.as_ref()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        let st = self.tls.stream.as_ref();
        if let Some(stream) = st {
            let proto = stream.get_ref().1.alpn_protocol();
            match proto {
                None => None,
                Some(raw) => ALPN::from_wire_selected(raw),
            }
        } else {
            None
        }
    }
}

/// Create a new TLS connection from the given `stream`
///
/// The caller needs to perform [`Self::connect()`] or [`Self::accept()`] to perform TLS
/// handshake after.
impl<T: AsyncRead + AsyncWrite + Unpin> InnerStream<T> {
    pub(crate) async fn from_connector(
        connector: &TlsConnector,
        server: ServerName<'_>,
        stream: T,
    ) -> Result<Self> {
        let connect = connector.connect(server.to_owned(), stream);
        Ok(InnerStream {
            accept: None.into(),
            connect: Some(Box::new(connect)).into(),
            stream: None,
        })
    }

    pub(crate) async fn from_acceptor(acceptor: &Acceptor, stream: T) -> Result<Self> {
        let accept = acceptor.current().accept(stream);

        Ok(InnerStream {
            accept: Some(Box::new(accept)).into(),
            connect: None.into(),
            stream: None,
        })
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> InnerStream<T> {
    /// Connect to the remote TLS server as a client
    pub(crate) async fn connect(&mut self) -> Result<()> {
        let connect = &mut (*self.connect);
        let connect = connect.take().or_err(
            ConnectError,
            "TLS connect not available to perform handshake.",
        )?;

        let stream = connect
            .await
            .or_err(TLSHandshakeFailure, "tls connect error")?;
        self.stream = Some(RusTlsStream::Client(stream));
        Ok(())
    }

    /// Finish the TLS handshake from client as a server
    /// no-op implementation within Rustls, handshake is performed during creation of stream.
    pub(crate) async fn accept(&mut self) -> Result<()> {
        let accept = &mut (*self.accept);
        let accept = accept.take().or_err(
            AcceptError,
            "TLS accept not available to perform handshake.",
        )?;

        let stream = accept
            .await
            .explain_err(TLSHandshakeFailure, |e| format!("tls connect error: {e}"))?;
        self.stream = Some(RusTlsStream::Server(stream));
        Ok(())
    }

    pub(crate) fn digest(&mut self) -> Option<Arc<SslDigest>> {
        Some(Arc::new(SslDigest::from_stream(&self.stream)))
    }

    pub(crate) fn tls_ref(&self) -> Option<TlsRef> {
        let stream = self.stream.as_ref()?;
        let (_io, session) = stream.get_ref();
        let peer_certs = session.peer_certificates().map(|certs| certs.to_vec());
        let cipher = session
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str());
        let version = session.protocol_version().and_then(|v| v.as_str());
        let server_name = match stream {
            RusTlsStream::Server(s) => s.get_ref().1.server_name().map(|n| n.to_string()),
            RusTlsStream::Client(_) => None,
        };
        Some(TlsRef {
            peer_certs,
            cipher,
            version,
            server_name,
        })
    }
}

impl<S> GetSocketDigest for InnerStream<S>
where
    S: GetSocketDigest,
{
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        if let Some(stream) = self.stream.as_ref() {
            stream.get_ref().0.get_socket_digest()
        } else {
            None
        }
    }
    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.stream
            .as_mut()
            .unwrap()
            .get_mut()
            .0
            .set_socket_digest(socket_digest)
    }
}

impl<S> GetTimingDigest for InnerStream<S>
where
    S: GetTimingDigest,
{
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.stream
            .as_ref()
            .unwrap()
            .get_ref()
            .0
            .get_timing_digest()
    }
}

impl<S> GetProxyDigest for InnerStream<S>
where
    S: GetProxyDigest,
{
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        if let Some(stream) = self.stream.as_ref() {
            stream.get_ref().0.get_proxy_digest()
        } else {
            None
        }
    }
}

impl SslDigest {
    fn from_stream<T>(stream: &Option<RusTlsStream<T>>) -> Self {
        let stream = stream.as_ref().unwrap();
        let (_io, session) = stream.get_ref();
        let protocol = session.protocol_version();
        let cipher_suite = session.negotiated_cipher_suite();
        let peer_certificates = session.peer_certificates();

        let cipher = cipher_suite
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or_default();

        let version = protocol
            .and_then(|proto| proto.as_str())
            .unwrap_or_default();

        let cert_digest = peer_certificates
            .and_then(|certs| certs.first())
            .map(|cert| hash_certificate(cert))
            .unwrap_or_default();

        let (organization, serial_number) = peer_certificates
            .and_then(|certs| certs.first())
            .map(|cert| get_organization_serial_bytes(cert.as_bytes()))
            .transpose()
            .ok()
            .flatten()
            .map(|(organization, serial)| (organization, Some(serial)))
            .unwrap_or_default();

        SslDigest::new(cipher, version, organization, serial_number, cert_digest)
    }
}

#[async_trait::async_trait]
impl<S: Peek + Send> Peek for TlsStream<S> {
    async fn wait_readable(&mut self) -> std::io::Result<bool> {
        let Some(stream) = self.tls.stream.as_mut() else {
            return Ok(false);
        };
        // rustls holds decrypted data it has not handed out yet: readable now. Otherwise the
        // next TLS record has to come from the socket.
        let (io, wants_read) = match stream {
            RusTlsStream::Server(s) => {
                let (io, conn) = s.get_mut();
                (io, conn.wants_read())
            }
            RusTlsStream::Client(s) => {
                let (io, conn) = s.get_mut();
                (io, conn.wants_read())
            }
        };
        if !wants_read {
            return Ok(true);
        }
        io.wait_readable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listeners::tls::TlsSettings;
    use pingora_rustls::{load_ca_file_into_store, ClientConfig, RootCertStore, TlsConnector};
    use std::io::IoSlice;
    use std::sync::Mutex;
    use std::task::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// The client's end of the connection, keeping every byte it reads off the wire.
    struct Tap {
        io: DuplexStream,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncRead for Tap {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<IoResult<()>> {
            let before = buf.filled().len();
            let res = Pin::new(&mut self.io).poll_read(cx, buf);
            let read = &buf.filled()[before..];
            self.seen.lock().unwrap().extend_from_slice(read);
            res
        }
    }

    impl AsyncWrite for Tap {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<IoResult<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The lengths of the TLS records in `wire`.
    fn records(wire: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::new();
        let mut at = 0;
        while at + 5 <= wire.len() {
            let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
            lengths.push(len);
            at += 5 + len;
        }
        assert_eq!(at, wire.len(), "the wire ends inside a record");
        lengths
    }

    /// A TLS 1.3 record's length for `n` bytes of data: the content type byte and the tag.
    fn sealed(n: usize) -> usize {
        n + 1 + 16
    }

    /// A handshaken server stream, the client reading from it, and what the client read off
    /// the wire, with the handshake and a first exchange already in it.
    async fn connected() -> (
        TlsStream<DuplexStream>,
        impl AsyncRead + AsyncWrite + Unpin,
        Arc<Mutex<Vec<u8>>>,
    ) {
        // The workspace's test certificates (Switchyard's `certs/`; this crate ships no keys).
        let certs = |file: &str| format!("{}/../../certs/{file}", env!("CARGO_MANIFEST_DIR"));
        let settings =
            TlsSettings::intermediate(&certs("localhost.crt"), &certs("localhost.key")).unwrap();
        let acceptor = settings.build();
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tap = Tap {
            io: client_io,
            seen: seen.clone(),
        };
        let mut roots = RootCertStore::empty();
        load_ca_file_into_store(certs("test-ca.crt"), &mut roots).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let name = pingora_rustls::ServerName::try_from("localhost").unwrap();
        let client = tokio::spawn(async move { connector.connect(name, tap).await.unwrap() });
        let mut server = TlsStream::from_acceptor(&acceptor, server_io)
            .await
            .unwrap();
        server.accept().await.unwrap();
        let mut client = client.await.unwrap();
        // Whatever the server sends after its handshake (session tickets) goes before this.
        server.write_all(b"hello").await.unwrap();
        server.flush().await.unwrap();
        let mut hello = [0u8; 5];
        client.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        (server, client, seen)
    }

    /// Takes what the client read off the wire so far.
    fn take(seen: &Mutex<Vec<u8>>) -> Vec<u8> {
        std::mem::take(&mut *seen.lock().unwrap())
    }

    /// The next byte the client can read now, without waiting, if any.
    fn next_byte_now(client: &mut (impl AsyncRead + Unpin)) -> Option<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match Pin::new(client).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => buf.filled().first().copied(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn small_writes_leave_in_one_record_at_the_flush() {
        let (mut server, mut client, seen) = connected().await;
        take(&seen);

        let head = vec![b'h'; 300];
        let body = vec![b'b'; 100];
        server.write_all(&head).await.unwrap();
        server.write_all(&body).await.unwrap();
        assert_eq!(
            next_byte_now(&mut client),
            None,
            "nothing leaves before the flush"
        );
        assert!(take(&seen).is_empty());

        server.flush().await.unwrap();
        let mut got = vec![0u8; 400];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [head, body].concat());
        assert_eq!(records(&take(&seen)), [sealed(400)]);
        // Once given to rustls, nothing stays allocated for the idle connection.
        assert_eq!(server.pending.capacity(), 0);
    }

    #[tokio::test]
    async fn a_large_write_takes_what_is_held_into_its_records() {
        let (mut server, mut client, seen) = connected().await;
        take(&seen);

        let head = vec![b'h'; 200];
        let body = vec![b'b'; 6000];
        server.write_all(&head).await.unwrap();
        server.write_all(&body).await.unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; 6200];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [head, body].concat());
        assert_eq!(records(&take(&seen)), [sealed(6200)]);

        // Larger than one record can hold: rustls splits it, held bytes first.
        let head = vec![b'H'; 200];
        let body = vec![b'B'; 20000];
        server.write_all(&head).await.unwrap();
        server.write_all(&body).await.unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; 20200];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [head, body].concat());
        assert_eq!(
            records(&take(&seen)),
            [sealed(16384), sealed(20200 - 16384)]
        );
    }

    #[tokio::test]
    async fn vectored_pieces_join_what_is_held_or_follow_it() {
        let (mut server, mut client, seen) = connected().await;
        take(&seen);

        // A chunk after a head: joins it.
        server.write_all(&[b'h'; 100]).await.unwrap();
        let chunk = [
            IoSlice::new(b"5\r\n"),
            IoSlice::new(b"hello"),
            IoSlice::new(b"\r\n"),
        ];
        let n = server.write_vectored(&chunk).await.unwrap();
        assert_eq!(n, 10);
        server.flush().await.unwrap();
        let mut got = vec![0u8; 110];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[100..], b"5\r\nhello\r\n");
        assert_eq!(records(&take(&seen)), [sealed(110)]);

        // Nothing held: a vectored write (h2's frames) goes to rustls as it comes.
        let frames = [IoSlice::new(&[b'f'; 50]), IoSlice::new(&[b'g'; 60])];
        let n = server.write_vectored(&frames).await.unwrap();
        assert_eq!(n, 110);
        assert_eq!(
            next_byte_now(&mut client),
            Some(b'f'),
            "a vectored write is not held back"
        );
        server.flush().await.unwrap();
        let mut got = vec![0u8; 109];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [&[b'f'; 49][..], &[b'g'; 60]].concat());
        assert_eq!(records(&take(&seen)), [sealed(110)]);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held_first() {
        let (mut server, mut client, _seen) = connected().await;
        server.write_all(b"last words").await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last words");
    }

    /// Only the established stream takes room in a connection: the handshake futures, a whole
    /// rustls connection each, are boxed and dropped once the handshake is done. Inline, they
    /// made a TLS stream over an l4 one 4,752 bytes where its rustls stream takes 1,568.
    #[tokio::test]
    async fn a_handshaken_stream_holds_one_rustls_connection_not_three() {
        use crate::protocols::l4::stream::Stream;
        let established = std::mem::size_of::<Option<RusTlsStream<Stream>>>();
        let whole = std::mem::size_of::<TlsStream<Stream>>();
        assert!(
            whole < established + 256,
            "a TLS stream takes {whole} bytes, its rustls stream {established}"
        );

        let (server, _client, _seen) = connected().await;
        assert!(server.tls.stream.is_some());
        assert!(server.tls.accept.is_none() && server.tls.connect.is_none());
    }
}
