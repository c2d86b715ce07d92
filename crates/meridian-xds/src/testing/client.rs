//! Wire-level xDS clients: each request is explicit, so tests can send what
//! Envoy sends, including the odd cases (stale nonces, NACKs, re-subscribes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::fixtures::resource_name;
use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// How long `expect_*` waits before failing the test.
const WAIT: Duration = Duration::from_secs(5);

async fn channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
}

/// A state-of-the-world stream.
pub struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl SotwClient {
    /// ADS: one stream for all types.
    pub async fn ads(addr: SocketAddr, node: Node) -> Result<SotwClient, tonic::Status> {
        Self::open(addr, None, node).await
    }

    /// The per-type service of `type_url`.
    pub async fn per_type(
        addr: SocketAddr,
        type_url: &str,
        node: Node,
    ) -> Result<SotwClient, tonic::Status> {
        Self::open(addr, Some(type_url), node).await
    }

    /// ADS on an existing channel: many streams can share one HTTP/2
    /// connection, as they do behind a load balancer.
    pub async fn ads_on(ch: Channel, node: Node) -> Result<SotwClient, tonic::Status> {
        Self::open_on(ch, None, node).await
    }

    async fn open(
        addr: SocketAddr,
        type_url: Option<&str>,
        node: Node,
    ) -> Result<SotwClient, tonic::Status> {
        let ch = channel(addr)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Self::open_on(ch, type_url, node).await
    }

    async fn open_on(
        ch: Channel,
        type_url: Option<&str>,
        node: Node,
    ) -> Result<SotwClient, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        let out = ReceiverStream::new(rx);
        let rx = match type_url {
            None => {
                AggregatedDiscoveryServiceClient::new(ch)
                    .stream_aggregated_resources(out)
                    .await?
            }
            Some(LISTENER) => {
                ListenerDiscoveryServiceClient::new(ch)
                    .stream_listeners(out)
                    .await?
            }
            Some(ROUTE) => {
                RouteDiscoveryServiceClient::new(ch)
                    .stream_routes(out)
                    .await?
            }
            Some(CLUSTER) => {
                ClusterDiscoveryServiceClient::new(ch)
                    .stream_clusters(out)
                    .await?
            }
            Some(ENDPOINT) => {
                EndpointDiscoveryServiceClient::new(ch)
                    .stream_endpoints(out)
                    .await?
            }
            Some(SECRET) => {
                SecretDiscoveryServiceClient::new(ch)
                    .stream_secrets(out)
                    .await?
            }
            Some(other) => {
                return Err(tonic::Status::unimplemented(format!(
                    "no per-type service for {other}"
                )))
            }
        }
        .into_inner();
        Ok(SotwClient {
            tx,
            rx,
            node: Some(node),
        })
    }

    /// Sends a request; the node goes on the first request only, like Envoy.
    pub async fn send(&mut self, mut req: DiscoveryRequest) {
        if req.node.is_none() {
            req.node = self.node.take();
        } else {
            self.node = None;
        }
        self.tx.send(req).await.expect("request stream open");
    }

    /// A plain request: names (empty for legacy wildcard), last accepted
    /// version, and the nonce it answers.
    pub async fn request(&mut self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(DiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.to_string(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        })
        .await
    }

    /// ACKs `resp`, keeping the subscription at `names`.
    pub async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        self.request(&resp.type_url, names, &resp.version_info, &resp.nonce)
            .await
    }

    /// NACKs `resp` with Envoy's message; `accepted` is the last good version.
    pub async fn nack(
        &mut self,
        resp: &DiscoveryResponse,
        names: &[&str],
        accepted: &str,
        message: &str,
    ) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: accepted.to_string(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await
    }

    /// The next response, or `None` after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<DiscoveryResponse> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => None,
        }
    }

    /// The next response; fails the test after 5 s.
    pub async fn expect_response(&mut self) -> DiscoveryResponse {
        self.recv_within(WAIT).await.expect("a response within 5 s")
    }

    /// Fails the test if a response arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(r) = self.recv_within(wait).await {
            panic!(
                "unexpected response: type {} names {:?}",
                r.type_url,
                names(&r)
            );
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
    pub async fn next(&mut self) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        self.rx.message().await
    }

    /// The next message or error as the raw result (for error tests).
    pub async fn next_raw(&mut self) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("stream result within 5 s")
    }
}

