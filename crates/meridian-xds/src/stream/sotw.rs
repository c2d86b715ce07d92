//! The SotW wire: a request replaces the subscription's names, and a
//! response is the full list a subscription selects, shared per view.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::request::intern;
use super::{Protocol, RequestCx, Step};
use crate::source::VersionedResource;
use crate::subscription::{Pending, RequestKind, SotwSubscription};
use crate::types::CLUSTER;
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

impl Protocol for Sotw {
    type Req = DiscoveryRequest;
    type Out = SotwOut;
    type Sub = SotwSubscription;
    type Plan = Arc<SotwList>;
    /// Dropped clusters stay in the CDS list until the last stage, which
    /// sends it without them.
    const REMOVE_LAST: &'static [&'static str] = &[CLUSTER];
    const HOLD_BEFORE_REMOVALS: &'static [&'static str] = &[CLUSTER];

    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(
        sub: &mut SotwSubscription,
        req: &DiscoveryRequest,
        cx: &RequestCx<'_>,
    ) -> (RequestKind, Option<Arc<SotwList>>) {
        let error = req.error_detail.as_ref().map(|e| e.message.as_str());
        let decision = sub.on_request(
            &req.resource_names,
            &req.response_nonce,
            error,
            cx.node_id,
            cx.type_url,
            cx.now,
            |n| intern(cx.view, cx.type_url, n),
        );
        if !decision.respond {
            return (decision.kind, None);
        }
        let list = shared_list(cx.view, cx.type_url, sub);
        let send = sub.should_send(cx.type_url, &list, true);
        (decision.kind, send.then_some(list))
    }

    /// In SotW, dropping clusters means sending CDS twice on ADS: first
    /// with the dropped clusters still in (at their old versions), and in
    /// the last stage without them.
    fn plan_push(
        sub: &mut SotwSubscription,
        view: &View,
        t: &str,
        scope: Pending,
        ads: bool,
        forced: bool,
    ) -> Step<Arc<SotwList>> {
        let touched = match &scope {
            Pending::None => false,
            Pending::All => true,
            Pending::Names(names) => names
                .iter()
                .any(|n| sub.in_scope(n) || sub.sent_contains(n)),
        };
        if ads && t == CLUSTER {
            if !touched {
                return Step::skip();
            }
            let list = shared_list(view, t, sub);
            let dropped: Vec<Arc<VersionedResource>> = sub
                .sent
                .iter()
                .flat_map(|l| l.items.iter())
                .filter(|r| !list.contains(&r.name))
                .cloned()
                .collect();
            let removals = !dropped.is_empty();
            let list = if removals {
                let mut merged = list.items.clone();
                merged.extend(dropped.into_iter().filter(|r| sub.in_scope(&r.name)));
                merged.sort_by(|a, b| a.name.cmp(&b.name));
                Arc::new(SotwList::new(merged))
            } else {
                list
            };
            let adds = list.items.iter().any(|r| !sub.sent_contains(&r.name));
            let send = sub.should_send(t, &list, false);
            return Step {
                plan: send.then_some(list),
                adds: send && adds,
                removals,
            };
        }
        if !touched && !forced {
            return Step::skip();
        }
        let list = shared_list(view, t, sub);
        let send = sub.should_send(t, &list, forced);
        Step::send(send.then_some(list))
    }

    /// CDS went out in the first stage, with any dropped clusters still
    /// in: they go in the last stage.
    fn removals_after_cds(sub: &SotwSubscription, view: &View, t: &str) -> bool {
        if t != CLUSTER {
            return false;
        }
        let list = shared_list(view, t, sub);
        sub.sent
            .iter()
            .flat_map(|l| l.items.iter())
            .any(|r| !list.contains(&r.name))
    }

    fn removals_left(_: &BTreeMap<String, SotwSubscription>) -> bool {
        false
    }

    fn plan_removals(sub: &mut SotwSubscription, view: &View, t: &str) -> Option<Arc<SotwList>> {
        let list = shared_list(view, t, sub);
        sub.should_send(t, &list, false).then_some(list)
    }

    fn record_sent(sub: &mut SotwSubscription, list: &Arc<SotwList>, nonce: &str) {
        sub.record_sent(list.clone(), nonce);
    }

    fn carried(_: &Arc<SotwList>) -> Vec<Arc<str>> {
        Vec::new()
    }

    fn force_endpoints(
        _: &mut SotwSubscription,
        _: &View,
        _: &mut std::collections::BTreeSet<Arc<str>>,
    ) -> Option<Arc<SotwList>> {
        None
    }

    fn out(type_url: &str, nonce: String, list: Arc<SotwList>, control_plane: Arc<str>) -> SotwOut {
        SotwOut {
            type_url: type_url.to_string(),
            nonce,
            list,
            control_plane,
        }
    }
}

/// What `sub` selects from `view`, shared with every stream that asks for
/// the same names.
fn shared_list(view: &View, type_url: &str, sub: &SotwSubscription) -> Arc<SotwList> {
    let names = (!sub.wildcard).then_some(&sub.names);
    view.sotw_list(type_url, names, sub.key, || {
        sub.select(view.snap.resources(type_url))
    })
}
