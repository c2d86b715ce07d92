use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::Status;

use super::{lock, note_type, register, Flavor, Registration, Stage, StreamState};
use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::subscription::{NackRecord, Pending, RequestKind, SotwSubscription};
use crate::types::{self, CLUSTER, ENDPOINT};
use crate::view::{SotwList, View};

/// A planned SotW response. It holds the shared list (usually the one
/// every stream of the view got); the bytes are copied into the wire
/// message only when tonic pulls it, so queued responses do not duplicate
/// config per stream.
#[derive(Debug)]
pub(crate) struct SotwOut {
    pub type_url: String,
    pub nonce: String,
    pub list: Arc<SotwList>,
    pub control_plane: Arc<str>,
}

impl SotwOut {
    pub fn into_response(self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.list.version.clone(),
            resources: self.list.items.iter().map(|r| r.resource.clone()).collect(),
            type_url: self.type_url,
            nonce: self.nonce,
            control_plane: Some(ControlPlane {
                identifier: self.control_plane.to_string(),
            }),
            ..Default::default()
        }
    }
}

impl SotwOut {
    /// The gRPC frame of this response as chunks: a per-stream head and
    /// tail around the resources, which are encoded once per list and
    /// shared (no copy per stream).
    pub fn into_frames(self) -> Vec<bytes::Bytes> {
        let mut head = Vec::new();
        prost::encoding::string::encode(1, &self.list.version, &mut head);
        let resources = self.list.encoded_resources();
        let mut tail = Vec::new();
        prost::encoding::string::encode(4, &self.type_url, &mut tail);
        prost::encoding::string::encode(5, &self.nonce, &mut tail);
        let cp = ControlPlane {
            identifier: self.control_plane.to_string(),
        };
        prost::encoding::message::encode(6, &cp, &mut tail);
        let len = head.len() + resources.len() + tail.len();
        let mut prefix = Vec::with_capacity(5 + head.len());
        prefix.push(0u8);
        prefix.extend_from_slice(&(len as u32).to_be_bytes());
        prefix.extend_from_slice(&head);
        vec![prefix.into(), resources, tail.into()]
    }
}

/// State-of-the-world streams.
pub(crate) struct Sotw;

impl Flavor for Sotw {
    type Req = DiscoveryRequest;
    type Out = SotwOut;

    fn on_request(
        inner: &Arc<Inner>,
        reg: &mut Option<Registration>,
        req: DiscoveryRequest,
        variant: Variant,
        fixed: Option<&'static str>,
    ) -> Result<Vec<SotwOut>, Status> {
        on_request(inner, reg, req, variant, fixed)
    }

    fn push(
        inner: &Inner,
        state: &Mutex<StreamState>,
        ads: bool,
        stage: Stage,
    ) -> (Vec<SotwOut>, Option<Stage>) {
        on_push(inner, state, ads, stage)
    }

    fn synced(st: &StreamState) -> bool {
        st.sotw
            .values()
            .all(|s| s.sync_state() != crate::subscription::SyncState::Stale)
    }
}

/// Resolves the type of a request: fixed on per-type services, required on ADS.
pub(crate) fn resolve_type(type_url: &str, fixed: Option<&'static str>) -> Result<String, Status> {
    match (fixed, type_url) {
        (Some(f), "") => Ok(f.to_string()),
        (Some(f), t) if t == f => Ok(f.to_string()),
        (Some(f), t) => Err(Status::invalid_argument(format!(
            "type {t} sent to the {} service",
            types::short_name(f)
        ))),
        (None, "") => Err(Status::invalid_argument(
            "ADS request without type_url; set type_url on every request",
        )),
        (None, t) => Ok(t.to_string()),
    }
}

