use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::sotw::{current_view, resolve_type};
use super::{lock, note_type, register, send_all, stream_end, Registration, StreamState};
use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::subscription::delta::DeltaRequestView;
use crate::subscription::{DeltaPlan, NackRecord, RequestKind};
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
                    name: r.name.clone(),
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

pub(crate) async fn run_delta(
    inner: Arc<Inner>,
    mut inbound: tonic::Streaming<DeltaDiscoveryRequest>,
    variant: Variant,
    fixed: Option<&'static str>,
    tx: mpsc::Sender<Result<DeltaOut, Status>>,
) {
    let mut push = inner.push.clone();
    push.borrow_and_update();
    let end = stream_end(inner.drain.subscribe(), inner.config.max_connection_age);
    tokio::pin!(end);
    let mut reg: Option<Registration> = None;
    loop {
        tokio::select! {
            _ = &mut end => break,
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "delta stream read failed");
                        break;
                    }
                };
                match on_request(&inner, &mut reg, req, variant, fixed) {
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
            }
            changed = push.changed(), if reg.is_some() => {
                if changed.is_err() {
                    break;
                }
                let Some(reg) = &reg else { continue };
                let outs = {
                    let _permit = inner.permits.acquire().await;
                    inner.metrics.push_started();
                    let outs = on_push(&inner, &reg.state, variant.is_ads());
                    inner.metrics.push_finished();
                    outs
                };
                if !outs.is_empty() {
                    XdsMetrics::inc(&inner.metrics.pushes);
                }
                if !send_all(&tx, outs).await {
                    break;
                }
            }
        }
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
        let mut st = lock(&reg.state);
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
        match sub.on_request(view, &node_id, &type_url, SystemTime::now()) {
            RequestKind::Ack => XdsMetrics::inc(&inner.metrics.acks),
            RequestKind::Nack => {
                XdsMetrics::inc(&inner.metrics.nacks);
                nack = sub.last_nack.clone();
            }
            RequestKind::Unknown => XdsMetrics::inc(&inner.metrics.stale_requests),
            RequestKind::Initial | RequestKind::Stale => {}
        }
        // A request only answers what it asked about; other pending changes
        // go out with the next push, in push order.
        let plan = if first || (sub.wildcard && !was_wildcard) {
            sub.plan(snap.resources(&type_url), false)
        } else if !req.resource_names_subscribe.is_empty() {
            let only: BTreeSet<&str> = req
                .resource_names_subscribe
                .iter()
                .map(String::as_str)
                .collect();
            let mut plan = sub.plan(snap.resources(&type_url), false);
            plan.resources.retain(|r| only.contains(r.name.as_str()));
            plan.removed.retain(|n| only.contains(n.as_str()));
            plan
        } else {
            DeltaPlan::default()
        };
        if plan.is_empty() {
            Vec::new()
        } else {
            vec![emit(&mut st, &inner.identifier, &type_url, plan)]
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

/// Plans a push in make-before-break order (see PROTOCOL.md): additions and
/// updates of every type in [`types::PUSH_ORDER`] (LDS and RDS with their
/// removals), then on ADS the removals of clusters, endpoints and secrets.
/// Endpoints are re-sent after clusters were updated so the clusters warm.
fn on_push(inner: &Inner, state: &Mutex<StreamState>, ads: bool) -> Vec<DeltaOut> {
    let viewer = lock(state).viewer.clone();
    let snap = inner.source.snapshot(&viewer);
    let mut st = lock(state);
    if st.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, &snap)) {
        return Vec::new();
    }
    st.view = Some(snap.clone());
    let mut order: Vec<String> = st.delta.keys().cloned().collect();
    order.sort_by_key(|t| types::order_of(t));
    let id = inner.identifier.clone();
    let mut outs = Vec::new();
    let mut later: Vec<(String, DeltaPlan)> = Vec::new();
    let mut cds_upserted = false;
    for t in order {
        let force_all = ads && t == ENDPOINT && cds_upserted;
        let mut plan = st.delta[&t].plan(snap.resources(&t), force_all);
        if ads && REMOVE_LAST.contains(&t.as_str()) && !plan.removed.is_empty() {
            later.push((
                t.clone(),
                DeltaPlan {
                    resources: Vec::new(),
                    removed: std::mem::take(&mut plan.removed),
                },
            ));
        }
        if !plan.is_empty() {
            cds_upserted |= t == CLUSTER && !plan.resources.is_empty();
            outs.push(emit(&mut st, &id, &t, plan));
        }
    }
    later.sort_by_key(|(t, _)| REMOVE_LAST.iter().position(|r| r == t));
    for (t, plan) in later {
        outs.push(emit(&mut st, &id, &t, plan));
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    outs
}
