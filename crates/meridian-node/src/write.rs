//! The write path on the leader: two lanes over one group-commit loop
//! ([`group_commit`]). [`ConfigWrites`] admits a batch after validating it
//! against the whole config; [`EndpointWrites`] admits agents' writes
//! without config validation. Both are only ever called on the leader
//! (writes are routed there first); a lane on a follower answers
//! "not the leader".

mod conflict;
mod endpoints;
mod group_commit;
pub(crate) mod leader_time;
mod overlay;
mod validation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_store::{Raft, StateMachineStore, Txn, TxnOutcome};

use crate::error::ApiError;
use crate::metrics::WriteMetrics;
use group_commit::GroupCommit;

#[derive(Debug)]
pub(crate) struct WriteResult {
    pub revision: u64,
    pub duplicate: bool,
}

/// Config writes: validated, guarded by the config they were validated against.
#[derive(Clone)]
pub(crate) struct ConfigWrites {
    lane: GroupCommit,
    sm: StateMachineStore,
    raft: Raft,
}

impl ConfigWrites {
    pub(crate) fn start(
        raft: Raft,
        sm: StateMachineStore,
        write_timeout: Duration,
        metrics: Arc<WriteMetrics>,
    ) -> Self {
        let admission = validation::Validation::new(sm.clone(), metrics.clone());
        ConfigWrites {
            lane: GroupCommit::start(admission, raft.clone(), sm.clone(), write_timeout, metrics),
            sm,
            raft,
        }
    }

    /// Commits (or, dry, only validates) `txn`. A refusal decided at
    /// admission (a failed precondition, invalid config) was decided on this
    /// node's own replica, which a deposed leader that has not yet heard of
    /// the new term holds stale (the chaos suite's `stale-conflict`
    /// finding). So before such a refusal is answered, a read barrier
    /// confirms leadership; if config was applied since the write was
    /// submitted, the refusal may rest on an old state and the write is
    /// admitted once more. Refusals decided in apply are in log order and
    /// need none of this.
    pub(crate) async fn submit(
        &self,
        txn: Txn,
        dry_run: bool,
        deadline: Instant,
    ) -> Result<WriteResult, ApiError> {
        let seq_before = self.sm.config_seq();
        let first = self.submit_once(txn.clone(), dry_run, deadline).await;
        if !matches!(first, Err(ApiError::Conflict(_) | ApiError::Invalid(_))) {
            return first;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.forward_to_leader::<meridian_store::NodeInfo>().is_some() => {
                return Err(ApiError::NotLeader)
            }
            Ok(Err(e)) => {
                return Err(ApiError::Unavailable(format!(
                    "write refused, but leadership could not be confirmed: {e}"
                )))
            }
            Err(_) => {
                return Err(ApiError::NoQuorum(
                    "no quorum: the write was refused, but leadership could not be confirmed"
                        .into(),
                ))
            }
        }
        if self.sm.config_seq() == seq_before {
            return first;
        }
        self.submit_once(txn, dry_run, deadline).await
    }

    /// One admission and, if admitted, commit; waits at most until `deadline`.
    async fn submit_once(
        &self,
        txn: Txn,
        dry_run: bool,
        deadline: Instant,
    ) -> Result<WriteResult, ApiError> {
        match self.lane.submit(txn, dry_run, deadline).await? {
            TxnOutcome::Committed { revision } => Ok(WriteResult {
                revision,
                duplicate: false,
            }),
            TxnOutcome::Duplicate { revision } => Ok(WriteResult {
                revision,
                duplicate: true,
            }),
            TxnOutcome::Conflict(c) => Err(ApiError::Conflict(conflict::conflict_message(
                &self.sm,
                &c.key,
                c.expected_revision,
                c.actual_revision,
            ))),
            // The loop carries retries into its next round; should one slip
            // through, the writer's retry policy tries again.
            TxnOutcome::Retry => Err(ApiError::Unavailable(
                "the config changed while the write was validated; retry".into(),
            )),
        }
    }
}

/// Agents' endpoint reports and leases: not validated, not config-guarded.
#[derive(Clone)]
pub(crate) struct EndpointWrites {
    lane: GroupCommit,
}

impl EndpointWrites {
    pub(crate) fn start(
        raft: Raft,
        sm: StateMachineStore,
        write_timeout: Duration,
        metrics: Arc<WriteMetrics>,
    ) -> Self {
        EndpointWrites {
            lane: GroupCommit::start(endpoints::AgentKindsOnly, raft, sm, write_timeout, metrics),
        }
    }

    /// Commits `txn`; a failed precondition is an outcome, not an error,
    /// because agents act on whose claim it was.
    pub(crate) async fn submit(&self, txn: Txn, deadline: Instant) -> Result<TxnOutcome, ApiError> {
        self.lane.submit(txn, false, deadline).await
    }
}