fn on_request(
    inner: &Arc<Inner>,
    reg: &mut Option<Registration>,
    req: DiscoveryRequest,
    variant: Variant,
    fixed: Option<&'static str>,
) -> Result<Vec<SotwOut>, Status> {
    let type_url = resolve_type(&req.type_url, fixed)?;
    let reg = reg.get_or_insert_with(|| register(inner, req.node.as_ref(), variant));
    let snap = current_view(inner, &reg.state);
    let mut nack: Option<NackRecord> = None;
    let outs = {
        let mut guard = lock(&reg.state);
        // Plain field borrows (not through the guard) let the ACK timing
        // touch other fields while the subscription is borrowed.
        let st = &mut *guard;
        let node_id = st.node.id.clone();
        note_type(
            &inner.metrics,
            variant,
            &type_url,
            !st.sotw.contains_key(&type_url),
        );
        let sub = st.sotw.entry(type_url.clone()).or_default();
        let error = req.error_detail.as_ref().map(|e| e.message.as_str());
        let decision = sub.on_request(
            &req.resource_names,
            &req.response_nonce,
            error,
            &node_id,
            &type_url,
            SystemTime::now(),
            |n| intern(&snap, &type_url, n),
        );
        match decision.kind {
            RequestKind::Ack => {
                XdsMetrics::inc(&inner.metrics.acks);
                crate::stream::time_ack(inner, &st.view, &mut st.timed_ack, &type_url);
            }
            RequestKind::Nack => {
                XdsMetrics::inc(&inner.metrics.nacks);
                nack = sub.last_nack.clone();
            }
            RequestKind::Stale => XdsMetrics::inc(&inner.metrics.stale_requests),
            RequestKind::Initial | RequestKind::Unknown => {}
        }
        if !decision.respond {
            Vec::new()
        } else {
            let list = shared_list(&snap, &type_url, sub);
            if sub.should_send(&type_url, &list, true) {
                vec![emit(st, &inner.identifier, &type_url, list)]
            } else {
                Vec::new()
            }
        }
    };
    if let Some(n) = nack {
        inner.record_nack(n);
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    Ok(outs)
}

/// The view a stream serves; fixed on first use, moved by pushes.
pub(crate) fn current_view(inner: &Inner, state: &Mutex<StreamState>) -> Arc<View> {
    let viewer = {
        let st = lock(state);
        if let Some(v) = &st.view {
            return v.clone();
        }
        st.viewer.clone()
    };
    let view = inner.view(&viewer);
    lock(state).view.get_or_insert(view).clone()
}

/// The view's name for `name` when it has one (shared, no allocation),
/// else a new one.
pub(crate) fn intern(view: &View, type_url: &str, name: &str) -> Arc<str> {
    view.snap
        .resources(type_url)
        .get(name)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| Arc::from(name))
}

/// What `sub` selects from `view`, shared with every stream that asks for
/// the same names.
fn shared_list(view: &View, type_url: &str, sub: &SotwSubscription) -> Arc<SotwList> {
    let names = (!sub.wildcard).then_some(&sub.names);
    view.sotw_list(type_url, names, sub.key, || {
        sub.select(view.snap.resources(type_url))
    })
}

fn emit(
    st: &mut StreamState,
    identifier: &Arc<str>,
    type_url: &str,
    list: Arc<SotwList>,
) -> SotwOut {
    let nonce = st.next_nonce();
    st.sotw
        .get_mut(type_url)
        .expect("subscription exists")
        .record_sent(list.clone(), &nonce);
    SotwOut {
        type_url: type_url.to_string(),
        nonce,
        list,
        control_plane: identifier.clone(),
    }
}

