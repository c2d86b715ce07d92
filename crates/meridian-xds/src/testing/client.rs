//! Wire-level xDS clients: each request is explicit, so tests can send what
//! Envoy sends, including the odd cases (stale nonces, NACKs, re-subscribes).
//!
//! One [`Client`] core (opening a stream, the node on the first request,
//! receiving, waiting for silence or the end) over two wire adapters,
//! `sotw.rs` and `delta.rs`, which keep only their messages and requests.

mod delta;
mod sotw;

pub use delta::{delta_names, DeltaWire};
pub use sotw::{names, SotwWire};

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

/// How long `expect_*` waits before failing the test.
const WAIT: Duration = Duration::from_secs(5);

/// A state-of-the-world stream.
pub type SotwClient = Client<SotwWire>;
/// An incremental stream.
pub type DeltaClient = Client<DeltaWire>;

/// What differs between a SotW and a delta stream on the client side.
pub trait Wire: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;

    /// Opens the stream: ADS when `type_url` is `None`, else that type's
    /// service.
    fn open(
        ch: Channel,
        type_url: Option<&str>,
        out: ReceiverStream<Self::Req>,
    ) -> impl Future<Output = Result<Streaming<Self::Resp>, tonic::Status>> + Send;

    fn node_mut(req: &mut Self::Req) -> &mut Option<Node>;

    /// A response in a test failure message.
    fn describe(resp: &Self::Resp) -> String;
}

/// One xDS stream of either variant.
pub struct Client<W: Wire> {
    tx: mpsc::Sender<W::Req>,
    rx: Streaming<W::Resp>,
    node: Option<Node>,
}

pub(crate) async fn channel(addr: SocketAddr) -> Result<Channel, tonic::Status> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

/// A NACK's `error_detail` as Envoy fills it (INVALID_ARGUMENT).
fn rejection(message: &str) -> RpcStatus {
    RpcStatus {
        code: 3,
        message: message.to_string(),
        details: vec![],
    }
}

impl<W: Wire> Client<W> {
    /// ADS: one stream for all types.
    pub async fn ads(addr: SocketAddr, node: Node) -> Result<Client<W>, tonic::Status> {
        Self::ads_on(channel(addr).await?, node).await
    }

    /// The per-type service of `type_url`.
    pub async fn per_type(
        addr: SocketAddr,
        type_url: &str,
        node: Node,
    ) -> Result<Client<W>, tonic::Status> {
        Self::open_on(channel(addr).await?, Some(type_url), node).await
    }

    /// ADS on an existing channel: many streams can share one HTTP/2
    /// connection, as they do behind a load balancer.
    pub async fn ads_on(ch: Channel, node: Node) -> Result<Client<W>, tonic::Status> {
        Self::open_on(ch, None, node).await
    }

    async fn open_on(
        ch: Channel,
        type_url: Option<&str>,
        node: Node,
    ) -> Result<Client<W>, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        let rx = W::open(ch, type_url, ReceiverStream::new(rx)).await?;
        Ok(Client {
            tx,
            rx,
            node: Some(node),
        })
    }

    /// Sends a request; the node goes on the first request only, like Envoy.
    pub async fn send(&mut self, mut req: W::Req) {
        let node = W::node_mut(&mut req);
        if node.is_none() {
            *node = self.node.take();
        } else {
            self.node = None;
        }
        self.tx.send(req).await.expect("request stream open");
    }

    /// The next response, or `None` after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<W::Resp> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => None,
        }
    }

    /// The next response; fails the test after 5 s.
    pub async fn expect_response(&mut self) -> W::Resp {
        self.recv_within(WAIT).await.expect("a response within 5 s")
    }

    /// Fails the test if a response arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(r) = self.recv_within(wait).await {
            panic!("unexpected response: {}", W::describe(&r));
        }
    }

    /// Waits for the server to end the stream; true if it ended in time.
    pub async fn ended_within(&mut self, wait: Duration) -> bool {
        let end = async {
            loop {
                match self.rx.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        };
        tokio::time::timeout(wait, end).await.is_ok()
    }

    /// The next message, waiting as long as it takes.
    pub async fn next(&mut self) -> Result<Option<W::Resp>, tonic::Status> {
        self.rx.message().await
    }

    /// The next message or error as the raw result (for error tests).
    pub async fn next_raw(&mut self) -> Result<Option<W::Resp>, tonic::Status> {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("stream result within 5 s")
    }
}

/// `Wire::open` for a wire whose ADS method is `$ads` and whose per-type
/// methods are `$lds`.. `$sds` (the two wires differ only in which methods
/// they call).
macro_rules! open_rpc {
    ($ads:ident, $lds:ident, $rds:ident, $cds:ident, $eds:ident, $sds:ident) => {
        fn open(
            ch: tonic::transport::Channel,
            type_url: Option<&str>,
            out: tokio_stream::wrappers::ReceiverStream<Self::Req>,
        ) -> impl std::future::Future<
            Output = Result<tonic::Streaming<Self::Resp>, tonic::Status>,
        > + Send {
            use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
            use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
            use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
            use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
            use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
            use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
            use $crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
            let type_url = type_url.map(str::to_string);
            async move {
                let rx = match type_url.as_deref() {
                    None => AggregatedDiscoveryServiceClient::new(ch).$ads(out).await?,
                    Some(LISTENER) => ListenerDiscoveryServiceClient::new(ch).$lds(out).await?,
                    Some(ROUTE) => RouteDiscoveryServiceClient::new(ch).$rds(out).await?,
                    Some(CLUSTER) => ClusterDiscoveryServiceClient::new(ch).$cds(out).await?,
                    Some(ENDPOINT) => EndpointDiscoveryServiceClient::new(ch).$eds(out).await?,
                    Some(SECRET) => SecretDiscoveryServiceClient::new(ch).$sds(out).await?,
                    Some(other) => {
                        return Err(tonic::Status::unimplemented(format!(
                            "no per-type service for {other}"
                        )))
                    }
                };
                Ok(rx.into_inner())
            }
        }
    };
}
use open_rpc;
