//! The endpoint lane: agents' reports and lease changes, group-committed like
//! config writes but without config validation and without the config guard
//! (`base_config_seq: None`), so endpoint churn never makes config writes
//! retry. Runs on the leader; other nodes forward to it over the peer
//! listener ([`crate::internal`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_store::{Batch, Raft, Request, Txn, TxnOutcome};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::metrics::WriteMetrics;
use crate::proposer::WriteError;

const MAX_BATCH: usize = 4096;

struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnOutcome, WriteError>>,
}

#[derive(Clone)]
pub(crate) struct EndpointLane {
    tx: mpsc::Sender<Pending>,
}

impl EndpointLane {
    pub(crate) fn start(
        raft: Raft,
        write_timeout: Duration,
        metrics: Arc<WriteMetrics>,
    ) -> EndpointLane {
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(run(raft, rx, write_timeout, metrics));
        EndpointLane { tx }
    }

    pub(crate) async fn submit(&self, txn: Txn) -> Result<TxnOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        let down = || WriteError::Api(ApiError::Unavailable("node is shutting down".into()));
        self.tx
            .send(Pending { txn, reply })
            .await
            .map_err(|_| down())?;
        rx.await.map_err(|_| down())?
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    write_timeout: Duration,
    metrics: Arc<WriteMetrics>,
) {
    let mut carry: Vec<Pending> = Vec::new();
    loop {
        if !crate::proposer::fill_batch(&mut rx, &mut carry, MAX_BATCH).await {
            return;
        }
        let waiting: Vec<Pending> = std::mem::take(&mut carry)
            .into_iter()
            .filter(|p| !p.reply.is_closed())
            .collect();
        if waiting.is_empty() {
            continue;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let request = Request::Batch(Batch {
            base_config_seq: None,
            proposed_at_ms: now_ms,
            txns: waiting.iter().map(|p| p.txn.clone()).collect(),
        });
        metrics.endpoint_batches.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match tokio::time::timeout(write_timeout, raft.client_write(request)).await {
            Ok(Ok(resp)) => {
                metrics.proposal_latency.observe(started.elapsed());
                metrics
                    .endpoint_txns
                    .fetch_add(waiting.len() as u64, Ordering::Relaxed);
                for (p, outcome) in waiting.into_iter().zip(resp.data.outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Ok(Err(e)) => {
                let err = crate::proposer::proposal_error(&e, "endpoint batch");
                for p in waiting {
                    let _ = p.reply.send(Err(err.clone()));
                }
            }
            Err(_) => {
                for p in waiting {
                    let _ = p
                        .reply
                        .send(Err(WriteError::Api(ApiError::Unavailable(format!(
                            "no quorum: not committed within {write_timeout:?}"
                        )))));
                }
            }
        }
    }
}
