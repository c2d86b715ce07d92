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
