//! The server side: accepted TCP connections become TLS connections with a
//! verified [`Caller`], handshakes running beside the accept loop so that a
//! slow or silent client never holds up the next one.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use meridian_pki::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::source::TlsSource;

/// Who is on the other end of a connection: the identity its certificate
/// proved. tonic puts it into every request's extensions
/// (`req.extensions().get::<Caller>()`); it is absent on a plaintext
/// (`--insecure`) listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    pub remote: Option<SocketAddr>,
}

/// A TLS connection whose client certificate was verified.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    caller: Caller,
}

impl TlsConn {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = Caller;
    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

/// A handshake that has not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's
/// backlog, so a flood of silent clients costs bounded memory.
const MAX_HANDSHAKES: usize = 512;

/// The verified connections of `listener`, for tonic's
/// `serve_with_incoming`. Each handshake uses the source's config at the
/// time it starts, so a reload applies to new connections only and never
/// cuts an existing one. The accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    source: Arc<TlsSource>,
) -> impl tokio_stream::Stream<Item = io::Result<TlsConn>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<TlsConn>>(64);
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = tx.closed() => return,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    warn!(tls = source.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // See the plaintext listener: Nagle stalls small gRPC frames.
            let _ = tcp.set_nodelay(true);
            let Some(config) = source.server_config() else {
                return;
            };
            let tx = tx.clone();
            let source = source.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let shake =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp))
                        .await;
                let conn = match shake {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        source.refused.fetch_add(1, Ordering::Relaxed);
                        info!(tls = source.name(), %remote, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        source.refused.fetch_add(1, Ordering::Relaxed);
                        debug!(tls = source.name(), %remote, "TLS handshake timed out");
                        return;
                    }
                };
                let domain = source.material().domain.clone();
                let identity = conn
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|der| meridian_pki::inspect(der, &domain).ok())
                    .map(|info| info.identity);
                // The verifier already insisted on an identity; without one
                // (a reload changed the trust domain mid-handshake) the
                // connection is dropped rather than let in unnamed.
                let Some(identity) = identity else {
                    source.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                debug!(tls = source.name(), %remote, caller = %identity, "TLS connection");
                let caller = Caller {
                    identity,
                    remote: Some(remote),
                };
                let _ = tx
                    .send(Ok(TlsConn {
                        inner: conn,
                        caller,
                    }))
                    .await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
