//! One xDS stream: its state, and the loop that reads requests, follows
//! pushes and writes responses.

mod delta;
mod sotw;

pub(crate) use delta::Delta;
pub(crate) use sotw::{Sotw, SotwOut};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::source::Viewer;
use crate::subscription::{DeltaSubscription, SotwSubscription};
use crate::view::View;

/// Everything the server knows about one stream. Shared with the status
/// registry behind a `std` mutex that is only held for bookkeeping, never
/// across an await.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub id: u64,
    pub node: Node,
    pub viewer: Viewer,
    pub variant: Variant,
    pub connected_at: SystemTime,
    pub sotw: BTreeMap<String, SotwSubscription>,
    pub delta: BTreeMap<String, DeltaSubscription>,
    /// The snapshot this stream serves. Requests are answered from it and
    /// only a push moves it forward, so a request arriving during a debounce
    /// cannot send part of a change out of push order.
    pub view: Option<Arc<View>>,
    /// Per type, the view revision whose first ACK was timed already.
    pub timed_ack: BTreeMap<String, u64>,
    nonce: u64,
}

impl StreamState {
    pub fn new(id: u64, node: Node, viewer: Viewer, variant: Variant) -> StreamState {
        StreamState {
            id,
            node,
            viewer,
            variant,
            connected_at: SystemTime::now(),
            sotw: BTreeMap::new(),
            delta: BTreeMap::new(),
            view: None,
            timed_ack: BTreeMap::new(),
            nonce: 0,
        }
    }

    /// Nonces only need to be unique within the stream; the stream id makes
    /// them unique across streams too, which helps when reading logs.
    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        format!("{}-{}", self.id, self.nonce)
    }
}

/// The registration of a stream; unregisters and fixes gauges when dropped,
/// whichever way the stream ends.
pub(crate) struct Registration {
    pub inner: Arc<Inner>,
    pub state: Arc<Mutex<StreamState>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (id, variant, types) = {
            let st = lock(&self.state);
            (
                st.id,
                st.variant,
                st.sotw
                    .keys()
                    .chain(st.delta.keys())
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        self.inner
            .registry
            .lock()
            .expect("registry lock")
            .remove(&id);
        for t in types {
            self.inner.metrics.type_subscribed(&t, variant, -1);
        }
    }
}

pub(crate) fn lock(state: &Mutex<StreamState>) -> std::sync::MutexGuard<'_, StreamState> {
    // A panic while holding the lock leaves plain bookkeeping data behind;
    // keep serving rather than poisoning every later reader.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends a stream when the server drains or the stream reached its max age.
pub(crate) async fn stream_end(
    mut drain: watch::Receiver<bool>,
    max_age: Option<std::time::Duration>,
) {
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

/// Registers a stream on its first request.
pub(crate) fn register(inner: &Arc<Inner>, node: Option<&Node>, variant: Variant) -> Registration {
    let id = inner.next_stream_id();
    let mut node = node.cloned().unwrap_or_default();
    // Envoy lists every extension it was built with (hundreds of entries,
    // tens of KB); nothing here reads them, and keeping them would make the
    // per-stream memory grow with Envoy's build rather than with its config.
    node.extensions = Vec::new();
    let viewer = Viewer::from_node(Some(&node), &inner.config.region);
    let state = Arc::new(Mutex::new(StreamState::new(id, node, viewer, variant)));
    inner
        .registry
        .lock()
        .expect("registry lock")
        .insert(id, state.clone());
    Registration {
        inner: inner.clone(),
        state,
    }
}

/// Counts a stream's first interest in a type.
pub(crate) fn note_type(metrics: &XdsMetrics, variant: Variant, type_url: &str, new: bool) {
    if new {
        metrics.type_subscribed(type_url, variant, 1);
    }
}

/// Sends planned responses; the channel is bounded, so this waits for a slow
/// client, but no lock is held here. False when the client went away.
pub(crate) async fn send_all<T>(tx: &mpsc::Sender<Result<T, tonic::Status>>, outs: Vec<T>) -> bool {
    for out in outs {
        if tx.send(Ok(out)).await.is_err() {
            return false;
        }
    }
    true
}

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

/// What differs between SotW and delta streams; the loop in [`run`] is shared.
pub(crate) trait Flavor: Send + 'static {
    type Req: Send + 'static;
    type Out: Send + 'static;

    /// Applies a request and plans its answer.
    fn on_request(
        inner: &Arc<Inner>,
        reg: &mut Option<Registration>,
        req: Self::Req,
        variant: Variant,
        fixed: Option<&'static str>,
    ) -> Result<Vec<Self::Out>, Status>;

    /// Plans `stage` of a push; returns the responses and the stage to run
    /// once the client is in sync, if the push must wait.
    fn push(
        inner: &Inner,
        state: &Mutex<StreamState>,
        ads: bool,
        stage: Stage,
    ) -> (Vec<Self::Out>, Option<Stage>);

    /// True when every type's latest response was acknowledged or rejected.
    fn synced(st: &StreamState) -> bool;
}

/// Longest wait for a client to get in sync before the next stage goes
/// anyway (a client that never ACKs must still get its config).
pub(crate) const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one stream until the client leaves, the server drains, or the
/// stream reaches its max age.
pub(crate) async fn run<F: Flavor>(
    inner: Arc<Inner>,
    mut inbound: tonic::Streaming<F::Req>,
    variant: Variant,
    fixed: Option<&'static str>,
    tx: mpsc::Sender<Result<F::Out, Status>>,
) where
    tonic::Streaming<F::Req>: Send,
{
    let mut push = inner.push.clone();
    push.borrow_and_update();
    let end = stream_end(inner.drain.subscribe(), inner.config.max_connection_age);
    tokio::pin!(end);
    let mut reg: Option<Registration> = None;
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
                        tracing::debug!(%status, "stream read failed");
                        break;
                    }
                };
                match F::on_request(&inner, &mut reg, req, variant, fixed) {
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
                    if F::synced(&lock(&r.state)) {
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
            let (outs, wait) = plan_push::<F>(&inner, &r.state, variant, stage).await;
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
async fn plan_push<F: Flavor>(
    inner: &Inner,
    state: &Mutex<StreamState>,
    variant: Variant,
    stage: Stage,
) -> (Vec<F::Out>, Option<Stage>) {
    let _permit = inner.permits.acquire().await;
    inner.metrics.push_started();
    let planned = F::push(inner, state, variant.is_ads(), stage);
    inner.metrics.push_finished();
    if !planned.0.is_empty() {
        XdsMetrics::inc(&inner.metrics.pushes);
    }
    planned
}

/// Times the first ACK of a type after the stream moved to a new revision:
/// the push latency, from commit to ACK.
pub(crate) fn time_ack(
    inner: &crate::server::Inner,
    view: &Option<Arc<View>>,
    timed_ack: &mut BTreeMap<String, u64>,
    type_url: &str,
) {
    let Some(view) = view else { return };
    let view = &view.snap;
    if view.committed_at_ms == 0 {
        return;
    }
    let timed = timed_ack.entry(type_url.to_string()).or_insert(0);
    if *timed >= view.revision {
        return;
    }
    *timed = view.revision;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    inner
        .metrics
        .push_to_ack
        .observe(std::time::Duration::from_millis(
            now.saturating_sub(view.committed_at_ms),
        ));
}
