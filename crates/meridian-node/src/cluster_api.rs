//! The cluster admin API: bootstrap, membership changes, status and backups.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_store::{NodeId, NodeInfo, Request as Cmd, SnapshotMeta};
use openraft::ChangeMembers;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::leader::{self, LeaderIs};
use crate::node::Shared;

/// How long adding a learner may take to catch up before the call gives up
/// (the learner stays and keeps catching up; add it again to promote it).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes per chunk of a streamed backup.
const CHUNK: usize = 1024 * 1024;

pub(crate) struct ClusterApi {
    s: Arc<Shared>,
}

impl ClusterApi {
    pub(crate) fn new(s: Arc<Shared>) -> Self {
        ClusterApi { s }
    }

    fn client(
        &self,
        info: &NodeInfo,
    ) -> Result<ClusterServiceClient<tonic::transport::Channel>, Status> {
        let ch = self
            .s
            .channels
            .get(&info.api_addr)
            .map_err(Status::internal)?;
        Ok(ClusterServiceClient::new(ch).max_decoding_message_size(256 * 1024 * 1024))
    }

    /// Where a leader-only request must go: `None` for here.
    async fn leader_target(&self, forwarded: bool) -> Result<Option<NodeInfo>, Status> {
        match self.s.await_leader(self.s.request_deadline()).await? {
            LeaderIs::Me => Ok(None),
            LeaderIs::Other(_) if forwarded => {
                Err(Status::unavailable("this node is not the leader"))
            }
            LeaderIs::Other(info) => Ok(Some(info)),
            LeaderIs::Unknown | LeaderIs::Removed => Err(Status::unavailable("no leader")),
        }
    }

    fn membership_reply(&self) -> (Vec<u64>, Vec<u64>) {
        let m = self.s.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    }
}

pub(crate) fn info_to_pb(id: NodeId, n: &NodeInfo) -> pb::NodeInfo {
    pb::NodeInfo {
        id,
        region: n.region.clone(),
        peer_addr: n.peer_addr.clone(),
        api_addr: n.api_addr.clone(),
        xds_addr: n.xds_addr.clone(),
        admin_addr: n.admin_addr.clone(),
    }
}

