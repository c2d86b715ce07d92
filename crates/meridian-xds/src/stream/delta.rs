//! The delta wire: a request subscribes and unsubscribes names, and a
//! response carries what the client lacks plus what it must remove.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::request::intern;
use super::{Protocol, RequestCx, Step};
use crate::subscription::delta::DeltaRequestView;
use crate::subscription::{DeltaPlan, DeltaSubscription, Pending, RequestKind};
use crate::types::{CLUSTER, ENDPOINT, REMOVE_LAST};
use crate::view::View;

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

impl Protocol for Delta {
    type Req = DeltaDiscoveryRequest;
    type Out = DeltaOut;
    type Sub = DeltaSubscription;
    type Plan = DeltaPlan;
    const REMOVE_LAST: &'static [&'static str] = &REMOVE_LAST;
    /// A delta answer carries only what the request named: no removals.
    const HOLD_BEFORE_REMOVALS: &'static [&'static str] = &[];

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        sub: &mut DeltaSubscription,
        req: &DeltaDiscoveryRequest,
        cx: &RequestCx<'_>,
    ) -> (RequestKind, Option<DeltaPlan>) {
        let first = !sub.started;
        let was_wildcard = sub.wildcard;
        let view = DeltaRequestView {
            subscribe: &req.resource_names_subscribe,
            unsubscribe: &req.resource_names_unsubscribe,
            initial_versions: &req.initial_resource_versions,
            nonce: &req.response_nonce,
            error: req.error_detail.as_ref().map(|e| e.message.as_str()),
        };
        let interned = |n: &str| intern(cx.view, cx.type_url, n);
        let kind = sub.on_request(view, cx.node_id, cx.type_url, cx.now, interned);
        // A request only answers what it asked about; other pending changes
        // go out with the next push, in push order.
        let all = cx.view.snap.resources(cx.type_url);
        let plan = if first || (sub.wildcard && !was_wildcard) {
            sub.plan(all, &Pending::All, false)
        } else if !req.resource_names_subscribe.is_empty() {
            let only: BTreeSet<Arc<str>> = req
                .resource_names_subscribe
                .iter()
                .filter(|n| !n.is_empty() && n.as_str() != "*")
                .map(|n| intern(cx.view, cx.type_url, n))
                .collect();
            let mut plan = sub.plan(all, &Pending::Names(only.clone()), false);
            plan.resources.retain(|r| only.contains(&r.name));
            plan.removed.retain(|n| only.contains(n.as_str()));
            plan
        } else {
            DeltaPlan::default()
        };
        (kind, (!plan.is_empty()).then_some(plan))
    }

    /// LDS and RDS carry their own removals; on ADS, removals of clusters,
    /// endpoints and secrets wait for the last stage (kept in the
    /// subscription's `pending` until then).
    fn plan_push(
        sub: &mut DeltaSubscription,
        view: &View,
        t: &str,
        scope: Pending,
        ads: bool,
        forced: bool,
    ) -> Step<DeltaPlan> {
        let mut plan = sub.plan(view.snap.resources(t), &scope, forced);
        if ads && REMOVE_LAST.contains(&t) && !plan.removed.is_empty() {
            sub.ledger.pending = Pending::Names(plan.removed.drain(..).map(Arc::from).collect());
        }
        if plan.is_empty() {
            return Step::skip();
        }
        let adds = t == CLUSTER
            && plan
                .resources
                .iter()
                .any(|r| !sub.client_has.contains_key(&r.name));
        Step {
            plan: Some(plan),
            adds,
            removals: false,
        }
    }

    fn removals_after_cds(_: &DeltaSubscription, _: &View, _: &str) -> bool {
        false
    }

    fn removals_left(subs: &BTreeMap<String, DeltaSubscription>) -> bool {
        REMOVE_LAST
            .iter()
            .any(|t| subs.get(*t).is_some_and(|s| !s.ledger.pending.is_empty()))
    }

    fn plan_removals(sub: &mut DeltaSubscription, view: &View, t: &str) -> Option<DeltaPlan> {
        let scope = std::mem::take(&mut sub.ledger.pending);
        let plan = sub.plan(view.snap.resources(t), &scope, false);
        // Updates were sent by the earlier stage; one that appears here
        // is not part of this push and goes with the next.
        if !plan.resources.is_empty() {
            sub.ledger.pending =
                Pending::Names(plan.resources.iter().map(|r| r.name.clone()).collect());
        }
        (!plan.removed.is_empty()).then(|| DeltaPlan {
            resources: Vec::new(),
            removed: plan.removed,
        })
    }

    fn record_sent(sub: &mut DeltaSubscription, plan: &DeltaPlan, nonce: &str) {
        sub.record_sent(plan, nonce);
    }

    fn carried(plan: &DeltaPlan) -> Vec<Arc<str>> {
        plan.resources.iter().map(|r| r.name.clone()).collect()
    }

    fn force_endpoints(
        eds: &mut DeltaSubscription,
        view: &View,
        due: &mut BTreeSet<Arc<str>>,
    ) -> Option<DeltaPlan> {
        let due = std::mem::take(due);
        if !eds.started {
            // The first EDS request plans them, after seeding what the
            // client holds: one answer, nothing sent twice.
            eds.force.extend(due);
            return None;
        }
        let wanted: Vec<Arc<str>> = due.into_iter().filter(|n| eds.in_scope(n)).collect();
        eds.force.extend(wanted);
        let mut plan = eds.plan(view.snap.resources(ENDPOINT), &Pending::None, false);
        // Only the forced updates: removals go with pushes, in push order.
        plan.removed.clear();
        (!plan.resources.is_empty()).then_some(plan)
    }

    fn out(type_url: &str, nonce: String, plan: DeltaPlan, control_plane: Arc<str>) -> DeltaOut {
        DeltaOut {
            type_url: type_url.to_string(),
            nonce,
            plan,
            control_plane,
        }
    }
}
