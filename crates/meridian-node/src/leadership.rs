//! Who leads, as this node sees it, and the leader-side read barrier.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_peer::Activity;
use meridian_store::{NodeId, NodeInfo, Raft};

use crate::error::ApiError;

pub(crate) enum LeaderIs {
    Me,
    Other(NodeId, NodeInfo),
    Unknown,
    /// This node was removed from the cluster.
    Removed,
}

#[derive(Clone)]
pub(crate) struct Leadership {
    id: NodeId,
    raft: Raft,
    activity: Activity,
    /// How long a follower may go without hearing from the leader (and a
    /// leader from a quorum) and still call itself in contact.
    contact_limit_ms: u64,
    /// The last log index this process found on disk at start, and whether
    /// the state machine has applied up to it since. openraft 0.9 restarts
    /// a leader whose vote was committed as leader in the same term, and its
    /// read barrier is max(committed, the term's first entry): the committed
    /// index is restored from a marker that is not flushed (DECISIONS.md),
    /// and the term's first entry is old, so right after a restart of every
    /// node the barrier can sit below writes that were acknowledged before
    /// the crash (the chaos suite's `kill-all` finding). Every acknowledged
    /// write is in the leader's durable log, so once the state machine has
    /// applied the whole log found at start, the barrier is safe again.
    startup_log: u64,
    caught_up: Arc<AtomicBool>,
}

impl Leadership {
    /// `startup_log`: the last log index on disk when the process started,
    /// read from the log store before openraft was started.
    pub(crate) fn new(
        id: NodeId,
        raft: Raft,
        activity: Activity,
        contact_limit_ms: u64,
        startup_log: u64,
    ) -> Self {
        Leadership {
            id,
            raft,
            activity,
            contact_limit_ms,
            startup_log,
            caught_up: Arc::new(AtomicBool::new(startup_log == 0)),
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn contact_limit_ms(&self) -> u64 {
        self.contact_limit_ms
    }

    pub(crate) fn leader(&self) -> LeaderIs {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        let me = self.id;
        // A leader that committed its own removal must not act as leader again:
        // openraft 0.9 panics on a membership change from a removed leader.
        if mem.nodes().next().is_some() && mem.get_node(&me).is_none() {
            return LeaderIs::Removed;
        }
        match m.current_leader {
            Some(id) if id == me && m.state.is_leader() && mem.voter_ids().any(|v| v == me) => {
                LeaderIs::Me
            }
            Some(id) if id == me => LeaderIs::Unknown,
            Some(id) => match mem.get_node(&id) {
                Some(info) => LeaderIs::Other(id, info.clone()),
                None => LeaderIs::Unknown,
            },
            None => LeaderIs::Unknown,
        }
    }

    /// Waits until some node leads; `Me` or `Other`, never `Unknown`.
    pub(crate) async fn await_leader(&self, deadline: Instant) -> Result<LeaderIs, ApiError> {
        loop {
            match self.leader() {
                LeaderIs::Unknown => {}
                LeaderIs::Removed => return Err(ApiError::Removed),
                known => return Ok(known),
            }
            if Instant::now() >= deadline {
                let m = self.raft.metrics().borrow().clone();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                return Err(ApiError::NoLeader(format!(
                    "no leader: no quorum among voters {voters:?} (term {}); writes and linearizable reads are \
                     refused until a majority of voters is up and can reach each other",
                    m.current_term
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On the leader: confirms leadership with a quorum and waits until the
    /// state machine caught up, so what is read here next is linearizable.
    /// `on_timeout` says what to do when the quorum did not answer in time.
    pub(crate) async fn confirm(
        &self,
        deadline: Instant,
        what: &str,
        on_timeout: &str,
    ) -> Result<(), ApiError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => self.applied_log_found_at_start(deadline, what).await,
            Ok(Err(e)) if e.forward_to_leader::<NodeInfo>().is_some() => Err(ApiError::NotLeader),
            Ok(Err(e)) => Err(ApiError::Unavailable(format!("{what} barrier failed: {e}"))),
            Err(_) => Err(ApiError::NoQuorum(format!(
                "no quorum: leadership could not be confirmed{on_timeout}"
            ))),
        }
    }

    /// Waits (once per process) until the state machine applied every entry
    /// the log held at start; see `startup_log`.
    async fn applied_log_found_at_start(
        &self,
        deadline: Instant,
        what: &str,
    ) -> Result<(), ApiError> {
        if self.caught_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self
            .raft
            .wait(Some(left))
            .applied_index_at_least(Some(self.startup_log), "the log found at start")
            .await
        {
            Ok(_) => {
                self.caught_up.store(true, Ordering::Release);
                Ok(())
            }
            Err(_) => Err(ApiError::NoQuorum(format!(
                "no quorum: {what}: this leader restarted and has not yet committed the {} log entries it holds",
                self.startup_log
            ))),
        }
    }

    /// Whether the state machine has applied the whole log found at start:
    /// until then, what it applies is replay, not news.
    pub(crate) fn replayed_log_found_at_start(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
            || self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .is_some_and(|l| l.index >= self.startup_log)
    }

    /// Whether this follower heard from a leader recently.
    pub(crate) fn leader_contact_recent(&self) -> bool {
        self.activity
            .millis_since_append()
            .is_some_and(|ms| ms <= self.contact_limit_ms)
    }
}
