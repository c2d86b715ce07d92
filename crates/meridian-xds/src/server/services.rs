//! The gRPC trait impls: ADS, the five per-type services. All are thin: they
//! open a stream task and hand tonic the receiving end.

use std::pin::Pin;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::EndpointDiscoveryService;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::ListenerDiscoveryService;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::RouteDiscoveryService;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::XdsServer;
use crate::metrics::Variant;
use crate::source::Viewer;
use crate::stream::{run, Delta, Sotw};
use crate::subscription::sotw::response_version;
use crate::subscription::SotwSubscription;
use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

pub(crate) type SotwStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
pub(crate) type DeltaStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

impl XdsServer {
    fn open_sotw(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
        variant: Variant,
        fixed: Option<&'static str>,
    ) -> Response<SotwStream> {
        let (_, peer, inbound) = req.into_parts();
        let rx = self.open_sotw_raw(inbound, peer, variant, fixed);
        Response::new(Box::pin(
            ReceiverStream::new(rx).map(|r| r.map(|o| o.into_response())),
        ))
    }

    /// The planned responses of a new SotW stream, before they become
    /// messages (ADS frames them without a copy per stream, see wire.rs).
    pub(crate) fn open_sotw_raw(
        &self,
        inbound: Streaming<DiscoveryRequest>,
        peer: tonic::Extensions,
        variant: Variant,
        fixed: Option<&'static str>,
    ) -> mpsc::Receiver<Result<crate::stream::SotwOut, Status>> {
        let (tx, rx) = mpsc::channel(self.inner.config.stream_buffer.max(1));
        let inner = self.inner.clone();
        inner.metrics.stream_opened(variant);
        tokio::spawn(async move {
            run::<Sotw>(inner.clone(), inbound, peer, variant, fixed, tx).await;
            inner.metrics.stream_closed(variant);
        });
        rx
    }

    fn open_delta(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
        variant: Variant,
        fixed: Option<&'static str>,
    ) -> Response<DeltaStream> {
        let (tx, rx) = mpsc::channel(self.inner.config.stream_buffer.max(1));
        let inner = self.inner.clone();
        inner.metrics.stream_opened(variant);
        let (_, peer, inbound) = req.into_parts();
        tokio::spawn(async move {
            run::<Delta>(inner.clone(), inbound, peer, variant, fixed, tx).await;
            inner.metrics.stream_closed(variant);
        });
        Response::new(Box::pin(
            ReceiverStream::new(rx).map(|r| r.map(|o| o.into_response())),
        ))
    }

    /// The unary REST-style fetch: the current state for the asked names
    /// (all when none), nothing remembered.
    fn fetch(
        &self,
        req: Request<DiscoveryRequest>,
        type_url: &'static str,
    ) -> Result<DiscoveryResponse, Status> {
        let (_, peer, req) = req.into_parts();
        if !req.type_url.is_empty() && req.type_url != type_url {
            return Err(Status::invalid_argument(format!(
                "fetch of {} on the {type_url} service",
                req.type_url
            )));
        }
        crate::stream::admit(&self.inner, req.node.as_ref(), &peer)?;
        let viewer = Viewer::from_node(req.node.as_ref(), &self.inner.config.region);
        let snap = self.inner.source.snapshot(&viewer);
        let mut sub = SotwSubscription::default();
        sub.set_names(&req.resource_names, |n: &str| std::sync::Arc::from(n));
        let list = sub.select(snap.resources(type_url));
        Ok(DiscoveryResponse {
            version_info: response_version(&list),
            resources: list.iter().map(|r| r.resource.clone()).collect(),
            type_url: type_url.to_string(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(self.open_sotw(request, Variant::SotwAds, None))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.open_delta(request, Variant::DeltaAds, None))
    }
}

macro_rules! per_type_service {
    ($trait_:ident, $type_url:expr, $sotw_ty:ident, $sotw_fn:ident, $delta_ty:ident, $delta_fn:ident, $fetch_fn:ident) => {
        #[tonic::async_trait]
        impl $trait_ for XdsServer {
            type $sotw_ty = SotwStream;
            type $delta_ty = DeltaStream;

            async fn $sotw_fn(
                &self,
                request: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<SotwStream>, Status> {
                Ok(self.open_sotw(request, Variant::SotwPerType, Some($type_url)))
            }

            async fn $delta_fn(
                &self,
                request: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<DeltaStream>, Status> {
                Ok(self.open_delta(request, Variant::DeltaPerType, Some($type_url)))
            }

            async fn $fetch_fn(
                &self,
                request: Request<DiscoveryRequest>,
            ) -> Result<Response<DiscoveryResponse>, Status> {
                self.fetch(request, $type_url).map(Response::new)
            }
        }
    };
}

per_type_service!(
    ListenerDiscoveryService,
    LISTENER,
    StreamListenersStream,
    stream_listeners,
    DeltaListenersStream,
    delta_listeners,
    fetch_listeners
);
per_type_service!(
    RouteDiscoveryService,
    ROUTE,
    StreamRoutesStream,
    stream_routes,
    DeltaRoutesStream,
    delta_routes,
    fetch_routes
);
per_type_service!(
    ClusterDiscoveryService,
    CLUSTER,
    StreamClustersStream,
    stream_clusters,
    DeltaClustersStream,
    delta_clusters,
    fetch_clusters
);
per_type_service!(
    EndpointDiscoveryService,
    ENDPOINT,
    StreamEndpointsStream,
    stream_endpoints,
    DeltaEndpointsStream,
    delta_endpoints,
    fetch_endpoints
);
per_type_service!(
    SecretDiscoveryService,
    SECRET,
    StreamSecretsStream,
    stream_secrets,
    DeltaSecretsStream,
    delta_secrets,
    fetch_secrets
);
