use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::Status;

use super::{lock, note_type, register, Flavor, Registration, Stage, StreamState};
use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::source::{VersionedResource, ViewSnapshot};
use crate::subscription::sotw::response_version;
use crate::subscription::{NackRecord, RequestKind};
use crate::types::{self, CLUSTER, ENDPOINT};

/// A planned SotW response. It holds shared resources; the bytes are copied
/// into the wire message only when tonic pulls it, so queued responses do not
/// duplicate config per stream.
#[derive(Debug)]
pub(crate) struct SotwOut {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    pub resources: Vec<Arc<VersionedResource>>,
    pub control_plane: Arc<str>,
}

impl SotwOut {
    pub fn into_response(self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version,
            resources: self.resources.iter().map(|r| r.resource.clone()).collect(),
            type_url: self.type_url,
            nonce: self.nonce,
            control_plane: Some(ControlPlane {
                identifier: self.control_plane.to_string(),
            }),
            ..Default::default()
        }
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
        let list = sub.select(snap.resources(&type_url));
        if decision.respond && sub.should_send(&type_url, &list, true) {
            vec![emit(st, &inner.identifier, &type_url, list)]
        } else {
            Vec::new()
        }
    };
    if let Some(n) = nack {
        inner.record_nack(n);
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    Ok(outs)
}

/// The snapshot a stream serves; fixed on first use, moved by pushes.
pub(crate) fn current_view(inner: &Inner, state: &Mutex<StreamState>) -> Arc<ViewSnapshot> {
    let viewer = {
        let st = lock(state);
        if let Some(v) = &st.view {
            return v.clone();
        }
        st.viewer.clone()
    };
    // Asked without the stream lock: a source may take its own locks.
    let snap = inner.source.snapshot(&viewer);
    lock(state).view.get_or_insert(snap).clone()
}

fn emit(
    st: &mut StreamState,
    identifier: &Arc<str>,
    type_url: &str,
    list: Vec<Arc<VersionedResource>>,
) -> SotwOut {
    let nonce = st.next_nonce();
    let version = response_version(&list);
    st.sotw
        .get_mut(type_url)
        .expect("subscription exists")
        .record_sent(&list, &version, &nonce);
    SotwOut {
        type_url: type_url.to_string(),
        version,
        nonce,
        resources: list,
        control_plane: identifier.clone(),
    }
}

/// Plans one stage of a push in make-before-break order (see [`Stage`] and
/// PROTOCOL.md). In SotW, dropping clusters means sending CDS twice: first
/// with the dropped clusters still in (at their old versions), and in the
/// last stage without them.
fn on_push(
    inner: &Inner,
    state: &Mutex<StreamState>,
    ads: bool,
    stage: Stage,
) -> (Vec<SotwOut>, Option<Stage>) {
    let Some((mut st, snap)) = stage_view(inner, state, stage) else {
        return (Vec::new(), None);
    };
    let id = inner.identifier.clone();
    let mut outs = Vec::new();
    if stage == Stage::Removals {
        if let Some(sub) = st.sotw.get(CLUSTER) {
            let list = sub.select(snap.resources(CLUSTER));
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
        let sub = &st.sotw[&t];
        let list = sub.select(snap.resources(&t));
        if ads && t == CLUSTER {
            removals = sub.sent.keys().any(|n| !list.iter().any(|r| &r.name == n));
            if stage == Stage::AfterCds {
                continue;
            }
            let mut merged = list;
            merged.extend(
                sub.sent
                    .values()
                    .filter(|r| sub.in_scope(&r.name) && !snap.resources(&t).contains_key(&r.name))
                    .cloned(),
            );
            merged.sort_by(|a, b| a.name.cmp(&b.name));
            let adds = merged.iter().any(|r| !sub.sent.contains_key(&r.name));
            if sub.should_send(&t, &merged, false) {
                outs.push(emit(&mut st, &id, &t, merged));
                cds_sent = true;
                if adds {
                    XdsMetrics::add(&inner.metrics.responses, outs.len());
                    return (outs, Some(Stage::AfterCds));
                }
            }
            continue;
        }
        if ads && stage == Stage::AfterCds && types::order_of(&t) < types::order_of(CLUSTER) {
            continue;
        }
        let forced = ads && t == ENDPOINT && cds_sent;
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

/// The stream state and the snapshot a stage plans against: a new push moves
/// the stream to the newest snapshot (nothing to do if it is the same one);
/// later stages keep the one their push started with.
pub(crate) fn stage_view<'a>(
    inner: &Inner,
    state: &'a Mutex<StreamState>,
    stage: Stage,
) -> Option<(std::sync::MutexGuard<'a, StreamState>, Arc<ViewSnapshot>)> {
    if stage != Stage::New {
        let st = lock(state);
        let snap = st.view.clone()?;
        return Some((st, snap));
    }
    let viewer = lock(state).viewer.clone();
    // Asked without the stream lock: a source may take its own locks.
    let snap = inner.source.snapshot(&viewer);
    let mut st = lock(state);
    if st.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, &snap)) {
        return None;
    }
    st.view = Some(snap.clone());
    Some((st, snap))
}
