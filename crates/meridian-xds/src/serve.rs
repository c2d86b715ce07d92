use std::future::Future;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryServiceServer;
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::EndpointDiscoveryServiceServer;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::ListenerDiscoveryServiceServer;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryServiceServer;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

use crate::error::XdsError;
use crate::server::{AdsWire, XdsServer};

/// Serves ADS, the five per-type services and CSDS on one listener until
/// `shutdown` completes; then drains every stream (Envoys keep their config
/// and reconnect elsewhere) and waits for connections to close.
pub async fn serve(
    listener: TcpListener,
    server: XdsServer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), XdsError> {
    serve_incoming(nodelay(TcpListenerStream::new(listener)), server, shutdown).await
}

/// [`serve`] on connections accepted elsewhere (the node's TLS acceptor,
/// whose connection info, the verified caller, reaches every request's
/// extensions).
pub async fn serve_incoming<I, IO, IE>(
    incoming: I,
    server: XdsServer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), XdsError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_incoming_with(incoming, server, Routes::default(), shutdown).await
}

/// [`serve`] on a plain TCP listener, with `extra` services beside xDS on
/// the same listener (the node's stats sink for Envoys): they share its
/// connections, keepalives and connection age.
pub async fn serve_with(
    listener: TcpListener,
    server: XdsServer,
    extra: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), XdsError> {
    serve_incoming_with(
        nodelay(TcpListenerStream::new(listener)),
        server,
        extra,
        shutdown,
    )
    .await
}

/// [`serve_incoming`] with `extra` services beside xDS (see [`serve_with`]).
pub async fn serve_incoming_with<I, IO, IE>(
    incoming: I,
    server: XdsServer,
    extra: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), XdsError>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let cfg = server.config().clone();
    let max = cfg.max_request_bytes;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .max_concurrent_streams(cfg.max_streams_per_connection);
    if let Some(age) = cfg.max_connection_age {
        // Streams end at the same age (see stream_end), which lets the
        // connection's graceful close finish.
        builder = builder.max_connection_age(age);
    }
    let drainer = server.clone();
    let shutdown = async move {
        shutdown.await;
        drainer.drain();
    };
    builder
        .add_routes(extra)
        .add_service(AdsWire {
            server: server.clone(),
            max_request_bytes: max,
        })
        .add_service(
            ListenerDiscoveryServiceServer::new(server.clone()).max_decoding_message_size(max),
        )
        .add_service(
            RouteDiscoveryServiceServer::new(server.clone()).max_decoding_message_size(max),
        )
        .add_service(
            ClusterDiscoveryServiceServer::new(server.clone()).max_decoding_message_size(max),
        )
        .add_service(
            EndpointDiscoveryServiceServer::new(server.clone()).max_decoding_message_size(max),
        )
        .add_service(
            SecretDiscoveryServiceServer::new(server.clone()).max_decoding_message_size(max),
        )
        .add_service(ClientStatusDiscoveryServiceServer::new(server).max_decoding_message_size(max))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(XdsError::Transport)
}

/// Nagle off on every accepted connection: tonic ignores `tcp_nodelay` for a
/// caller-supplied listener, and small xDS responses must not wait for ACKs.
fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    incoming.map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}
