//! The one group-commit loop both lanes run on the leader. Writes queue;
//! each round takes every queued write, lets the lane's [`Admission`] decide
//! which of them go into the log entry, proposes those as one entry, and
//! answers each with its outcome. One fsync round then commits many writes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_store::{Batch, NodeId, NodeInfo, Raft, Request, StateMachineStore, Txn, TxnOutcome};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::ApiError;
use crate::metrics::{Lane, WriteMetrics};

use super::leader_time;

/// Most bytes of transactions in one log entry: two of the largest.
const MAX_BATCH_BYTES: usize = 2 * meridian_store::limits::MAX_TXN_BYTES;

/// What a write is answered with: its outcome in the log, or why it has none.
pub(crate) type Reply = Result<TxnOutcome, ApiError>;

/// A queued write.
pub(crate) struct Pending {
    pub txn: Txn,
    pub dry_run: bool,
    reply: oneshot::Sender<Reply>,
}

impl Pending {
    /// A write as the lane's queue would hold it, and where its answer goes.
    #[cfg(test)]
    pub(crate) fn new(txn: Txn) -> (Pending, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        let p = Pending {
            txn,
            dry_run: false,
            reply,
        };
        (p, rx)
    }

    pub(crate) fn answer(self, r: Reply) {
        // The writer may have given up (its deadline passed): nobody to tell.
        let _ = self.reply.send(r);
    }
}

/// The writes of one round that go into the log entry, and the config
/// sequence number they were validated against (`None`: not guarded).
pub(crate) struct Admitted {
    pub base_config_seq: Option<u64>,
    pub accepted: Vec<Pending>,
}

/// What a lane decides before its writes are proposed.
pub(crate) trait Admission: Send + 'static {
    const LANE: Lane;
    /// Most transactions in one log entry.
    const MAX_BATCH: usize;

    /// Takes this round's writes: answers those that will not be proposed
    /// ([`Pending::answer`]), pushes onto `later` those that must wait for
    /// the next round, and returns the rest.
    fn admit(&mut self, queued: Vec<Pending>, later: &mut Vec<Pending>) -> Admitted;

    /// The admitted writes committed with these outcomes (each with its
    /// own revision).
    fn committed(&mut self, _batch: &[Pending], _outcomes: &[TxnOutcome]) {}

    /// The admitted writes failed, or their outcome is unknown.
    fn failed(&mut self) {}
}

/// A lane's queue.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::Sender<Pending>,
    write_timeout: Duration,
}

impl GroupCommit {
    pub(crate) fn start<A: Admission>(
        admission: A,
        raft: Raft,
        sm: StateMachineStore,
        write_timeout: Duration,
        metrics: Arc<WriteMetrics>,
    ) -> GroupCommit {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(admission, raft, sm, rx, write_timeout, metrics));
        GroupCommit { tx, write_timeout }
    }

    /// Queues a write and waits for its answer, at most until `deadline`.
    pub(crate) async fn submit(&self, txn: Txn, dry_run: bool, deadline: Instant) -> Reply {
        let (reply, rx) = oneshot::channel();
        let down = || ApiError::Unavailable("node is shutting down".into());
        self.tx
            .send(Pending {
                txn,
                dry_run,
                reply,
            })
            .await
            .map_err(|_| down())?;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(r) => r.map_err(|_| down())?,
            Err(_) => Err(not_committed(self.write_timeout)),
        }
    }
}

fn not_committed(write_timeout: Duration) -> ApiError {
    ApiError::NoQuorum(format!(
        "no quorum: the write was not committed within {write_timeout:?}; its outcome is unknown, \
         retry it with the same request id (a majority of voters must be up and reachable)"
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run<A: Admission>(
    mut admission: A,
    raft: Raft,
    sm: StateMachineStore,
    mut rx: mpsc::Receiver<Pending>,
    write_timeout: Duration,
    metrics: Arc<WriteMetrics>,
) {
    let lane = A::LANE.name();
    let mut carry: Vec<Pending> = Vec::new();
    loop {
        if !fill_batch(&mut rx, &mut carry, A::MAX_BATCH).await {
            return;
        }
        carry.retain(|p| !p.reply.is_closed());
        let queued = take_within(&mut carry, MAX_BATCH_BYTES);
        if queued.is_empty() {
            continue;
        }
        let Admitted {
            base_config_seq,
            accepted,
        } = admission.admit(queued, &mut carry);
        if accepted.is_empty() {
            continue;
        }

        let n = accepted.len();
        let request = Request::Batch(Batch {
            base_config_seq,
            proposed_at_ms: leader_time::proposed_at_ms(now_ms(), sm.last_batch(), Instant::now()),
            txns: accepted.iter().map(|p| p.txn.clone()).collect(),
        });
        let counters = metrics.lane(A::LANE);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match tokio::time::timeout(write_timeout, raft.client_write(request)).await {
            Ok(Ok(resp)) => {
                metrics.proposal_latency.observe(started.elapsed());
                counters.txns.fetch_add(n as u64, Ordering::Relaxed);
                let index = resp.log_id.index;
                admission.committed(&accepted, &resp.data.outcomes);
                debug!(lane, txns = n, index, "batch committed");
                for (p, outcome) in accepted.into_iter().zip(resp.data.outcomes) {
                    match outcome {
                        // Validated against a config that changed before
                        // apply: decided again in the next round.
                        TxnOutcome::Retry => carry.push(p),
                        o => p.answer(Ok(o)),
                    }
                }
            }
            Ok(Err(e)) => {
                counters.failed();
                admission.failed();
                let err = proposal_error(&e, lane);
                for p in accepted {
                    p.answer(Err(err.clone()));
                }
            }
            Err(_) => {
                counters.failed();
                admission.failed();
                warn!(
                    lane,
                    txns = n,
                    timeout_ms = write_timeout.as_millis() as u64,
                    "proposal timed out"
                );
                for p in accepted {
                    p.answer(Err(not_committed(write_timeout)));
                }
            }
        }
    }
}

/// Waits for at least one queued write (unless some are carried over), then
/// takes whatever else is queued, up to `max`: everything that arrived while
/// the previous batch was committing goes into the next one. Returns false
/// once the queue is closed and nothing is left.
async fn fill_batch<T>(rx: &mut mpsc::Receiver<T>, carry: &mut Vec<T>, max: usize) -> bool {
    if carry.is_empty() {
        match rx.recv().await {
            Some(p) => carry.push(p),
            None => return false,
        }
    }
    while carry.len() < max {
        match rx.try_recv() {
            Ok(p) => carry.push(p),
            Err(_) => break,
        }
    }
    true
}

/// Takes writes from the front of `carry` while their sizes add up to at
/// most `budget` bytes (always at least one): the rest waits for the next
/// round, so a log entry stays far below the peer transport's message cap
/// however large the writes queued at once.
fn take_within(carry: &mut Vec<Pending>, budget: usize) -> Vec<Pending> {
    let mut used = 0;
    let n = carry
        .iter()
        .position(|p| {
            used += p.txn.size_bytes();
            used > budget
        })
        .unwrap_or(carry.len())
        .max(1)
        .min(carry.len());
    let rest = carry.split_off(n);
    std::mem::replace(carry, rest)
}

/// What a failed `client_write` means for each write of its batch.
fn proposal_error(
    e: &RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
    lane: &str,
) -> ApiError {
    if e.forward_to_leader::<NodeInfo>().is_some() {
        return ApiError::NotLeader;
    }
    warn!(error = %e, lane, "proposal failed");
    ApiError::Unavailable(format!("write failed: {e}"))
}

#[cfg(test)]
mod tests;
