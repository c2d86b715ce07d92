//! The cluster admin API: bootstrap, membership changes, status and backups.

mod fanout;

use std::collections::BTreeMap;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_store::{NodeId, NodeInfo, SnapshotMeta, StateMachineStore};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::error::ApiError;
use crate::membership::Membership;
use crate::proxy_status::Proxies;
use crate::routing::{forwarded, mark_forwarded, Router, Target};
use crate::status::LocalStatus;
use crate::traffic_stats::TrafficStats;

/// Bytes per chunk of a streamed backup.
const CHUNK: usize = 1024 * 1024;

pub(crate) struct ClusterApi {
    router: Router,
    membership: Membership,
    status: LocalStatus,
    proxies: Proxies,
    sm: StateMachineStore,
    traffic: TrafficStats,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

fn info_from_pb(n: &pb::NodeInfo, field: &str) -> Result<(NodeId, NodeInfo), ApiError> {
    if n.id == 0 {
        return Err(ApiError::Invalid(format!(
            "{field}.id: must be greater than 0"
        )));
    }
    crate::config::check_region(&n.region)
        .map_err(|e| ApiError::Invalid(format!("{field}.region: {e}")))?;
    for (name, v) in [("peer_addr", &n.peer_addr), ("api_addr", &n.api_addr)] {
        if v.parse::<std::net::SocketAddr>().is_err() && !v.contains(':') {
            return Err(ApiError::Invalid(format!(
                "{field}.{name}: {v:?} is not host:port"
            )));
        }
    }
    Ok((
        n.id,
        NodeInfo {
            region: n.region.clone(),
            peer_addr: n.peer_addr.clone(),
            api_addr: n.api_addr.clone(),
            xds_addr: n.xds_addr.clone(),
            admin_addr: n.admin_addr.clone(),
        },
    ))
}

impl ClusterApi {
    pub(crate) fn new(
        router: Router,
        membership: Membership,
        status: LocalStatus,
        proxies: Proxies,
        sm: StateMachineStore,
        traffic: TrafficStats,
    ) -> Self {
        ClusterApi {
            router,
            membership,
            status,
            proxies,
            sm,
            traffic,
        }
    }

    fn client(&self, info: &NodeInfo) -> Result<ClusterServiceClient<Channel>, ApiError> {
        let ch = self.router.api_channel(info)?;
        Ok(ClusterServiceClient::new(ch).max_decoding_message_size(256 * 1024 * 1024))
    }

    async fn init(&self, msg: pb::InitRequest) -> Result<pb::InitResponse, ApiError> {
        let me = self.status.id();
        let mut members = BTreeMap::new();
        if msg.members.is_empty() {
            members.insert(me, self.status.info().clone());
        }
        for (i, m) in msg.members.iter().enumerate() {
            let (id, info) = info_from_pb(m, &format!("members[{i}]"))?;
            if members.insert(id, info).is_some() {
                return Err(ApiError::Invalid(format!(
                    "members[{i}].id: {id} appears twice"
                )));
            }
        }
        if !members.contains_key(&me) {
            return Err(ApiError::Invalid(format!(
                "members: must include the node receiving the request (node {me})"
            )));
        }
        self.membership.initialize(members).await?;
        Ok(pb::InitResponse {})
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<pb::AddNodeResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = &req.into_inner();
        let node = msg
            .node
            .clone()
            .ok_or_else(|| ApiError::Invalid("node: required".into()))?;
        let (id, info) = &info_from_pb(&node, "node")?;
        self.router
            .route(forwarded, |target, _| async move {
                match target {
                    Target::Here => self.membership.add(*id, info, msg.learner_only).await,
                    Target::Leader(_, leader) => {
                        let r = self
                            .client(&leader)?
                            .add_node(mark_forwarded(msg.clone()))
                            .await?;
                        Ok(r.into_inner())
                    }
                }
            })
            .await
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<pb::RemoveNodeResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = &req.into_inner();
        self.router
            .route(forwarded, |target, _| async move {
                match target {
                    Target::Here => self.membership.remove(msg.node_id).await,
                    Target::Leader(_, leader) => {
                        let r = self
                            .client(&leader)?
                            .remove_node(mark_forwarded(*msg))
                            .await?;
                        Ok(r.into_inner())
                    }
                }
            })
            .await
    }

    async fn snapshot(&self, req: Request<pb::SnapshotRequest>) -> Result<ChunkStream, ApiError> {
        let forwarded = forwarded(&req);
        self.router
            .route(forwarded, |target, _| async move {
                match target {
                    Target::Here => self.snapshot_here().await,
                    Target::Leader(_, leader) => {
                        let remote = self
                            .client(&leader)?
                            .snapshot(mark_forwarded(pb::SnapshotRequest {}))
                            .await?;
                        let stream: ChunkStream = Box::pin(remote.into_inner());
                        Ok(stream)
                    }
                }
            })
            .await
    }

    /// A backup, on the leader: a consistent cut, with everything
    /// acknowledged before this call applied.
    async fn snapshot_here(&self) -> Result<ChunkStream, ApiError> {
        let deadline = std::time::Instant::now() + self.router.write_timeout();
        self.router
            .leadership()
            .confirm(deadline, "snapshot", "")
            .await?;
        let state = self.sm.state_clone();
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.last_membership.clone(),
            snapshot_id: format!(
                "backup-{}",
                state.last_applied.map(|l| l.index).unwrap_or(0)
            ),
        };
        let bytes = meridian_store::codec::encode_snapshot(&meta, &state)
            .map_err(|e| ApiError::Internal(format!("encoding snapshot: {e}")))?;
        info!(
            bytes = bytes.len(),
            revision = state.revision,
            "backup snapshot taken"
        );
        let chunks: Vec<Result<pb::SnapshotChunk, Status>> = bytes
            .chunks(CHUNK)
            .map(|c| Ok(pb::SnapshotChunk { data: c.to_vec() }))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks).boxed()))
    }
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterApi {
    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        Ok(Response::new(
            ClusterApi::init(self, req.into_inner()).await?,
        ))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        Ok(Response::new(ClusterApi::add_node(self, req).await?))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        Ok(Response::new(ClusterApi::remove_node(self, req).await?))
    }

    async fn get_node_status(
        &self,
        _req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.status.status()))
    }

    async fn get_cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(self.cluster_status().await))
    }

    async fn get_proxy_status(
        &self,
        req: Request<pb::ProxyStatusRequest>,
    ) -> Result<Response<pb::ProxyStatusResponse>, Status> {
        Ok(Response::new(
            self.proxy_status(req.into_inner().local_only).await,
        ))
    }

    async fn get_proxy_config(
        &self,
        req: Request<pb::ProxyConfigRequest>,
    ) -> Result<Response<pb::ProxyConfigResponse>, Status> {
        Ok(Response::new(self.proxy_config(req.into_inner()).await?))
    }

    async fn get_traffic_errors(
        &self,
        req: Request<pb::TrafficErrorsRequest>,
    ) -> Result<Response<pb::TrafficErrorsResponse>, Status> {
        Ok(Response::new(self.traffic.traffic(&req.into_inner()).await))
    }

    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        Ok(Response::new(ClusterApi::snapshot(self, req).await?))
    }
}
