//! One xDS stream: its state, and the loop that reads requests, follows
//! pushes and writes responses.

mod delta;
mod sotw;

pub(crate) use delta::run_delta;
pub(crate) use sotw::run_sotw;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};

use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::source::{ViewSnapshot, Viewer};
use crate::subscription::{DeltaSubscription, SotwSubscription};

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
    pub view: Option<Arc<ViewSnapshot>>,
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
        self.inner
            .registry
            .lock()
            .expect("registry lock")
            .remove(&lock(&self.state).id);
        let st = lock(&self.state);
        for t in st.sotw.keys().chain(st.delta.keys()) {
            self.inner.metrics.type_subscribed(t, st.variant, -1);
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
    let node = node.cloned().unwrap_or_default();
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
