//! The leader's group-commit proposer.
//!
//! Writes queue here; each round takes every queued transaction, validates
//! them one after the other against the config as it will be (the
//! [`Overlay`]), and proposes the accepted ones as one log entry guarded by the
//! config sequence number they were validated against. One fsync round then
//! commits many writes, and validation always sees a serial order, so invalid
//! config never enters the log. Rejected in DECISIONS.md: validating inside
//! apply (a validator change between versions would make replicas diverge).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_store::{Batch, Raft, Request, StateMachineStore, Txn, TxnOutcome};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::ApiError;
use crate::metrics::WriteMetrics;
use crate::validate::{Overlay, Prepared, Undo, Verdict};

/// Most transactions in one log entry.
const MAX_BATCH: usize = 1024;

#[derive(Debug)]
pub(crate) struct WriteResult {
    pub revision: u64,
    pub duplicate: bool,
}

/// What can go wrong with a write on this node.
#[derive(Debug, Clone)]
pub(crate) enum WriteError {
    /// This node is not (or no longer) the leader; try the leader.
    NotLeader,
    Api(ApiError),
}

struct Pending {
    txn: Txn,
    dry_run: bool,
    reply: oneshot::Sender<Result<WriteResult, WriteError>>,
}

#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub(crate) fn start(
        raft: Raft,
        sm: StateMachineStore,
        write_timeout: Duration,
        metrics: Arc<WriteMetrics>,
    ) -> Proposer {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(raft, sm, rx, write_timeout, metrics));
        Proposer { tx }
    }

    pub(crate) async fn submit(&self, txn: Txn, dry_run: bool) -> Result<WriteResult, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                txn,
                dry_run,
                reply,
            })
            .await
            .map_err(|_| WriteError::Api(ApiError::Unavailable("node is shutting down".into())))?;
        rx.await
            .map_err(|_| WriteError::Api(ApiError::Unavailable("node is shutting down".into())))?
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run(
    raft: Raft,
    sm: StateMachineStore,
    mut rx: mpsc::Receiver<Pending>,
    write_timeout: Duration,
    metrics: Arc<WriteMetrics>,
) {
    let mut overlay: Option<(u64, Overlay)> = None;
    let mut carry: Vec<Pending> = Vec::new();
    loop {
        if !crate::proposer::fill_batch(&mut rx, &mut carry, MAX_BATCH).await {
            return;
        }

        let mut taken: Vec<Pending> = std::mem::take(&mut carry);
        taken.retain(|p| !p.reply.is_closed());
        if taken.is_empty() {
            continue;
        }

        let seq = sm.config_seq();
        if overlay.as_ref().map(|(s, _)| *s) != Some(seq) {
            let (o, broken) = Overlay::from_state(sm.list(None));
            for b in broken {
                warn!(object = %b, "stored object no longer parses; left out of validation");
            }
            overlay = Some((seq, o));
        }
        let ov = &mut overlay.as_mut().expect("set above").1;
        ov.start_batch();

        // Each transaction is checked on its own and applied to the overlay;
        // the rules between objects are then checked once for the whole
        // batch. Only when that finds an error is the batch replayed one
        // transaction at a time to find which ones to refuse.
        let mut accepted: Vec<(Pending, Prepared, Undo)> = Vec::new();
        for p in taken {
            // Retried writes whose first attempt committed are answered from
            // the de-duplication table before validation: against today's
            // state the retry could look like a conflict.
            if let Some(r) = dedup_answer(&sm, &p) {
                let _ = p.reply.send(r);
                continue;
            }
            let prepared = match ov.prepare(&p.txn) {
                Ok(pr) => pr,
                Err(Verdict::Defer) => {
                    carry.push(p);
                    continue;
                }
                Err(v) => {
                    refuse(&sm, &metrics, p, v);
                    continue;
                }
            };
            let undo = match ov.apply(&prepared) {
                Ok(u) => u,
                Err(errors) => {
                    refuse(&sm, &metrics, p, Verdict::Invalid(errors));
                    continue;
                }
            };
            if p.dry_run {
                let errors = ov.relation_errors();
                ov.undo(undo);
                if errors.is_empty() {
                    let _ = p.reply.send(Ok(WriteResult {
                        revision: sm.revision(),
                        duplicate: false,
                    }));
                } else {
                    refuse(&sm, &metrics, p, Verdict::Invalid(errors));
                }
                continue;
            }
            accepted.push((p, prepared, undo));
        }
        if !ov.relation_errors().is_empty() {
            let mut prepared_all = Vec::new();
            while let Some((p, pr, undo)) = accepted.pop() {
                ov.undo(undo);
                prepared_all.push((p, pr));
            }
            prepared_all.reverse();
            for (p, pr) in prepared_all {
                match ov.apply(&pr) {
                    Err(errors) => refuse(&sm, &metrics, p, Verdict::Invalid(errors)),
                    Ok(undo) => {
                        let errors = ov.relation_errors();
                        if errors.is_empty() {
                            accepted.push((p, pr, undo));
                        } else {
                            ov.undo(undo);
                            refuse(&sm, &metrics, p, Verdict::Invalid(errors));
                        }
                    }
                }
            }
        }
        let mut batch = Vec::with_capacity(accepted.len());
        let mut waiting = Vec::with_capacity(accepted.len());
        for (p, pr, _) in accepted {
            batch.push(pr.txn);
            waiting.push(p);
        }
        if batch.is_empty() {
            continue;
        }

        let n = batch.len();
        let request = Request::Batch(Batch {
            base_config_seq: Some(seq),
            proposed_at_ms: now_ms(),
            txns: batch.clone(),
        });
        metrics.proposals.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match tokio::time::timeout(write_timeout, raft.client_write(request)).await {
            Ok(Ok(resp)) => {
                metrics.proposal_latency.observe(started.elapsed());
                metrics
                    .txns_committed
                    .fetch_add(n as u64, Ordering::Relaxed);
                let index = resp.log_id.index;
                let all_committed = resp
                    .data
                    .outcomes
                    .iter()
                    .all(|o| matches!(o, TxnOutcome::Committed { .. }));
                if all_committed && resp.data.outcomes.len() == n {
                    if let Some((s, o)) = overlay.as_mut() {
                        o.committed(&batch, index);
                        *s = seq + 1;
                    }
                } else {
                    overlay = None;
                }
                debug!(txns = n, index, "batch committed");
                for (p, outcome) in waiting.into_iter().zip(resp.data.outcomes) {
                    let r = match outcome {
                        TxnOutcome::Committed { revision } => Ok(WriteResult {
                            revision,
                            duplicate: false,
                        }),
                        TxnOutcome::Duplicate { revision } => Ok(WriteResult {
                            revision,
                            duplicate: true,
                        }),
                        TxnOutcome::Conflict(c) => Err(WriteError::Api(ApiError::Conflict(
                            conflict_message(&sm, &c.key, c.expected_revision, c.actual_revision),
                        ))),
                        TxnOutcome::Retry => {
                            carry.push(p);
                            continue;
                        }
                    };
                    let _ = p.reply.send(r);
                }
            }
            Ok(Err(e)) => {
                metrics.proposal_failures.fetch_add(1, Ordering::Relaxed);
                overlay = None;
                let err = proposal_error(&e, "config batch");
                for p in waiting {
                    let _ = p.reply.send(Err(err.clone()));
                }
            }
            Err(_) => {
                metrics.proposal_failures.fetch_add(1, Ordering::Relaxed);
                overlay = None;
                warn!(
                    txns = n,
                    timeout_ms = write_timeout.as_millis() as u64,
                    "proposal timed out"
                );
                for p in waiting {
                    let _ = p.reply.send(Err(WriteError::Api(ApiError::Unavailable(format!(
                        "no quorum: the write was not committed within {:?}; its outcome is unknown, \
                         retry it with the same request id (a majority of voters must be up and reachable)",
                        write_timeout
                    )))));
                }
            }
        }
    }
}