/// Plans one stage of a push in make-before-break order (see [`Stage`] and
/// PROTOCOL.md). In SotW, dropping clusters means sending CDS twice: first
/// with the dropped clusters still in (at their old versions), and in the
/// last stage without them. A type is only looked at when names in its
/// scope changed since it was last planned.
fn on_push(
    inner: &Inner,
    state: &Mutex<StreamState>,
    ads: bool,
    stage: Stage,
) -> (Vec<SotwOut>, Option<Stage>) {
    let Some((mut st, view)) = stage_view(inner, state, stage) else {
        return (Vec::new(), None);
    };
    let id = inner.identifier.clone();
    let mut outs = Vec::new();
    if stage == Stage::Removals {
        if let Some(sub) = st.sotw.get(CLUSTER) {
            let list = shared_list(&view, CLUSTER, sub);
            if sub.should_send(CLUSTER, &list, false) {
                outs.push(emit(&mut st, &id, CLUSTER, list));
            }
        }
        XdsMetrics::add(&inner.metrics.responses, outs.len());
        return (outs, None);
    }
    let mut order: Vec<String> = st.sotw.keys().cloned().collect();
    order.sort_by_key(|t| types::order_of(t));
    let mut cds_sent = stage == Stage::AfterCds;
    let mut removals = false;
    for t in order {
        let skip =
            ads && stage == Stage::AfterCds && types::order_of(&t) <= types::order_of(CLUSTER);
        if skip {
            if t == CLUSTER {
                // CDS went out in the first stage, with any dropped
                // clusters still in: they go in the last stage.
                let sub = &st.sotw[&t];
                let list = shared_list(&view, &t, sub);
                removals = sub
                    .sent
                    .iter()
                    .flat_map(|l| l.items.iter())
                    .any(|r| !list.contains(&r.name));
            }
            continue;
        }
        let sub = st.sotw.get_mut(&t).expect("type listed from the map");
        let scope = std::mem::take(&mut sub.pending);
        let sub = &st.sotw[&t];
        let touched = match &scope {
            Pending::None => false,
            Pending::All => true,
            Pending::Names(names) => names
                .iter()
                .any(|n| sub.in_scope(n) || sub.sent_contains(n)),
        };
        if ads && t == CLUSTER {
            if !touched {
                continue;
            }
            let list = shared_list(&view, &t, sub);
            let sent = sub.sent.clone();
            let dropped: Vec<Arc<crate::source::VersionedResource>> = sent
                .iter()
                .flat_map(|l| l.items.iter())
                .filter(|r| !list.contains(&r.name))
                .cloned()
                .collect();
            removals = !dropped.is_empty();
            let list = if removals {
                let mut merged = list.items.clone();
                merged.extend(dropped.into_iter().filter(|r| sub.in_scope(&r.name)));
                merged.sort_by(|a, b| a.name.cmp(&b.name));
                Arc::new(SotwList::new(merged))
            } else {
                list
            };
            let adds = list.items.iter().any(|r| !sub.sent_contains(&r.name));
            if sub.should_send(&t, &list, false) {
                outs.push(emit(&mut st, &id, &t, list));
                cds_sent = true;
                if adds {
                    XdsMetrics::add(&inner.metrics.responses, outs.len());
                    return (outs, Some(Stage::AfterCds));
                }
            }
            continue;
        }
        let forced = ads && t == ENDPOINT && cds_sent;
        if !touched && !forced {
            continue;
        }
        let list = shared_list(&view, &t, sub);
        if sub.should_send(&t, &list, forced) {
            outs.push(emit(&mut st, &id, &t, list));
        }
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    if removals {
        if outs.is_empty() {
            drop(st);
            return on_push(inner, state, ads, Stage::Removals);
        }
        return (outs, Some(Stage::Removals));
    }
    (outs, None)
}

/// The stream state and the view a stage plans against: a new push moves
/// the stream to the newest view (nothing to do if it is the same one) and
/// marks, per type, what may need sending: the names that changed when the
/// stream moves one view step, everything when it skipped views. Later
/// stages keep the view their push started with.
pub(crate) fn stage_view<'a>(
    inner: &Inner,
    state: &'a Mutex<StreamState>,
    stage: Stage,
) -> Option<(std::sync::MutexGuard<'a, StreamState>, Arc<View>)> {
    if stage != Stage::New {
        let st = lock(state);
        let view = st.view.clone()?;
        return Some((st, view));
    }
    let viewer = lock(state).viewer.clone();
    let view = inner.view(&viewer);
    let mut st = lock(state);
    if st.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, &view)) {
        return None;
    }
    let step = match (&view.changes, &st.view) {
        (Some(c), Some(old)) => c.base == old.serial,
        _ => false,
    };
    let mark = |pending: &mut Pending, t: &str| {
        if step {
            pending.extend(view.changed(t));
        } else {
            *pending = Pending::All;
        }
    };
    for (t, sub) in st.delta.iter_mut() {
        mark(&mut sub.pending, t);
    }
    for (t, sub) in st.sotw.iter_mut() {
        mark(&mut sub.pending, t);
    }
    st.view = Some(view.clone());
    Some((st, view))
}
