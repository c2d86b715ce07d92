//! The loop every stream runs, whichever the variant: read requests,
//! follow pushes, and hold a push's later stages until the client is in
//! sync.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::{lock, push, request, Protocol, Registration, StreamState};
use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::subscription::{SubscriptionState, SyncState};

/// Which part of a push to plan. On ADS a push can stop after a part and
/// wait for the client to be in sync (every latest response answered):
///
/// 1. `New`: move to the newest snapshot; send SDS and CDS. If CDS added
///    clusters, stop: Envoy asks for a new cluster's endpoints only once it
///    has the cluster, and nothing may name a cluster that is still warming.
/// 2. `AfterCds`: EDS (re-sent after any CDS change so clusters warm), LDS,
///    RDS. If anything is left to remove and a referrer changed, stop: a new
///    listener asks for its routes only once it has the listener, and the old
///    listener keeps routing to the old clusters until then.
/// 3. `Removals`: clusters, endpoints and secrets that are gone.
///
/// A stage that has nothing to wait for runs straight into the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    New,
    AfterCds,
    Removals,
}

/// Longest wait for a client to get in sync before the next stage goes
/// anyway (a client that never ACKs must still get its config).
pub(crate) const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends a stream when the server drains or the stream reached its max age.
async fn stream_end(mut drain: watch::Receiver<bool>, max_age: Option<std::time::Duration>) {
    let age = async {
        match max_age {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = drain.wait_for(|d| *d) => {}
        _ = age => {}
    }
}

/// Sends planned responses; the channel is bounded, so this waits for a slow
/// client, but no lock is held here. False when the client went away.
async fn send_all<T>(tx: &mpsc::Sender<Result<T, tonic::Status>>, outs: Vec<T>) -> bool {
    for out in outs {
        if tx.send(Ok(out)).await.is_err() {
            return false;
        }
    }
    true
}

/// True when every type's latest response was acknowledged or rejected.
fn synced<S: SubscriptionState>(st: &StreamState<S>) -> bool {
    st.subs.values().all(|s| s.sync_state() != SyncState::Stale)
}

/// Runs one stream until the client leaves, the server drains, or the
/// stream reaches its max age.
pub(crate) async fn run<P: Protocol>(
    inner: Arc<Inner>,
    mut inbound: tonic::Streaming<P::Req>,
    peer: tonic::Extensions,
    variant: Variant,
    fixed: Option<&'static str>,
    tx: mpsc::Sender<Result<P::Out, Status>>,
) where
    tonic::Streaming<P::Req>: Send,
{
    let mut push = inner.push.clone();
    push.borrow_and_update();
    let end = stream_end(inner.drain.subscribe(), inner.config.max_connection_age);
    tokio::pin!(end);
    let mut reg: Option<Registration<P::Sub>> = None;
    // The stage a push waits to run, and until when; plus whether a newer
    // push arrived meanwhile (it runs once the current one is done).
    let mut gate: Option<(Stage, Instant)> = None;
    let mut pending = false;
    loop {
        let deadline = gate
            .map(|g| g.1)
            .unwrap_or_else(|| Instant::now() + GATE_WAIT);
        let mut next: Option<Stage> = None;
        tokio::select! {
            _ = &mut end => break,
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        // The client learns why (an oversized request's
                        // OUT_OF_RANGE, say), not a bare OK end of stream.
                        tracing::debug!(%status, "stream read failed");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let waiting = gate.map(|g| g.0);
                match request::on_request::<P>(&inner, &mut reg, req, &peer, variant, fixed, waiting) {
                    Ok(outs) => {
                        if !send_all(&tx, outs).await {
                            break;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
                if let (Some((stage, until)), Some(r)) = (gate, &reg) {
                    if synced(&lock(&r.state)) {
                        let grace = inner.config.removal_grace;
                        if stage == Stage::Removals && !grace.is_zero() {
                            // In sync means Envoy took the new listeners and
                            // routes; its workers switch over a moment later.
                            gate = Some((stage, until.min(Instant::now() + grace)));
                        } else {
                            next = Some(stage);
                        }
                    }
                }
            }
            changed = push.changed(), if reg.is_some() => {
                if changed.is_err() {
                    break;
                }
                if gate.is_some() {
                    pending = true;
                } else {
                    next = Some(Stage::New);
                }
            }
            _ = tokio::time::sleep_until(deadline), if gate.is_some() => {
                tracing::debug!("client not in sync in time; sending the rest of the push");
                next = gate.map(|g| g.0);
            }
        }
        let Some(r) = &reg else { continue };
        let mut ok = true;
        while let Some(stage) = next.take() {
            gate = None;
            let (outs, wait) = plan_push::<P>(&inner, &r.state, variant, stage).await;
            if !send_all(&tx, outs).await {
                ok = false;
                break;
            }
            match wait {
                Some(w) => gate = Some((w, Instant::now() + GATE_WAIT)),
                None if std::mem::take(&mut pending) => next = Some(Stage::New),
                None => {}
            }
        }
        if !ok {
            break;
        }
    }
}

/// Plans under a permit: it bounds the CPU work of planning; sending only
/// waits on this client, so it happens after the permit is returned.
async fn plan_push<P: Protocol>(
    inner: &Inner,
    state: &Mutex<StreamState<P::Sub>>,
    variant: Variant,
    stage: Stage,
) -> (Vec<P::Out>, Option<Stage>) {
    let _permit = inner.permits.acquire().await;
    inner.metrics.push_started();
    let planned = push::on_push::<P>(inner, state, variant.is_ads(), stage);
    inner.metrics.push_finished();
    if !planned.0.is_empty() {
        XdsMetrics::inc(&inner.metrics.pushes);
    }
    planned
}
