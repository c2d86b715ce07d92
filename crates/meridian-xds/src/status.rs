//! What every connected Envoy was sent and what it did with it: the data
//! behind CSDS and `meridian proxy-status`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::metrics::Variant;
use crate::server::Inner;
use crate::source::{Resources, Viewer};
use crate::stream::StreamState;
use crate::subscription::{NackRecord, ResourceState, SubscriptionState, SyncState};

/// One connected stream.
#[derive(Clone, Debug)]
pub struct ProxyStatus {
    pub stream_id: u64,
    pub node_id: String,
    pub node: envoy_types::pb::envoy::config::core::v3::Node,
    pub viewer: Viewer,
    pub variant: Variant,
    pub connected_at: SystemTime,
    /// The `revision` of the snapshot the stream currently serves (its
    /// `view`); 0 before the first.
    pub view_revision: u64,
    /// By type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

impl ProxyStatus {
    /// The revision this Envoy is known to run: the revision of the view
    /// its stream serves, once every type it subscribed to is synced (or
    /// has nothing to send). `apply --wait` and `meridian proxy-status`
    /// both read this one answer.
    pub fn synced_revision(&self) -> Option<u64> {
        let synced = !self.types.is_empty()
            && self
                .types
                .values()
                .all(|t| matches!(t.state, SyncState::Synced | SyncState::NotSent));
        (synced && self.view_revision > 0).then_some(self.view_revision)
    }
}

/// One type on one stream.
#[derive(Clone, Debug)]
pub struct TypeStatus {
    pub type_url: String,
    pub state: SyncState,
    pub wildcard: bool,
    /// Names asked for explicitly.
    pub requested: Vec<String>,
    /// SotW: `version_info` of the latest response; delta: the same hash
    /// over what the client holds (sent, or reported on reconnect).
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub acked_nonce: Option<String>,
    pub last_ack: Option<SystemTime>,
    pub last_nack: Option<NackRecord>,
    pub resources: Vec<ResourceStatus>,
}

/// One resource in scope of a subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceStatus {
    pub name: String,
    /// The version sent (or held by the client), when known.
    pub version: Option<String>,
    pub state: ResourceState,
}

pub(crate) fn collect(inner: &Inner) -> Vec<ProxyStatus> {
    // Clone the handles first so the registry lock is not held while each
    // stream's lock is taken.
    let streams: Vec<_> = inner
        .registry
        .lock()
        .expect("registry lock")
        .values()
        .cloned()
        .collect();
    let mut out: Vec<ProxyStatus> = streams.iter().map(|s| s.status()).collect();
    out.sort_by_key(|p| p.stream_id);
    out
}

pub(crate) fn of_stream<S: SubscriptionState>(st: &StreamState<S>) -> ProxyStatus {
    let view = st.view.as_ref().map(|v| v.snap.clone()).unwrap_or_default();
    let types = st
        .subs
        .iter()
        .map(|(t, sub)| (t.clone(), of_type(t, sub, view.resources(t))))
        .collect();
    ProxyStatus {
        stream_id: st.id,
        node_id: st.node.id.clone(),
        node: st.node.clone(),
        viewer: st.viewer.clone(),
        variant: st.variant,
        connected_at: st.connected_at,
        view_revision: view.revision,
        types,
    }
}

fn of_type<S: SubscriptionState>(t: &str, sub: &S, all: &Resources) -> TypeStatus {
    let mut names: BTreeSet<&str> = sub.names().iter().map(|n| &**n).collect();
    if sub.wildcard() {
        names.extend(all.keys().map(String::as_str));
        sub.held_names(&mut names);
    }
    let resources = names
        .into_iter()
        .map(|n| ResourceStatus {
            name: n.to_string(),
            version: sub.held_version(n),
            state: sub.resource_state(n, all.contains_key(n)),
        })
        .collect();
    let ledger = sub.ledger();
    let (sent_version, acked_version) = sub.status_versions();
    TypeStatus {
        type_url: t.to_string(),
        state: sub.sync_state_in(all),
        wildcard: sub.wildcard(),
        requested: sub.names().iter().map(|n| n.to_string()).collect(),
        sent_version,
        sent_nonce: ledger.last_nonce_sent.clone(),
        acked_version,
        acked_nonce: ledger.acked_nonce.clone(),
        last_ack: ledger.last_ack,
        last_nack: ledger.last_nack.clone(),
        resources,
    }
}
