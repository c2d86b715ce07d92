//! The membership, and changes to it on the leader: bootstrapping, adding
//! a node (as a learner that catches up, then a voter) and removing one (its
//! id retired for good).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_store::{NodeId, NodeInfo, Raft, Request as Cmd, StateMachineStore};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tracing::info;

use crate::error::ApiError;

/// How long adding a learner may take to catch up before the call gives up
/// (the learner stays and keeps catching up; add it again to promote it).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed change: leadership that moved is worth another try on the new
/// leader; anything else may have done half the change.
fn change_failed(
    e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
    what: String,
) -> ApiError {
    if e.forward_to_leader::<NodeInfo>().is_some() {
        return ApiError::NotLeader;
    }
    ApiError::MembershipChange(format!("{what}: {e}"))
}

#[derive(Clone)]
pub(crate) struct Membership {
    raft: Raft,
    sm: StateMachineStore,
    write_timeout: Duration,
}

impl Membership {
    pub(crate) fn new(raft: Raft, sm: StateMachineStore, write_timeout: Duration) -> Self {
        Membership {
            raft,
            sm,
            write_timeout,
        }
    }

    /// The membership as this node last saw it.
    pub(crate) fn current(&self) -> openraft::Membership<NodeId, NodeInfo> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    fn reply(&self) -> (Vec<u64>, Vec<u64>) {
        let mem = self.current();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    }

    /// Makes `members` a new cluster; this node must be one of them.
    pub(crate) async fn initialize(
        &self,
        members: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<(), ApiError> {
        self.raft.initialize(members.clone()).await.map_err(|e| {
            ApiError::Conflict(format!(
                "cannot initialize: {e} (a node that is already part of a cluster cannot be initialized again)"
            ))
        })?;
        info!(members = ?members.keys().collect::<Vec<_>>(), "cluster initialized");
        Ok(())
    }

    pub(crate) async fn add(
        &self,
        id: NodeId,
        info: &NodeInfo,
        learner_only: bool,
    ) -> Result<pb::AddNodeResponse, ApiError> {
        if self.sm.retired_ids().contains(&id) {
            return Err(ApiError::Conflict(format!(
                "node id {id} was removed from this cluster before; ids are never reused, start the node with a new --node-id"
            )));
        }
        let raft = &self.raft;
        let mem = self.current();
        if let Some(existing) = mem.get_node(&id) {
            if existing != info {
                return Err(ApiError::AlreadyExists(format!(
                    "node id {id} is already a member with other addresses ({existing}); remove it first or use a new id"
                )));
            }
        }
        let already_voter = mem.voter_ids().any(|v| v == id);
        if mem.get_node(&id).is_none() {
            info!(node = id, region = %info.region, "adding learner");
            let fut = raft.add_learner(id, info.clone(), true);
            match tokio::time::timeout(CATCH_UP_TIMEOUT, fut).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(change_failed(e, format!("adding node {id} as learner failed")))
                }
                Err(_) => {
                    return Err(ApiError::Timeout(format!(
                        "node {id} was added as a learner but did not catch up within {CATCH_UP_TIMEOUT:?}; \
                         it keeps catching up, call add-node again to promote it"
                    )))
                }
            }
        }
        if !learner_only && !already_voter {
            info!(node = id, "promoting learner to voter");
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| change_failed(e, format!("promoting node {id} to voter failed")))?;
        }
        let (voters, learners) = self.reply();
        Ok(pb::AddNodeResponse { voters, learners })
    }

    pub(crate) async fn remove(&self, id: NodeId) -> Result<pb::RemoveNodeResponse, ApiError> {
        let raft = &self.raft;
        let mem = self.current();
        if mem.get_node(&id).is_none() {
            return Err(ApiError::NotFound(format!("node {id} is not a member")));
        }
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        if voters.contains(&id) && voters.len() == 1 {
            return Err(ApiError::Conflict(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        info!(node = id, "removing node");
        // Retire the id before the membership change, not after: when the
        // node removed is this leader, it steps down once the new config
        // commits and a write proposed afterwards may never be answered.
        // A retired id that is still a member (the change below failed)
        // keeps working; retrying the removal finishes the job.
        let left = self.write_timeout;
        match tokio::time::timeout(left, raft.client_write(Cmd::RetireNode { node_id: id })).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(change_failed(
                    e,
                    format!("removing node {id} failed: could not record its id as retired"),
                ))
            }
            Err(_) => {
                return Err(ApiError::MembershipChange(format!(
                "removing node {id} failed: recording its id as retired timed out after {left:?}"
            )))
            }
        }
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        match tokio::time::timeout(left, raft.change_membership(change, false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(change_failed(e, format!("removing node {id} failed"))),
            Err(_) => {
                return Err(ApiError::MembershipChange(format!(
                    "removing node {id}: the membership change did not commit within {left:?}; \
                     check `meridian cluster status` and retry"
                )))
            }
        }
        let (voters, learners) = self.reply();
        Ok(pb::RemoveNodeResponse { voters, learners })
    }
}
