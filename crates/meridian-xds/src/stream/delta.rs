use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tonic::Status;

use super::sotw::{current_view, intern, resolve_type, stage_view};
use super::{lock, note_type, register, Flavor, Registration, Stage, StreamState};
use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::subscription::delta::DeltaRequestView;
use crate::subscription::{DeltaPlan, NackRecord, Pending, RequestKind};
use crate::types::{self, CLUSTER, ENDPOINT, REMOVE_LAST};

/// A planned delta response; shares resources like [`super::sotw::SotwOut`].
#[derive(Debug)]
pub(crate) struct DeltaOut {
    pub type_url: String,
    pub nonce: String,
    pub plan: DeltaPlan,
    pub control_plane: Arc<str>,
}

impl DeltaOut {
    pub fn into_response(self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            resources: self
                .plan
                .resources
                .iter()
                .map(|r| Resource {
                    name: r.name.to_string(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: self.type_url,
            removed_resources: self.plan.removed,
            nonce: self.nonce,
            control_plane: Some(ControlPlane {
                identifier: self.control_plane.to_string(),
            }),
            ..Default::default()
        }
    }
}

/// Incremental streams.
pub(crate) struct Delta;

impl Flavor for Delta {
    type Req = DeltaDiscoveryRequest;
    type Out = DeltaOut;

    fn on_request(
        inner: &Arc<Inner>,
        reg: &mut Option<Registration>,
        req: DeltaDiscoveryRequest,
        variant: Variant,
        fixed: Option<&'static str>,
    ) -> Result<Vec<DeltaOut>, Status> {
        on_request(inner, reg, req, variant, fixed)
    }

    fn push(
        inner: &Inner,
        state: &Mutex<StreamState>,
        ads: bool,
        stage: Stage,
    ) -> (Vec<DeltaOut>, Option<Stage>) {
        on_push(inner, state, ads, stage)
    }

    fn synced(st: &StreamState) -> bool {
        st.delta
            .values()
            .all(|s| s.sync_state() != crate::subscription::SyncState::Stale)
    }
}

fn on_request(
    inner: &Arc<Inner>,
    reg: &mut Option<Registration>,
    req: DeltaDiscoveryRequest,
    variant: Variant,
    fixed: Option<&'static str>,
) -> Result<Vec<DeltaOut>, Status> {
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
            !st.delta.contains_key(&type_url),
        );
        let sub = st.delta.entry(type_url.clone()).or_default();
        let first = !sub.started;
        let was_wildcard = sub.wildcard;
        let view = DeltaRequestView {
            subscribe: &req.resource_names_subscribe,
            unsubscribe: &req.resource_names_unsubscribe,
            initial_versions: &req.initial_resource_versions,
            nonce: &req.response_nonce,
            error: req.error_detail.as_ref().map(|e| e.message.as_str()),
        };
        let interned = |n: &str| intern(&snap, &type_url, n);
        match sub.on_request(view, &node_id, &type_url, SystemTime::now(), interned) {
            RequestKind::Ack => {
                XdsMetrics::inc(&inner.metrics.acks);
                crate::stream::time_ack(inner, &st.view, &mut st.timed_ack, &type_url);
            }
            RequestKind::Nack => {
                XdsMetrics::inc(&inner.metrics.nacks);
                nack = sub.last_nack.clone();
            }
            RequestKind::Unknown => XdsMetrics::inc(&inner.metrics.stale_requests),
            RequestKind::Initial | RequestKind::Stale => {}
        }
        // A request only answers what it asked about; other pending changes
        // go out with the next push, in push order.
        let all = snap.snap.resources(&type_url);
        let plan = if first || (sub.wildcard && !was_wildcard) {
            sub.plan(all, &Pending::All, false)
        } else if !req.resource_names_subscribe.is_empty() {
            let only: BTreeSet<Arc<str>> = req
                .resource_names_subscribe
                .iter()
                .filter(|n| !n.is_empty() && n.as_str() != "*")
                .map(|n| intern(&snap, &type_url, n))
                .collect();
            let mut plan = sub.plan(all, &Pending::Names(only.clone()), false);
            plan.resources.retain(|r| only.contains(&r.name));
            plan.removed.retain(|n| only.contains(n.as_str()));
            plan
        } else {
            DeltaPlan::default()
        };
        if plan.is_empty() {
            Vec::new()
        } else {
            vec![emit(st, &inner.identifier, &type_url, plan)]
        }
    };
    if let Some(n) = nack {
        inner.record_nack(n);
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    Ok(outs)
}

fn emit(st: &mut StreamState, identifier: &Arc<str>, type_url: &str, plan: DeltaPlan) -> DeltaOut {
    let nonce = st.next_nonce();
    st.delta
        .get_mut(type_url)
        .expect("subscription exists")
        .record_sent(&plan, &nonce);
    DeltaOut {
        type_url: type_url.to_string(),
        nonce,
        plan,
        control_plane: identifier.clone(),
    }
}

/// Plans one stage of a push in make-before-break order (see [`Stage`] and
/// PROTOCOL.md). LDS and RDS carry their own removals; on ADS, removals of
/// clusters, endpoints and secrets wait for the last stage (kept in the
/// subscription's `pending` until then). Each type only looks at its
/// pending names.
fn on_push(
    inner: &Inner,
    state: &Mutex<StreamState>,
    ads: bool,
    stage: Stage,
) -> (Vec<DeltaOut>, Option<Stage>) {
    let Some((mut st, view)) = stage_view(inner, state, stage) else {
        return (Vec::new(), None);
    };
    let id = inner.identifier.clone();
    let mut outs = Vec::new();
    if stage == Stage::Removals {
        for t in REMOVE_LAST {
            let Some(sub) = st.delta.get_mut(t) else {
                continue;
            };
            let scope = std::mem::take(&mut sub.pending);
            let plan = sub.plan(view.snap.resources(t), &scope, false);
            // Updates were sent by the earlier stage; one that appears here
            // is not part of this push and goes with the next.
            if !plan.resources.is_empty() {
                sub.pending =
                    Pending::Names(plan.resources.iter().map(|r| r.name.clone()).collect());
            }
            if !plan.removed.is_empty() {
                outs.push(emit(
                    &mut st,
                    &id,
                    t,
                    DeltaPlan {
                        resources: Vec::new(),
                        removed: plan.removed,
                    },
                ));
            }
        }
        XdsMetrics::add(&inner.metrics.responses, outs.len());
        return (outs, None);
    }
    let mut order: Vec<String> = st.delta.keys().cloned().collect();
    order.sort_by_key(|t| types::order_of(t));
    let mut cds_upserted = stage == Stage::AfterCds;
    for t in order.iter() {
        if ads && stage == Stage::AfterCds && types::order_of(t) <= types::order_of(CLUSTER) {
            continue;
        }
        let force_all = ads && *t == ENDPOINT && cds_upserted;
        let sub = st.delta.get_mut(t).expect("type listed from the map");
        let scope = std::mem::take(&mut sub.pending);
        let mut plan = sub.plan(view.snap.resources(t), &scope, force_all);
        if ads && REMOVE_LAST.contains(&t.as_str()) && !plan.removed.is_empty() {
            sub.pending = Pending::Names(plan.removed.drain(..).map(Arc::from).collect());
        }
        if plan.is_empty() {
            continue;
        }
        let adds = *t == CLUSTER
            && plan
                .resources
                .iter()
                .any(|r| !sub.client_has.contains_key(&r.name));
        cds_upserted |= *t == CLUSTER;
        outs.push(emit(&mut st, &id, t, plan));
        if ads && adds {
            XdsMetrics::add(&inner.metrics.responses, outs.len());
            return (outs, Some(Stage::AfterCds));
        }
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    let removals = ads
        && REMOVE_LAST
            .iter()
            .any(|t| st.delta.get(*t).is_some_and(|s| !s.pending.is_empty()));
    if removals {
        if outs.is_empty() {
            drop(st);
            return on_push(inner, state, ads, Stage::Removals);
        }
        return (outs, Some(Stage::Removals));
    }
    (outs, None)
}
