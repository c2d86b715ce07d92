use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::Status;

use super::{lock, note_type, register, send_all, stream_end, Registration, StreamState};
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

pub(crate) async fn run_sotw(
    inner: Arc<Inner>,
    mut inbound: tonic::Streaming<DiscoveryRequest>,
    variant: Variant,
    fixed: Option<&'static str>,
    tx: mpsc::Sender<Result<SotwOut, Status>>,
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
                        tracing::debug!(%status, "sotw stream read failed");
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
                    // The permit bounds the CPU work of planning; sending only
                    // waits on this client, so it happens without the permit.
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
        let mut st = lock(&reg.state);
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
            RequestKind::Ack => XdsMetrics::inc(&inner.metrics.acks),
            RequestKind::Nack => {
                XdsMetrics::inc(&inner.metrics.nacks);
                nack = sub.last_nack.clone();
            }
            RequestKind::Stale => XdsMetrics::inc(&inner.metrics.stale_requests),
            RequestKind::Initial | RequestKind::Unknown => {}
        }
        let list = sub.select(snap.resources(&type_url));
        if decision.respond && sub.should_send(&type_url, &list, true) {
            vec![emit(&mut st, &inner.identifier, &type_url, list)]
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

/// Plans a push in make-before-break order (see PROTOCOL.md): every type in
/// [`types::PUSH_ORDER`]; on ADS a CDS change that drops clusters is sent
/// twice, first with the dropped clusters still in, last without them; and
/// endpoints are re-sent after any CDS response so updated clusters warm.
fn on_push(inner: &Inner, state: &Mutex<StreamState>, ads: bool) -> Vec<SotwOut> {
    let viewer = lock(state).viewer.clone();
    let snap = inner.source.snapshot(&viewer);
    let mut st = lock(state);
    if st.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, &snap)) {
        return Vec::new();
    }
    st.view = Some(snap.clone());
    let mut order: Vec<String> = st.sotw.keys().cloned().collect();
    order.sort_by_key(|t| types::order_of(t));
    let id = inner.identifier.clone();
    let mut outs = Vec::new();
    let mut last = None;
    let mut cds_sent = false;
    for t in order {
        let sub = &st.sotw[&t];
        let list = sub.select(snap.resources(&t));
        if ads && t == CLUSTER {
            let mut merged = list.clone();
            merged.extend(
                sub.sent
                    .values()
                    .filter(|r| sub.in_scope(&r.name) && !snap.resources(&t).contains_key(&r.name))
                    .cloned(),
            );
            if merged.len() > list.len() {
                merged.sort_by(|a, b| a.name.cmp(&b.name));
                if sub.should_send(&t, &merged, false) {
                    outs.push(emit(&mut st, &id, &t, merged));
                    cds_sent = true;
                }
                last = Some((t, list));
                continue;
            }
        }
        let forced = ads && t == ENDPOINT && cds_sent;
        if sub.should_send(&t, &list, forced) {
            outs.push(emit(&mut st, &id, &t, list));
            cds_sent |= t == CLUSTER;
        }
    }
    if let Some((t, list)) = last {
        if st.sotw[&t].should_send(&t, &list, false) {
            outs.push(emit(&mut st, &id, &t, list));
        }
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    outs
}
