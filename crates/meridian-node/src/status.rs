//! This node's own status and readiness, as `cluster status`, `/readyz` and
//! `/metrics` report them, and the task that finds whether this replica
//! may serve xDS ([`run_xds_gate`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_store::{NodeId, NodeInfo, StateMachineStore};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::leadership::{LeaderIs, Leadership};
use crate::routing::{mark_forwarded, Router};
use crate::xds_source::{XdsGate, XdsReadiness};

#[derive(Clone)]
pub(crate) struct LocalStatus {
    leadership: Leadership,
    info: NodeInfo,
    sm: StateMachineStore,
    started: Instant,
    gate: XdsGate,
    /// The loaded certificates (empty on a plaintext node), for their
    /// expiry in `cluster status`.
    tls: Vec<Arc<meridian_tls::TlsSource>>,
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
    pub(crate) fn new(
        leadership: Leadership,
        info: NodeInfo,
        sm: StateMachineStore,
        gate: XdsGate,
        tls: Vec<Arc<meridian_tls::TlsSource>>,
    ) -> Self {
        LocalStatus {
            leadership,
            info,
            sm,
            started: Instant::now(),
            gate,
            tls,
        }
    }

    /// Whether xDS takes new streams, as the readiness task last found.
    pub(crate) fn xds_readiness(&self) -> XdsReadiness {
        self.gate.get()
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
            certificates: self
                .tls
                .iter()
                .map(|t| {
                    let s = t.status();
                    pb::CertificateStatus {
                        listener: s.name.to_string(),
                        identity: s.identity.to_string(),
                        not_after_unix: s.not_after_unix,
                        expires_in_seconds: s.expires_in_seconds,
                    }
                })
                .collect(),
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
    /// quorum recently, and its xDS is ready: it applied what the leader
    /// had committed as of a read barrier (see [`run_xds_gate`]).
    pub(crate) fn readiness(&self) -> Result<(), String> {
        self.raft_readiness()?;
        match self.gate.get() {
            XdsReadiness::Ready => Ok(()),
            XdsReadiness::NotReady(why) => Err(format!("xDS not ready: {why}")),
            XdsReadiness::Persisted(why) => Err(why),
        }
    }

    /// The membership and leader-contact half of [`LocalStatus::readiness`].
    fn raft_readiness(&self) -> Result<(), String> {
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

/// How long one read barrier may take before it counts as "no leader".
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// A kind no object has: a linearizable list of it is an empty read
/// barrier on the leader that answers with the leader's revision.
const BARRIER_KIND: &str = "meridian.readiness-barrier";

/// Why one readiness check failed.
pub(crate) enum Check {
    /// Not a member (yet, or any more): never served, not even persisted
    /// state, since it may hold none or another cluster's.
    NotMember(String),
    /// A leader answered but this replica has not applied its commit.
    Behind(String),
    /// No leader answered a read barrier.
    NoLeader(String),
}

impl Check {
    pub(crate) fn why(&self) -> &str {
        match self {
            Check::NotMember(w) | Check::Behind(w) | Check::NoLeader(w) => w,
        }
    }
}

/// Keeps the xDS gate. Ready once this node is a member and has applied
/// what the leader had committed as of a read barrier (the leader confirms
/// its leadership with a quorum; a follower asks the leader for its
/// revision through a linearizable read, then waits to apply up to it).
/// While no leader answers for `serve_persisted_after`, a member that holds
/// data serves its persisted state and says so; one that never held data
/// never serves.
pub(crate) async fn run_xds_gate(
    status: LocalStatus,
    router: Router,
    serve_persisted_after: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // The process start counts as the last contact: a replica restarted
    // during a quorum loss waits the bound before serving what it has.
    let mut last_leader = Instant::now();
    loop {
        let next = match check(&status, &router).await {
            Ok(()) => {
                last_leader = Instant::now();
                XdsReadiness::Ready
            }
            Err(Check::NotMember(why)) => XdsReadiness::NotReady(why),
            Err(Check::Behind(why)) => {
                last_leader = Instant::now();
                XdsReadiness::NotReady(why)
            }
            Err(Check::NoLeader(why)) => {
                let revision = status.sm.revision();
                let gone = last_leader.elapsed();
                if gone >= serve_persisted_after && revision > 0 {
                    XdsReadiness::Persisted(format!(
                        "{why}; no leader for {} s: serving the persisted state at revision {revision}",
                        gone.as_secs()
                    ))
                } else {
                    XdsReadiness::NotReady(why)
                }
            }
        };
        let prev = status.gate.set(next.clone());
        if std::mem::discriminant(&prev) != std::mem::discriminant(&next) {
            let revision = status.sm.revision();
            match &next {
                XdsReadiness::Ready => info!(revision, "xDS ready: caught up with the leader"),
                XdsReadiness::NotReady(why) => {
                    info!(revision, reason = %why, "xDS not ready: new streams are refused")
                }
                XdsReadiness::Persisted(why) => {
                    warn!(revision, reason = %why, "xDS serving the persisted state without a leader")
                }
            }
        }
        // Quick while not ready (Envoys are waiting); a barrier a second
        // while ready keeps a replica that falls behind from taking streams.
        let pause = match next {
            XdsReadiness::Ready => Duration::from_secs(1),
            _ => Duration::from_millis(250),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
    }
}

async fn check(status: &LocalStatus, router: &Router) -> Result<(), Check> {
    let leadership = &status.leadership;
    {
        let m = leadership.raft().metrics().borrow().clone();
        if m.membership_config
            .membership()
            .get_node(&leadership.id())
            .is_none()
        {
            return Err(Check::NotMember(
                "not a member of a cluster (not initialized, or not yet added)".into(),
            ));
        }
    }
    caught_up_with_leader(leadership, &status.sm, router).await
}

/// A read barrier for a replica: waits until it applied what the leader
/// had committed when asked (the leader confirms its leadership with a
/// quorum; a follower asks the leader's revision through a linearizable
/// read, then waits to apply up to it).
pub(crate) async fn caught_up_with_leader(
    leadership: &Leadership,
    sm: &StateMachineStore,
    router: &Router,
) -> Result<(), Check> {
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    let target = match leadership.leader() {
        LeaderIs::Removed => {
            return Err(Check::NotMember("removed from the cluster".into()));
        }
        LeaderIs::Unknown => return Err(Check::NoLeader("no leader known".into())),
        // ensure_linearizable also waits until this node applied the
        // read index: nothing left to wait for.
        LeaderIs::Me => {
            return leadership
                .confirm(deadline, "xDS readiness", "")
                .await
                .map_err(|e| Check::NoLeader(format!("read barrier failed: {e}")))
        }
        LeaderIs::Other(id, leader) => {
            let ch = router
                .api_channel(&leader)
                .map_err(|e| Check::NoLeader(e.to_string()))?;
            let req = mark_forwarded(pb::ListRequest {
                kind: BARRIER_KIND.into(),
                consistency: pb::Consistency::Linearizable as i32,
            });
            match tokio::time::timeout(BARRIER_TIMEOUT, ConfigServiceClient::new(ch).list(req))
                .await
            {
                Ok(Ok(r)) => r.into_inner().revision,
                Ok(Err(st)) => {
                    return Err(Check::NoLeader(format!(
                        "read barrier on leader {id} failed: {}",
                        st.message()
                    )))
                }
                Err(_) => {
                    return Err(Check::NoLeader(format!(
                        "read barrier on leader {id} not answered in {BARRIER_TIMEOUT:?}"
                    )))
                }
            }
        }
    };
    // Wait a moment for what is in flight: under steady writes the
    // follower is always a few entries behind the barrier's answer.
    let mut applied = sm.applied_watch();
    let caught_up = tokio::time::timeout(BARRIER_TIMEOUT, async {
        while sm.revision() < target {
            if applied.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let local = sm.revision();
    if caught_up.is_ok() && local >= target {
        Ok(())
    } else {
        Err(Check::Behind(format!(
            "applied revision {local} is behind the leader's {target}"
        )))
    }
}
