//! One xDS stream: its state, and the core that reads requests, follows
//! pushes and writes responses, shared by SotW and delta.
//!
//! The seam is [`Protocol`]: the core (`request.rs`, `push.rs`, `run.rs`)
//! does the bookkeeping both variants share (registering a type, ACK/NACK
//! metrics and timing, nonces, pending names, sync status, push stages),
//! over a per-variant [`SubscriptionState`]; `sotw.rs` and `delta.rs` keep
//! only how a request changes a subscription and what a response carries.

mod delta;
mod push;
mod request;
mod run;
mod sotw;

pub(crate) use delta::Delta;
pub(crate) use request::admit;
pub(crate) use run::{run, Stage};
pub(crate) use sotw::{Sotw, SotwOut};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::metrics::Variant;
use crate::server::Inner;
use crate::source::Viewer;
use crate::status::ProxyStatus;
use crate::subscription::{Pending, RequestKind, SubscriptionState};
use crate::view::View;

/// Everything the server knows about one stream. Shared with the status
/// registry behind a `std` mutex that is only held for bookkeeping, never
/// across an await.
#[derive(Debug)]
pub(crate) struct StreamState<S> {
    pub id: u64,
    pub node: Node,
    pub viewer: Viewer,
    pub variant: Variant,
    pub connected_at: SystemTime,
    /// By type URL.
    pub subs: BTreeMap<String, S>,
    /// The snapshot this stream serves. Requests are answered from it and
    /// only a push moves it forward, so a request arriving during a debounce
    /// cannot send part of a change out of push order.
    pub view: Option<Arc<View>>,
    /// Per type, the view revision whose first ACK was timed already.
    pub timed_ack: BTreeMap<String, u64>,
    /// Clusters a request-path CDS answer carried whose endpoints are still
    /// to be sent (see [`Protocol::force_endpoints`]).
    pub endpoints_due: std::collections::BTreeSet<Arc<str>>,
    nonce: u64,
}

impl<S> StreamState<S> {
    pub fn new(id: u64, node: Node, viewer: Viewer, variant: Variant) -> StreamState<S> {
        StreamState {
            id,
            node,
            viewer,
            variant,
            connected_at: SystemTime::now(),
            subs: BTreeMap::new(),
            view: None,
            timed_ack: BTreeMap::new(),
            endpoints_due: Default::default(),
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

/// A registered stream as the status registry sees it, whichever the variant.
pub(crate) trait Tracked: Send + Sync {
    fn status(&self) -> ProxyStatus;
}

impl<S: SubscriptionState> Tracked for Mutex<StreamState<S>> {
    fn status(&self) -> ProxyStatus {
        crate::status::of_stream(&lock(self))
    }
}

/// The wire difference between SotW and delta: how a request is read and
/// what a response is built from. Everything else is the core's.
pub(crate) trait Protocol: Send + 'static {
    type Req: Send + 'static;
    type Out: Send + 'static;
    type Sub: SubscriptionState;
    /// What one response carries, before it gets its nonce.
    type Plan;
    /// On ADS, the types whose removals wait for the last push stage.
    const REMOVE_LAST: &'static [&'static str];
    /// On ADS, the types whose request-path answers wait while a push
    /// waits for its last stage: an answer from the new view would carry
    /// the removals early (SotW's full-state CDS).
    const HOLD_BEFORE_REMOVALS: &'static [&'static str];

    fn type_url(req: &Self::Req) -> &str;
    fn node(req: &Self::Req) -> Option<&Node>;

    /// Applies a request to its type's subscription; what it was, and the
    /// answer if one is due.
    fn on_request(
        sub: &mut Self::Sub,
        req: &Self::Req,
        cx: &RequestCx<'_>,
    ) -> (RequestKind, Option<Self::Plan>);

    /// Plans one type of a push stage over the names in `scope`; `forced`
    /// resends endpoints after a CDS change so clusters leave warming.
    fn plan_push(
        sub: &mut Self::Sub,
        view: &View,
        type_url: &str,
        scope: Pending,
        ads: bool,
        forced: bool,
    ) -> Step<Self::Plan>;

    /// Whether a type skipped after CDS still leaves removals for the last
    /// stage.
    fn removals_after_cds(sub: &Self::Sub, view: &View, type_url: &str) -> bool;

    /// Whether removals are left for the last stage once a stage planned
    /// every type.
    fn removals_left(subs: &BTreeMap<String, Self::Sub>) -> bool;

    /// The last stage's answer for one of [`Protocol::REMOVE_LAST`].
    fn plan_removals(sub: &mut Self::Sub, view: &View, type_url: &str) -> Option<Self::Plan>;

    fn record_sent(sub: &mut Self::Sub, plan: &Self::Plan, nonce: &str);

    /// The clusters a CDS answer carries whose endpoints must follow it:
    /// an updated cluster stays warming until an EDS response for it
    /// arrives, even an unchanged one. SotW answers every EDS request in
    /// full and needs none.
    fn carried(plan: &Self::Plan) -> Vec<Arc<str>>;

    /// Takes the clusters in `due` and makes their endpoints go out even
    /// where the client declared it holds them (a reconnect's
    /// `initial_resource_versions`): planned now once the EDS subscription
    /// started, else left for its first request to plan.
    fn force_endpoints(
        eds: &mut Self::Sub,
        view: &View,
        due: &mut std::collections::BTreeSet<Arc<str>>,
    ) -> Option<Self::Plan>;

    fn out(type_url: &str, nonce: String, plan: Self::Plan, control_plane: Arc<str>) -> Self::Out;
}

/// What a request is applied with.
pub(crate) struct RequestCx<'a> {
    pub view: &'a View,
    pub type_url: &'a str,
    pub node_id: &'a str,
    pub now: SystemTime,
}

/// One type's part of a push stage.
pub(crate) struct Step<P> {
    pub plan: Option<P>,
    /// CDS added clusters the client did not have: on ADS, the push waits.
    pub adds: bool,
    /// Something is left to remove in the last stage.
    pub removals: bool,
}

impl<P> Step<P> {
    pub fn skip() -> Step<P> {
        Step::send(None)
    }

    pub fn send(plan: Option<P>) -> Step<P> {
        Step {
            plan,
            adds: false,
            removals: false,
        }
    }
}

/// The registration of a stream; unregisters and fixes gauges when dropped,
/// whichever way the stream ends.
pub(crate) struct Registration<S> {
    pub inner: Arc<Inner>,
    pub state: Arc<Mutex<StreamState<S>>>,
}

impl<S> Drop for Registration<S> {
    fn drop(&mut self) {
        let (id, variant, types) = {
            let st = lock(&self.state);
            (
                st.id,
                st.variant,
                st.subs.keys().cloned().collect::<Vec<_>>(),
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

pub(crate) fn lock<S>(state: &Mutex<StreamState<S>>) -> std::sync::MutexGuard<'_, StreamState<S>> {
    // A panic while holding the lock leaves plain bookkeeping data behind;
    // keep serving rather than poisoning every later reader.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a stream on its first request.
pub(crate) fn register<S: SubscriptionState>(
    inner: &Arc<Inner>,
    node: Option<&Node>,
    variant: Variant,
) -> Registration<S> {
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
        .insert(id, state.clone() as Arc<dyn Tracked>);
    Registration {
        inner: inner.clone(),
        state,
    }
}
