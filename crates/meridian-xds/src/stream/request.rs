//! Answering a request, whichever the variant: the type, the registration,
//! the view, ACK/NACK metrics and timing; the variant applies the request
//! to its subscription.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::Status;

use super::push::emit;
use super::{lock, register, Protocol, Registration, RequestCx, Stage, StreamState};
use crate::metrics::{Variant, XdsMetrics};
use crate::server::Inner;
use crate::source::Viewer;
use crate::subscription::{NackRecord, Pending, RequestKind, SubscriptionState};
use crate::types;
use crate::view::View;

pub(crate) fn on_request<P: Protocol>(
    inner: &Arc<Inner>,
    reg: &mut Option<Registration<P::Sub>>,
    req: P::Req,
    peer: &tonic::Extensions,
    variant: Variant,
    fixed: Option<&'static str>,
    waiting: Option<Stage>,
) -> Result<Vec<P::Out>, Status> {
    let type_url = resolve_type(P::type_url(&req), fixed)?;
    if reg.is_none() {
        admit(inner, P::node(&req), peer)?;
    }
    let reg = reg.get_or_insert_with(|| register(inner, P::node(&req), variant));
    let view = current_view(inner, &reg.state);
    let mut nack: Option<NackRecord> = None;
    let outs = {
        let mut guard = lock(&reg.state);
        // Plain field borrows (not through the guard) let the ACK timing
        // touch other fields while the subscription is borrowed.
        let st = &mut *guard;
        let node_id = st.node.id.clone();
        if !st.subs.contains_key(&type_url) {
            inner.metrics.type_subscribed(&type_url, variant, 1);
        }
        let sub = st.subs.entry(type_url.clone()).or_default();
        let mut outs = Vec::new();
        if type_url == types::ENDPOINT && !st.endpoints_due.is_empty() {
            if let Some(p) = P::force_endpoints(sub, &view, &mut st.endpoints_due) {
                outs.push(emit::<P>(st, &inner.identifier, types::ENDPOINT, p));
            }
        }
        let sub = st.subs.get_mut(&type_url).expect("inserted above");
        let cx = RequestCx {
            view: &view,
            type_url: &type_url,
            node_id: &node_id,
            now: SystemTime::now(),
        };
        let (kind, mut plan) = P::on_request(sub, &req, &cx);
        if plan.is_some() && held::<P>(waiting, &type_url) {
            // The stage that sends this type answers it, in push order.
            plan = None;
            sub.ledger_mut().pending = Pending::All;
        }
        match kind {
            RequestKind::Ack => {
                XdsMetrics::inc(&inner.metrics.acks);
                time_ack(inner, &st.view, &mut st.timed_ack, &type_url);
            }
            RequestKind::Nack => {
                XdsMetrics::inc(&inner.metrics.nacks);
                nack = sub.ledger().last_nack.clone();
            }
            // SotW's ignored stale nonce and delta's unknown one.
            RequestKind::Stale | RequestKind::Unknown => {
                XdsMetrics::inc(&inner.metrics.stale_requests)
            }
            RequestKind::Initial => {}
        }
        if let Some(plan) = plan {
            if variant.is_ads() && type_url == types::CLUSTER {
                st.endpoints_due.extend(P::carried(&plan));
            }
            outs.push(emit::<P>(st, &inner.identifier, &type_url, plan));
        }
        // A reconnecting Envoy declares the endpoints it holds; those of a
        // cluster just updated go anyway, right after the cluster (or they
        // wait for Envoy's 15 s initial fetch timeout).
        if !st.endpoints_due.is_empty() {
            if let Some(eds) = st.subs.get_mut(types::ENDPOINT) {
                if let Some(p) = P::force_endpoints(eds, &view, &mut st.endpoints_due) {
                    outs.push(emit::<P>(st, &inner.identifier, types::ENDPOINT, p));
                }
            }
        }
        outs
    };
    if let Some(n) = nack {
        inner.record_nack(n);
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    Ok(outs)
}

/// Whether a request for `type_url` that arrives while a push waits to run
/// `waiting` is answered by that stage rather than at once. The stream's
/// view is already the push's new one: while stage 1 waits for the new
/// clusters to warm, a listener or route from it could name a cluster
/// Envoy does not have yet (endpoints are answered, they are part of
/// warming); while the removals wait, SotW's CDS would drop clusters that
/// the old routes still use.
fn held<P: Protocol>(waiting: Option<Stage>, type_url: &str) -> bool {
    match waiting {
        Some(Stage::AfterCds) => types::order_of(type_url) > types::order_of(types::ENDPOINT),
        Some(Stage::Removals) => P::HOLD_BEFORE_REMOVALS.contains(&type_url),
        Some(Stage::New) | None => false,
    }
}

/// A new stream is served only when its caller may have its viewer
/// (PERMISSION_DENIED otherwise: retrying cannot help) and the source is
/// ready for it; otherwise it ends with UNAVAILABLE before anything is
/// sent, so an Envoy keeps the config it has and retries (another server,
/// after its back-off) instead of taking an empty or old state from this
/// one.
pub(crate) fn admit(
    inner: &Inner,
    node: Option<&Node>,
    peer: &tonic::Extensions,
) -> Result<(), Status> {
    let viewer = Viewer::from_node(node, &inner.config.region);
    if let Some(auth) = &inner.authorizer {
        auth.authorize(&viewer, peer).map_err(|why| {
            XdsMetrics::inc(&inner.metrics.denied_streams);
            tracing::warn!(
                node = %node.map(|n| n.id.as_str()).unwrap_or(""),
                region = %viewer.region,
                group = %viewer.proxy_group,
                reason = %why,
                "xDS stream refused: permission denied"
            );
            Status::permission_denied(why.reason)
        })?;
    }
    inner.source.ready(&viewer).map_err(|why| {
        XdsMetrics::inc(&inner.metrics.refused_streams);
        tracing::info!(
            node = %node.map(|n| n.id.as_str()).unwrap_or(""),
            region = %viewer.region,
            group = %viewer.proxy_group,
            reason = %why,
            "xDS stream refused: not ready"
        );
        Status::unavailable(format!("xDS server not ready: {why}"))
    })
}

/// Resolves the type of a request: fixed on per-type services, required on ADS.
fn resolve_type(type_url: &str, fixed: Option<&'static str>) -> Result<String, Status> {
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

/// The view a stream serves; fixed on first use, moved by pushes.
fn current_view<S>(inner: &Inner, state: &Mutex<StreamState<S>>) -> Arc<View> {
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

/// Times the first ACK of a type after the stream moved to a new revision:
/// the push latency, from commit to ACK.
fn time_ack(
    inner: &Inner,
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