/// Waits for at least one queued write (unless some are carried over), then
/// takes whatever else is queued, up to `max`: everything that arrived while
/// the previous batch was committing goes into the next one. Returns false
/// once the queue is closed and nothing is left.
pub(crate) async fn fill_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    carry: &mut Vec<T>,
    max: usize,
) -> bool {
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

/// What a failed `client_write` means for each write of its batch: the
/// caller retries on the leader for `NotLeader`, and reports the rest.
pub(crate) fn proposal_error(
    e: &openraft::error::RaftError<
        meridian_store::NodeId,
        openraft::error::ClientWriteError<meridian_store::NodeId, meridian_store::NodeInfo>,
    >,
    what: &str,
) -> WriteError {
    if e.forward_to_leader::<meridian_store::NodeInfo>().is_some() {
        return WriteError::NotLeader;
    }
    warn!(error = %e, batch = what, "proposal failed");
    WriteError::Api(ApiError::Unavailable(format!("write failed: {e}")))
}

/// Answers a transaction that will not be proposed.
fn refuse(sm: &StateMachineStore, metrics: &WriteMetrics, p: Pending, v: Verdict) {
    metrics.txns_rejected.fetch_add(1, Ordering::Relaxed);
    let err = match v {
        Verdict::Invalid(errors) => ApiError::Invalid(errors.join("\n")),
        Verdict::Conflict {
            key,
            expected,
            actual,
        } => ApiError::Conflict(conflict_message(sm, &key, expected, actual)),
        Verdict::Defer => unreachable!("deferred transactions are carried, not refused"),
    };
    let _ = p.reply.send(Err(WriteError::Api(err)));
}

/// The answer for a request id that was applied before, if it was.
fn dedup_answer(sm: &StateMachineStore, p: &Pending) -> Option<Result<WriteResult, WriteError>> {
    if p.txn.request_id.is_empty() || p.dry_run {
        return None;
    }
    match sm.dedup_outcome(&p.txn.request_id)? {
        TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision } => {
            Some(Ok(WriteResult {
                revision,
                duplicate: true,
            }))
        }
        TxnOutcome::Conflict(c) => Some(Err(WriteError::Api(ApiError::Conflict(
            conflict_message(sm, &c.key, c.expected_revision, c.actual_revision),
        )))),
        TxnOutcome::Retry => None,
    }
}

fn conflict_message(
    sm: &StateMachineStore,
    key: &meridian_store::ObjectKey,
    expected: u64,
    actual: u64,
) -> String {
    let current = sm.get(key);
    match (expected, current) {
        (0, Some(obj)) => format!(
            "{key}: already exists (revision {}, changed at {}); get it and retry with --revision {}",
            obj.revision,
            fmt_ms(obj.updated_at_ms),
            obj.revision
        ),
        (_, None) => format!("{key}: expected revision {expected}, but it does not exist (deleted or never created)"),
        (_, Some(obj)) => format!(
            "{key}: expected revision {expected}, but it is at revision {} (changed at {}); get it again, re-apply your change and retry",
            if actual == 0 { obj.revision } else { actual },
            fmt_ms(obj.updated_at_ms)
        ),
    }
}

pub(crate) fn fmt_ms(ms: u64) -> String {
    // RFC 3339 in UTC without pulling in a date crate.
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_ms_as_rfc3339() {
        assert_eq!(super::fmt_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::fmt_ms(1_764_175_000_000), "2025-11-26T16:36:40Z");
    }
}