fn info_from_pb(n: &pb::NodeInfo, field: &str) -> Result<(NodeId, NodeInfo), Status> {
    if n.id == 0 {
        return Err(Status::invalid_argument(format!(
            "{field}.id: must be greater than 0"
        )));
    }
    crate::config::check_region(&n.region)
        .map_err(|e| Status::invalid_argument(format!("{field}.region: {e}")))?;
    for (name, v) in [("peer_addr", &n.peer_addr), ("api_addr", &n.api_addr)] {
        if v.parse::<std::net::SocketAddr>().is_err() && !v.contains(':') {
            return Err(Status::invalid_argument(format!(
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

pub(crate) fn local_status(s: &Shared) -> pb::NodeStatus {
    let m = s.raft.metrics().borrow().clone();
    let mem = m.membership_config.membership();
    let voters: Vec<u64> = mem.voter_ids().collect();
    let learners: Vec<u64> = mem.learner_ids().collect();
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    let initialized = mem.nodes().next().is_some();
    let last_log = m.last_log_index.unwrap_or(0);
    let mut lag = std::collections::HashMap::new();
    let mut commit = m.last_applied.map(|l| l.index).unwrap_or(0);
    if let Some(rep) = &m.replication {
        let mut matched: Vec<u64> = Vec::new();
        for (id, log_id) in rep {
            let idx = log_id.map(|l| l.index).unwrap_or(0);
            lag.insert(*id, last_log.saturating_sub(idx));
            if voters.contains(id) {
                matched.push(idx);
            }
        }
        // The commit index is the highest index a majority of voters hold.
        matched.sort_unstable_by(|a, b| b.cmp(a));
        if !matched.is_empty() {
            commit = commit.max(matched[matched.len() / 2]);
        }
    }
    let ready = crate::admin::readiness(s);
    pb::NodeStatus {
        node: Some(info_to_pb(s.id, &s.info)),
        role: role.into(),
        term: m.current_term,
        leader_id: m.current_leader.unwrap_or(0),
        has_leader: m.current_leader.is_some(),
        last_log_index: last_log,
        commit_index: commit,
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        revision: s.sm.revision(),
        voters,
        learners,
        replication_lag: lag,
        uptime_ms: s.started.elapsed().as_millis() as u64,
        initialized,
        ready: ready.is_ok(),
        not_ready_reason: ready.err().unwrap_or_default(),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterApi {
    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let msg = req.into_inner();
        let mut members = BTreeMap::new();
        if msg.members.is_empty() {
            members.insert(self.s.id, self.s.info.clone());
        }
        for (i, m) in msg.members.iter().enumerate() {
            let (id, info) = info_from_pb(m, &format!("members[{i}]"))?;
            if members.insert(id, info).is_some() {
                return Err(Status::invalid_argument(format!(
                    "members[{i}].id: {id} appears twice"
                )));
            }
        }
        if !members.contains_key(&self.s.id) {
            return Err(Status::invalid_argument(format!(
                "members: must include the node receiving the request (node {})",
                self.s.id
            )));
        }
        match self.s.raft.initialize(members.clone()).await {
            Ok(()) => {
                info!(members = ?members.keys().collect::<Vec<_>>(), "cluster initialized");
                Ok(Response::new(pb::InitResponse {}))
            }
            Err(e) => Err(Status::failed_precondition(format!(
                "cannot initialize: {e} (a node that is already part of a cluster cannot be initialized again)"
            ))),
        }
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let msg = req.into_inner();
        let node = msg
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("node: required"))?;
        let (id, info) = info_from_pb(&node, "node")?;
        if let Some(leader) = self.leader_target(forwarded).await? {
            return self
                .client(&leader)?
                .add_node(leader::mark_forwarded(msg))
                .await;
        }
        if self.s.sm.retired_ids().contains(&id) {
            return Err(Status::failed_precondition(format!(
                "node id {id} was removed from this cluster before; ids are never reused, start the node with a new --node-id"
            )));
        }
        let m = self.s.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        if let Some(existing) = mem.get_node(&id) {
            if existing != &info {
                return Err(Status::already_exists(format!(
                    "node id {id} is already a member with other addresses ({existing}); remove it first or use a new id"
                )));
            }
        }
        let already_voter = mem.voter_ids().any(|v| v == id);
        if mem.get_node(&id).is_none() {
            info!(node = id, region = %info.region, "adding learner");
            let fut = self.s.raft.add_learner(id, info.clone(), true);
            match tokio::time::timeout(CATCH_UP_TIMEOUT, fut).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Status::unavailable(format!("adding node {id} as learner failed: {e}"))),
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "node {id} was added as a learner but did not catch up within {CATCH_UP_TIMEOUT:?}; \
                         it keeps catching up, call add-node again to promote it"
                    )))
                }
            }
        }
        if !msg.learner_only && !already_voter {
            info!(node = id, "promoting learner to voter");
            self.s
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| {
                    Status::unavailable(format!("promoting node {id} to voter failed: {e}"))
                })?;
        }
        let (voters, learners) = self.membership_reply();
        Ok(Response::new(pb::AddNodeResponse { voters, learners }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let msg = req.into_inner();
        let id = msg.node_id;
        if let Some(leader) = self.leader_target(forwarded).await? {
            return self
                .client(&leader)?
                .remove_node(leader::mark_forwarded(msg))
                .await;
        }
        let m = self.s.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        if mem.get_node(&id).is_none() {
            return Err(Status::not_found(format!("node {id} is not a member")));
        }
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        if voters.contains(&id) && voters.len() == 1 {
            return Err(Status::failed_precondition(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        info!(node = id, "removing node");
        // Retire the id before the membership change, not after: when the
        // node removed is this leader, it steps down once the new config
        // commits and a write proposed afterwards may never be answered.
        // A retired id that is still a member (the change below failed)
        // keeps working; retrying the removal finishes the job.
        let left = self.s.write_timeout;
        match tokio::time::timeout(
            left,
            self.s.raft.client_write(Cmd::RetireNode { node_id: id }),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Status::unavailable(format!(
                    "removing node {id} failed: could not record its id as retired: {e}"
                )))
            }
            Err(_) => return Err(Status::unavailable(format!(
                "removing node {id} failed: recording its id as retired timed out after {left:?}"
            ))),
        }
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        match tokio::time::timeout(left, self.s.raft.change_membership(change, false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Status::unavailable(format!(
                    "removing node {id} failed: {e}"
                )))
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "removing node {id}: the membership change did not commit within {left:?}; \
                     check `meridian cluster status` and retry"
                )))
            }
        }
        let (voters, learners) = self.membership_reply();
        Ok(Response::new(pb::RemoveNodeResponse { voters, learners }))
    }

    async fn get_node_status(
        &self,
        _req: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(local_status(&self.s)))
    }

    async fn get_cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let me = local_status(&self.s);
        let m = self.s.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        let mut asks = Vec::new();
        for (id, info) in mem.nodes() {
            let (id, info) = (*id, info.clone());
            let voter = voters.contains(&id);
            if id == self.s.id {
                asks.push(futures::future::Either::Left(futures::future::ready(
                    pb::MemberStatus {
                        node: Some(info_to_pb(id, &info)),
                        voter,
                        status: Some(me.clone()),
                        error: String::new(),
                    },
                )));
                continue;
            }
            let client = self.client(&info);
            asks.push(futures::future::Either::Right(async move {
                let status = match client {
                    Err(e) => Err(e.message().to_string()),
                    Ok(mut c) => match tokio::time::timeout(
                        Duration::from_secs(1),
                        c.get_node_status(pb::NodeStatusRequest {}),
                    )
                    .await
                    {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(st)) => Err(st.message().to_string()),
                        Err(_) => Err("no answer within 1s".to_string()),
                    },
                };
                let (status, error) = match status {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e),
                };
                pb::MemberStatus {
                    node: Some(info_to_pb(id, &info)),
                    voter,
                    status,
                    error,
                }
            }));
        }
        let members = futures::future::join_all(asks).await;
        Ok(Response::new(pb::ClusterStatusResponse {
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            members,
            answered_by: self.s.id,
        }))
    }

    async fn get_proxy_status(
        &self,
        req: Request<pb::ProxyStatusRequest>,
    ) -> Result<Response<pb::ProxyStatusResponse>, Status> {
        let mut proxies = crate::proxy_status::local(&self.s);
        let mut errors = Vec::new();
        if !req.into_inner().local_only {
            let m = self.s.raft.metrics().borrow().clone();
            let others: Vec<(NodeId, NodeInfo)> = m
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.s.id)
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            let asks = others.into_iter().map(|(id, info)| {
                let client = self.client(&info);
                async move {
                    let mut c = client.map_err(|e| format!("node {id}: {}", e.message()))?;
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        c.get_proxy_status(pb::ProxyStatusRequest { local_only: true }),
                    )
                    .await
                    {
                        Ok(Ok(r)) => Ok(r.into_inner().proxies),
                        Ok(Err(st)) => Err(format!("node {id}: {}", st.message())),
                        Err(_) => Err(format!("node {id}: no answer within 2s")),
                    }
                }
            });
            for r in futures::future::join_all(asks).await {
                match r {
                    Ok(p) => proxies.extend(p),
                    Err(e) => errors.push(e),
                }
            }
        }
        proxies.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then(a.controller_id.cmp(&b.controller_id))
        });
        Ok(Response::new(pb::ProxyStatusResponse { proxies, errors }))
    }

    async fn get_proxy_config(
        &self,
        req: Request<pb::ProxyConfigRequest>,
    ) -> Result<Response<pb::ProxyConfigResponse>, Status> {
        let msg = req.into_inner();
        if let Some(r) = crate::proxy_status::config(&self.s, &msg.node_id) {
            return Ok(Response::new(r));
        }
        if !msg.local_only {
            let m = self.s.raft.metrics().borrow().clone();
            for (id, info) in m.membership_config.membership().nodes() {
                if *id == self.s.id {
                    continue;
                }
                let Ok(mut c) = self.client(info) else {
                    continue;
                };
                let ask = pb::ProxyConfigRequest {
                    node_id: msg.node_id.clone(),
                    local_only: true,
                };
                if let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(2), c.get_proxy_config(ask)).await
                {
                    return Ok(r);
                }
            }
        }
        Err(Status::not_found(format!(
            "no Envoy with node id {:?} is connected to any controller; see `meridian proxy-status`",
            msg.node_id
        )))
    }

    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let forwarded = leader::forwarded(&req);
        if let Some(leader) = self.leader_target(forwarded).await? {
            let remote = self
                .client(&leader)?
                .snapshot(leader::mark_forwarded(pb::SnapshotRequest {}))
                .await?;
            return Ok(Response::new(Box::pin(remote.into_inner())));
        }
        // A consistent cut: everything acknowledged before this call is applied here.
        let deadline = Instant::now() + self.s.write_timeout;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.s.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Status::unavailable(format!("snapshot barrier failed: {e}"))),
            Err(_) => {
                return Err(Status::unavailable(
                    "no quorum: leadership could not be confirmed",
                ))
            }
        }
        let state = self.s.sm.state_clone();
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.last_membership.clone(),
            snapshot_id: format!(
                "backup-{}",
                state.last_applied.map(|l| l.index).unwrap_or(0)
            ),
        };
        let bytes = meridian_store::codec::encode_snapshot(&meta, &state)
            .map_err(|e| Status::internal(format!("encoding snapshot: {e}")))?;
        info!(
            bytes = bytes.len(),
            revision = state.revision,
            "backup snapshot taken"
        );
        let chunks: Vec<Result<pb::SnapshotChunk, Status>> = bytes
            .chunks(CHUNK)
            .map(|c| Ok(pb::SnapshotChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(
            futures::stream::iter(chunks).boxed(),
        )))
    }
}
