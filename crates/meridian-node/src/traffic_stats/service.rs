//! `envoy.service.metrics.v3.MetricsService/StreamMetrics` on the xDS
//! listener. The first message names the Envoy (its node: region from the
//! locality, else this controller's; proxy group from `node.cluster`, or,
//! over TLS, from its `proxy/GROUP` certificate, which a different claim
//! contradicts). Every message then replaces the Envoy's counters. A
//! message that cannot be used ends the stream with the reason; the
//! Envoy's next flush opens a new one.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use envoy_types::pb::envoy::service::metrics::v3::{StreamMetricsMessage, StreamMetricsResponse};
use meridian_pki::Identity;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::window::Refused;
use super::{decode, TrafficStats};
use crate::metrics::StatsRejection;

/// Longest node id, region or proxy group a stream may name.
const MAX_ID_LEN: usize = 256;

/// The gRPC service; ends its streams when the node stops.
#[derive(Clone)]
pub(crate) struct MetricsSink {
    stats: TrafficStats,
    shutdown: watch::Receiver<bool>,
}

impl MetricsSink {
    pub(crate) fn new(stats: TrafficStats, shutdown: watch::Receiver<bool>) -> Self {
        MetricsSink { stats, shutdown }
    }

    /// The tonic service, with the decoding limit of the table's limits.
    pub(crate) fn into_server(self) -> MetricsServiceServer<MetricsSink> {
        let max = self.stats.inner.limits.max_message_bytes;
        MetricsServiceServer::new(self).max_decoding_message_size(max)
    }

    fn refuse(&self, why: StatsRejection, st: Status) -> Status {
        self.stats.inner.metrics.envoy_stats.rejected(why);
        st
    }

    /// A transport error of the stream: bytes that are no message, or one
    /// too big, are refusals; a peer that went away is not.
    fn stream_error(&self, node: &str, st: Status) -> Status {
        let why = match st.code() {
            Code::Internal => Some(StatsRejection::Malformed),
            Code::OutOfRange | Code::ResourceExhausted => Some(StatsRejection::Oversized),
            _ => None,
        };
        match why {
            Some(why) => {
                warn!(node = %node, reason = why.name(), error = %st.message(), "Envoy stats stream refused");
                self.refuse(why, st)
            }
            None => {
                debug!(node = %node, error = %st.message(), "Envoy stats stream ended");
                st
            }
        }
    }

    /// Who the stream is: `(node id, region, proxy group)`.
    pub(super) fn identify(
        &self,
        first: &StreamMetricsMessage,
        caller: Option<&Identity>,
    ) -> Result<(String, String, String), Status> {
        let invalid =
            |msg: String| self.refuse(StatsRejection::Invalid, Status::invalid_argument(msg));
        let node: &Node = first
            .identifier
            .as_ref()
            .and_then(|i| i.node.as_ref())
            .ok_or_else(|| invalid("first message: identifier.node is required".into()))?;
        if node.id.is_empty() {
            return Err(invalid("identifier.node.id: must not be empty".into()));
        }
        let viewer = meridian_xds::Viewer::from_node(Some(node), &self.stats.inner.region);
        for (field, v) in [
            ("identifier.node.id", &node.id),
            ("identifier.node.cluster", &viewer.proxy_group),
            ("identifier.node.locality.region", &viewer.region),
        ] {
            if v.len() > MAX_ID_LEN {
                return Err(invalid(format!(
                    "{field}: {} bytes, at most {MAX_ID_LEN}",
                    v.len()
                )));
            }
        }
        let group = match caller {
            Some(Identity::Proxy { group }) => {
                if !node.cluster.is_empty() && node.cluster != *group {
                    return Err(self.refuse(
                        StatsRejection::Identity,
                        Status::permission_denied(format!(
                            "identifier.node.cluster: {:?}, but the certificate is proxy/{group}; an Envoy reports only as its certificate's group",
                            node.cluster
                        )),
                    ));
                }
                group.clone()
            }
            _ => viewer.proxy_group,
        };
        Ok((node.id.clone(), viewer.region, group))
    }

    fn take(&self, node: &str, msg: &StreamMetricsMessage) -> Result<(), Status> {
        let report = decode::report(
            &msg.envoy_metrics,
            meridian_translate::bootstrap::XDS_CLUSTER,
        )
        .map_err(|e| {
            warn!(node = %node, error = %e, "Envoy stats message refused");
            self.refuse(
                StatsRejection::Invalid,
                Status::invalid_argument(e.to_string()),
            )
        })?;
        self.stats.report(node, report).map_err(|e| {
            warn!(node = %node, error = %e, "Envoy stats message refused");
            self.refuse(
                StatsRejection::Invalid,
                Status::invalid_argument(e.to_string()),
            )
        })
    }
}

#[tonic::async_trait]
impl MetricsService for MetricsSink {
    async fn stream_metrics(
        &self,
        req: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let caller = req
            .extensions()
            .get::<crate::tls::Caller>()
            .map(|c| c.identity.clone());
        let mut stream = req.into_inner();
        let first = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(Response::new(StreamMetricsResponse {})),
            Err(st) => return Err(self.stream_error("", st)),
        };
        let (node, region, group) = self.identify(&first, caller.as_ref())?;
        let _open = self.stats.open(&node, &region, &group).map_err(|e| {
            warn!(node = %node, %region, %group, error = %e, "Envoy stats stream refused");
            let why = match e {
                Refused::Full(_) => StatsRejection::Capacity,
                Refused::TooManyClusters { .. } => StatsRejection::Invalid,
            };
            self.refuse(why, Status::resource_exhausted(e.to_string()))
        })?;
        info!(node = %node, %region, %group, "Envoy stats stream opened");
        self.take(&node, &first)?;
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(m)) => self.take(&node, &m)?,
                    Ok(None) => break,
                    Err(st) => return Err(self.stream_error(&node, st)),
                },
                _ = shutdown.wait_for(|v| *v) => break,
            }
        }
        info!(node = %node, %region, %group, "Envoy stats stream closed");
        Ok(Response::new(StreamMetricsResponse {}))
    }
}