/// Resource names in a SotW response, in order.
pub fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(resource_name).collect()
}

/// An incremental stream.
pub struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Option<Node>,
}

impl DeltaClient {
    pub async fn ads(addr: SocketAddr, node: Node) -> Result<DeltaClient, tonic::Status> {
        Self::open(addr, None, node).await
    }

    pub async fn per_type(
        addr: SocketAddr,
        type_url: &str,
        node: Node,
    ) -> Result<DeltaClient, tonic::Status> {
        Self::open(addr, Some(type_url), node).await
    }

    /// ADS on an existing channel: many streams can share one HTTP/2
    /// connection, as they do behind a load balancer.
    pub async fn ads_on(ch: Channel, node: Node) -> Result<DeltaClient, tonic::Status> {
        Self::open_on(ch, None, node).await
    }

    async fn open(
        addr: SocketAddr,
        type_url: Option<&str>,
        node: Node,
    ) -> Result<DeltaClient, tonic::Status> {
        let ch = channel(addr)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Self::open_on(ch, type_url, node).await
    }

    async fn open_on(
        ch: Channel,
        type_url: Option<&str>,
        node: Node,
    ) -> Result<DeltaClient, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        let out = ReceiverStream::new(rx);
        let rx = match type_url {
            None => {
                AggregatedDiscoveryServiceClient::new(ch)
                    .delta_aggregated_resources(out)
                    .await?
            }
            Some(LISTENER) => {
                ListenerDiscoveryServiceClient::new(ch)
                    .delta_listeners(out)
                    .await?
            }
            Some(ROUTE) => {
                RouteDiscoveryServiceClient::new(ch)
                    .delta_routes(out)
                    .await?
            }
            Some(CLUSTER) => {
                ClusterDiscoveryServiceClient::new(ch)
                    .delta_clusters(out)
                    .await?
            }
            Some(ENDPOINT) => {
                EndpointDiscoveryServiceClient::new(ch)
                    .delta_endpoints(out)
                    .await?
            }
            Some(SECRET) => {
                SecretDiscoveryServiceClient::new(ch)
                    .delta_secrets(out)
                    .await?
            }
            Some(other) => {
                return Err(tonic::Status::unimplemented(format!(
                    "no per-type service for {other}"
                )))
            }
        }
        .into_inner();
        Ok(DeltaClient {
            tx,
            rx,
            node: Some(node),
        })
    }

    pub async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if req.node.is_none() {
            req.node = self.node.take();
        } else {
            self.node = None;
        }
        self.tx.send(req).await.expect("request stream open");
    }

    /// Subscribes and unsubscribes names, correlating with `nonce` (may be empty).
    pub async fn subscribe(
        &mut self,
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
        nonce: &str,
    ) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        })
        .await
    }

    /// The first request of a reconnecting client that holds `initial` versions.
    pub async fn resume(
        &mut self,
        type_url: &str,
        subscribe: &[&str],
        initial: HashMap<String, String>,
    ) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            initial_resource_versions: initial,
            ..Default::default()
        })
        .await
    }

    pub async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.subscribe(&resp.type_url, &[], &[], &resp.nonce).await
    }

    pub async fn nack(&mut self, resp: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<DeltaDiscoveryResponse> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => None,
        }
    }

    /// The next message, waiting as long as it takes.
    pub async fn next(&mut self) -> Result<Option<DeltaDiscoveryResponse>, tonic::Status> {
        self.rx.message().await
    }

    pub async fn expect_response(&mut self) -> DeltaDiscoveryResponse {
        self.recv_within(WAIT).await.expect("a response within 5 s")
    }

    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(r) = self.recv_within(wait).await {
            panic!(
                "unexpected response: type {} names {:?} removed {:?}",
                r.type_url,
                delta_names(&r),
                r.removed_resources
            );
        }
    }

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
}

/// Resource names in a delta response, in order.
pub fn delta_names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(|r| r.name.clone()).collect()
}
