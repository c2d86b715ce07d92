//! The client side: a connector for tonic channels that dials TCP, then
//! TLS with the source's current certificate, checking the server's
//! identity.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::source::{Expect, TlsSource};

/// A tonic connector (`Endpoint::connect_with_connector`). Give the
/// endpoint an `http://` URI: this connector does the TLS.
#[derive(Clone)]
pub struct Connector {
    source: Arc<TlsSource>,
    expect: Expect,
    present_cert: bool,
}

impl Connector {
    pub fn new(source: Arc<TlsSource>, expect: Expect) -> Connector {
        Connector {
            source,
            expect,
            present_cert: true,
        }
    }

    /// Checks the server as [`Connector::new`] does but presents no
    /// certificate: what a caller without credentials gets (tests of the
    /// listeners' refusal).
    pub fn without_certificate(source: Arc<TlsSource>, expect: Expect) -> Connector {
        Connector {
            source,
            expect,
            present_cert: false,
        }
    }
}

type Io = TokioIo<TlsStream<TcpStream>>;

/// How long [`Connector::probe`] waits for the server's first bytes.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Connector {
    /// Whether `addr` takes this client's certificate, asked on a fresh
    /// connection: the handshake, then a read of the server's first record.
    /// In TLS 1.3 a server that refuses the client's certificate says so
    /// only after the client's handshake is done, in an alert that a
    /// request racing it often loses to a broken pipe; reading first gets
    /// the alert itself. `Some(reason)` when TLS refused the connection
    /// either way; `None` when the server spoke, or for any other failure.
    /// For diagnosing a failed call only: it costs a connection.
    pub async fn probe(&self, addr: &str) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let uri: http::Uri = plain_uri(addr).parse().ok()?;
        let conn = match tower_service::Service::call(&mut self.clone(), uri).await {
            Ok(c) => c,
            Err(e) => return handshake_failure(&e),
        };
        let mut tls = conn.into_inner();
        let mut first = [0u8; 1];
        match tokio::time::timeout(PROBE_WAIT, tls.read(&mut first)).await {
            Ok(Err(e)) => handshake_failure(&e),
            Ok(Ok(0)) => Some("the server closed the connection right after the handshake".into()),
            Ok(Ok(_)) | Err(_) => None,
        }
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Io;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let source = self.source.clone();
        let expect = self.expect;
        let present_cert = self.present_cert;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let config = match present_cert {
                true => source.client_config(expect),
                false => source.client_config_without_cert(expect),
            }
            .map_err(io::Error::other)?;
            // The name is only sent as SNI: the verifier checks identities.
            let name = ServerName::try_from(host)
                .unwrap_or_else(|_| ServerName::try_from("meridian").expect("a valid DNS name"));
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// `addr` (`host:port`, `http://` or `https://`) as the URI an endpoint
/// over [`Connector`] takes.
pub fn plain_uri(addr: &str) -> String {
    let bare = addr
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    format!("http://{bare}")
}

/// Connects `endpoint`, over TLS when `tls` is given.
pub async fn connect(
    endpoint: Endpoint,
    tls: Option<(&Arc<TlsSource>, Expect)>,
) -> Result<Channel, tonic::transport::Error> {
    match tls {
        Some((s, expect)) => {
            endpoint
                .connect_with_connector(Connector::new(s.clone(), expect))
                .await
        }
        None => endpoint.connect().await,
    }
}

/// [`connect`], connecting on first use.
pub fn connect_lazy(endpoint: Endpoint, tls: Option<(&Arc<TlsSource>, Expect)>) -> Channel {
    match tls {
        Some((s, expect)) => {
            endpoint.connect_with_connector_lazy(Connector::new(s.clone(), expect))
        }
        None => endpoint.connect_lazy(),
    }
}

/// Why a connection failed in the TLS handshake, if that is what an
/// error (a connect error, or a call's status) comes down to: our check
/// of the server refused it, or the server refused our certificate (an
/// alert, which TLS 1.3 delivers on the first read, so it surfaces in the
/// first call). `None` for anything else (refused TCP, timeouts), so a
/// CLI can tell "fix your certificates" from "nothing is listening".
/// Meant for errors of TLS connections: an InvalidData I/O error counts.
pub fn handshake_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(t.to_string());
            }
            // rustls reports a received alert (the server refusing our
            // certificate) as InvalidData with only its text; on a TLS
            // connection nothing else is InvalidData at this layer.
            if io.kind() == io::ErrorKind::InvalidData {
                return Some(io.to_string());
            }
        }
        cur = err.source();
    }
    None
}
