//! This node's own status and readiness, as `cluster status`, `/readyz` and
//! `/metrics` report them.

use std::time::Instant;

use meridian_proto::v1 as pb;
use meridian_store::{NodeId, NodeInfo, StateMachineStore};

use crate::leadership::Leadership;

#[derive(Clone)]
pub(crate) struct LocalStatus {
    leadership: Leadership,
    info: NodeInfo,
    sm: StateMachineStore,
    started: Instant,
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

impl LocalStatus {
    pub(crate) fn new(leadership: Leadership, info: NodeInfo, sm: StateMachineStore) -> Self {
        LocalStatus {
            leadership,
            info,
            sm,
            started: Instant::now(),
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.leadership.id()
    }

    pub(crate) fn info(&self) -> &NodeInfo {
        &self.info
    }

    pub(crate) fn status(&self) -> pb::NodeStatus {
        let m = self.leadership.raft().metrics().borrow().clone();
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
        let ready = self.readiness();
        pb::NodeStatus {
            node: Some(info_to_pb(self.id(), &self.info)),
            role: role.into(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            has_leader: m.current_leader.is_some(),
            last_log_index: last_log,
            commit_index: commit,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            revision: self.sm.revision(),
            voters,
            learners,
            replication_lag: lag,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            initialized,
            ready: ready.is_ok(),
            not_ready_reason: ready.err().unwrap_or_default(),
        }
    }

    /// On the leader: milliseconds since a quorum acknowledged it.
    pub(crate) fn millis_since_quorum_ack(&self) -> Option<u64> {
        self.leadership
            .raft()
            .metrics()
            .borrow()
            .millis_since_quorum_ack
    }

    /// Ready when this node is a member, knows a leader that heard from a
    /// quorum recently, and has applied what it received.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        let m = self.leadership.raft().metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let me = self.id();
        if mem.get_node(&me).is_none() {
            return Err("not a member of a cluster (not initialized, or not yet added)".into());
        }
        match m.current_leader {
            None => Err(format!(
                "no leader known (term {}, state {:?})",
                m.current_term, m.state
            )),
            Some(l) if l == me => {
                let limit = self.leadership.contact_limit_ms();
                if mem.voter_ids().count() <= 1 {
                    return Ok(());
                }
                match m.millis_since_quorum_ack {
                    Some(ms) if ms <= limit => Ok(()),
                    Some(ms) => Err(format!("leader has not heard from a quorum for {ms} ms")),
                    None => Err("leader has not heard from a quorum yet".into()),
                }
            }
            Some(_) if !self.leadership.leader_contact_recent() => {
                Err("no contact with the leader recently".into())
            }
            Some(_) => Ok(()),
        }
    }
}
