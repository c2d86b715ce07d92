//! Planning a push, whichever the variant: the view step, the pending
//! names, make-before-break stages (see [`Stage`] and PROTOCOL.md); the
//! variant plans each type.

use std::sync::{Arc, Mutex};

use super::{lock, Protocol, Stage, StreamState};
use crate::metrics::XdsMetrics;
use crate::server::Inner;
use crate::subscription::{Pending, SubscriptionState};
use crate::types::{self, CLUSTER, ENDPOINT};
use crate::view::View;

/// Plans one stage of a push. A type is only looked at for the names
/// pending since it was last planned. On ADS, a stage stops when CDS added
/// clusters (stage 2 waits for the client), and removals wait for the last
/// stage; a stage with nothing to send runs straight into the next.
pub(crate) fn on_push<P: Protocol>(
    inner: &Inner,
    state: &Mutex<StreamState<P::Sub>>,
    ads: bool,
    stage: Stage,
) -> (Vec<P::Out>, Option<Stage>) {
    let Some((mut st, view)) = stage_view(inner, state, stage) else {
        return (Vec::new(), None);
    };
    let id = &inner.identifier;
    let mut outs = Vec::new();
    if stage == Stage::Removals {
        for t in P::REMOVE_LAST {
            let Some(sub) = st.subs.get_mut(*t) else {
                continue;
            };
            if let Some(plan) = P::plan_removals(sub, &view, t) {
                outs.push(emit::<P>(&mut st, id, t, plan));
            }
        }
        XdsMetrics::add(&inner.metrics.responses, outs.len());
        return (outs, None);
    }
    let mut order: Vec<String> = st.subs.keys().cloned().collect();
    order.sort_by_key(|t| types::order_of(t));
    let mut cds_sent = stage == Stage::AfterCds;
    let mut removals = false;
    for t in &order {
        let sub = st.subs.get_mut(t).expect("type listed from the map");
        if ads && stage == Stage::AfterCds && types::order_of(t) <= types::order_of(CLUSTER) {
            removals |= P::removals_after_cds(sub, &view, t);
            continue;
        }
        let scope = std::mem::take(&mut sub.ledger_mut().pending);
        let forced = ads && t == ENDPOINT && cds_sent;
        let step = P::plan_push(sub, &view, t, scope, ads, forced);
        removals |= step.removals;
        let Some(plan) = step.plan else { continue };
        cds_sent |= t == CLUSTER;
        // Clusters the client already holds, updated beside the added ones.
        let updated: Vec<Arc<str>> = if ads && step.adds {
            P::carried(&plan)
                .into_iter()
                .filter(|n| sub.held_version(n).is_some())
                .collect()
        } else {
            Vec::new()
        };
        outs.push(emit::<P>(&mut st, id, t, plan));
        if ads && step.adds {
            // Envoy asks for an added cluster's endpoints, but an updated
            // one warms until they come unasked, and Envoy ACKs no CDS
            // while any cluster warms: held for the gate (which waits for
            // that ACK), they would stall the stream for the whole gate
            // wait and Envoy for its initial fetch timeout.
            if !updated.is_empty() {
                let st = &mut *st;
                st.endpoints_due.extend(updated);
                if let Some(eds) = st.subs.get_mut(ENDPOINT) {
                    if let Some(p) = P::force_endpoints(eds, &view, &mut st.endpoints_due) {
                        outs.push(emit::<P>(st, id, ENDPOINT, p));
                    }
                }
            }
            XdsMetrics::add(&inner.metrics.responses, outs.len());
            return (outs, Some(Stage::AfterCds));
        }
    }
    XdsMetrics::add(&inner.metrics.responses, outs.len());
    if ads && (removals || P::removals_left(&st.subs)) {
        if outs.is_empty() {
            drop(st);
            return on_push::<P>(inner, state, ads, Stage::Removals);
        }
        return (outs, Some(Stage::Removals));
    }
    (outs, None)
}

/// Gives a planned answer its nonce and records it as sent.
pub(crate) fn emit<P: Protocol>(
    st: &mut StreamState<P::Sub>,
    identifier: &Arc<str>,
    type_url: &str,
    plan: P::Plan,
) -> P::Out {
    let nonce = st.next_nonce();
    let sub = st.subs.get_mut(type_url).expect("subscription exists");
    P::record_sent(sub, &plan, &nonce);
    P::out(type_url, nonce, plan, identifier.clone())
}

/// The stream state and the view a stage plans against: a new push moves
/// the stream to the newest view (nothing to do if it is the same one) and
/// marks, per type, what may need sending: the names that changed when the
/// stream moves one view step, everything when it skipped views. Later
/// stages keep the view their push started with.
fn stage_view<'a, S: SubscriptionState>(
    inner: &Inner,
    state: &'a Mutex<StreamState<S>>,
    stage: Stage,
) -> Option<(std::sync::MutexGuard<'a, StreamState<S>>, Arc<View>)> {
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
    for (t, sub) in st.subs.iter_mut() {
        let pending = &mut sub.ledger_mut().pending;
        if step {
            pending.extend(view.changed(t));
        } else {
            *pending = Pending::All;
        }
    }
    st.view = Some(view.clone());
    Some((st, view))
}
