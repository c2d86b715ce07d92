//! Per-(stream, type) subscription state, as plain structs with no I/O, so
//! the protocol rules can be unit tested without a server.

pub mod delta;
pub mod sotw;
#[cfg(test)]
mod tests;

pub use crate::view::SotwList;
pub use delta::{DeltaPlan, DeltaSubscription};
pub use sotw::SotwSubscription;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

/// What a request turned out to be once classified against the stream state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// First request for the type on this stream, or one that carries no nonce.
    Initial,
    /// Acknowledges the response that carried its nonce.
    Ack,
    /// Carries `error_detail`: the client rejected a response.
    Nack,
    /// SotW only: the nonce is not the latest sent, so the request is ignored.
    Stale,
    /// Delta only: a nonce we do not know (from an older response); only its
    /// subscription changes count.
    Unknown,
}

/// One rejection, kept so operators can see what Envoy refused and why.
#[derive(Clone, Debug, PartialEq)]
pub struct NackRecord {
    pub node_id: String,
    pub type_url: String,
    /// The resources of the rejected response that the client did not hold yet.
    pub resource_names: Vec<String>,
    /// The version (SotW) or nonce (delta) that was rejected.
    pub version: String,
    pub nonce: String,
    /// Envoy's `error_detail.message`.
    pub message: String,
    pub at: SystemTime,
}

/// Per-type sync state as `meridian proxy-status` shows it (Istio's terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Nothing sent yet for the type.
    NotSent,
    /// The latest response was acknowledged.
    Synced,
    /// The latest response is not acknowledged yet.
    Stale,
    /// The latest response was rejected.
    Nacked,
}

/// Per-resource state as CSDS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceState {
    /// Asked for (or sent) but not acknowledged yet.
    Requested,
    /// Asked for but absent from the view.
    DoesNotExist,
    Acked,
    Nacked,
}

/// The bookkeeping both variants keep per (stream, type): nonces, the last
/// ACK and NACK, and what the next push must look at. One struct so the
/// stream core reads it the same way whichever the variant.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pub last_nonce_sent: Option<String>,
    pub acked_nonce: Option<String>,
    pub last_ack: Option<SystemTime>,
    pub nacked_nonce: Option<String>,
    pub last_nack: Option<NackRecord>,
    /// Names that may need sending on the next push (see [`Pending`]).
    pub pending: Pending,
}

impl Ledger {
    pub fn sync_state(&self) -> SyncState {
        sync_state(
            self.last_nonce_sent.as_deref(),
            self.acked_nonce.as_deref(),
            self.nacked_nonce.as_deref(),
        )
    }

    pub(crate) fn note_ack(&mut self, nonce: String, now: SystemTime) {
        self.acked_nonce = Some(nonce);
        self.last_ack = Some(now);
    }

    pub(crate) fn note_nack(&mut self, record: NackRecord) {
        self.nacked_nonce = Some(record.nonce.clone());
        self.last_nack = Some(record);
    }
}

/// What the stream core and status need from a subscription, whichever the
/// variant; everything else (how a request changes it, what a response
/// carries) stays with the variant.
pub trait SubscriptionState: Default + Send + 'static {
    fn ledger(&self) -> &Ledger;
    fn ledger_mut(&mut self) -> &mut Ledger;
    /// Names asked for explicitly (never `*`).
    fn names(&self) -> &BTreeSet<Arc<str>>;
    fn wildcard(&self) -> bool;
    /// Adds the names the client was sent or holds (status lists them under
    /// wildcard even once they left the view).
    fn held_names<'a>(&'a self, into: &mut BTreeSet<&'a str>);
    /// The version of `name` the client was sent or holds, for status.
    fn held_version(&self, name: &str) -> Option<String>;
    /// CSDS view of one resource in scope.
    fn resource_state(&self, name: &str, exists: bool) -> ResourceState;
    /// SotW `version_info` of the latest response sent; delta has none.
    fn sent_version(&self) -> Option<&str> {
        None
    }
    fn acked_version(&self) -> Option<&str> {
        None
    }
    fn sync_state(&self) -> SyncState {
        self.ledger().sync_state()
    }
    /// The sync state against the view's resources of the type: by
    /// default the nonces' ([`Ledger::sync_state`]). Delta overrides it so
    /// that a client that reconnected holding the current versions (sent
    /// nothing, as the protocol wants) is synced, not "not sent".
    fn sync_state_in(&self, _all: &crate::source::Resources) -> SyncState {
        self.sync_state()
    }
    /// The versions status shows as sent and acknowledged: SotW's
    /// `version_info`s; delta's are computed the same way over the
    /// resources the client holds and acknowledged.
    fn status_versions(&self) -> (Option<String>, Option<String>) {
        (
            self.sent_version().map(str::to_string),
            self.acked_version().map(str::to_string),
        )
    }
}

/// The accessors every subscription implements the same way: both keep a
/// `ledger`, `names` and `wildcard` field.
macro_rules! shared_fields {
    () => {
        fn ledger(&self) -> &Ledger {
            &self.ledger
        }
        fn ledger_mut(&mut self) -> &mut Ledger {
            &mut self.ledger
        }
        fn names(&self) -> &BTreeSet<Arc<str>> {
            &self.names
        }
        fn wildcard(&self) -> bool {
            self.wildcard
        }
    };
}
use shared_fields;

pub(crate) fn sync_state(
    sent: Option<&str>,
    acked: Option<&str>,
    nacked: Option<&str>,
) -> SyncState {
    match sent {
        None => SyncState::NotSent,
        Some(s) if nacked == Some(s) => SyncState::Nacked,
        Some(s) if acked == Some(s) => SyncState::Synced,
        Some(_) => SyncState::Stale,
    }
}

/// Which names of a type may need sending since the subscription was last
/// planned: nothing, everything (the stream missed a view, or it is the
/// first plan), or the names that changed between the views it moved
/// through. Plans only look at these, so a push costs a stream
/// O(changed names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pending {
    #[default]
    None,
    All,
    Names(BTreeSet<Arc<str>>),
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        match self {
            Pending::None => true,
            Pending::All => false,
            Pending::Names(n) => n.is_empty(),
        }
    }

    /// Adds the names that changed in one view step.
    pub fn extend(&mut self, names: &[Arc<str>]) {
        if names.is_empty() {
            return;
        }
        match self {
            Pending::All => {}
            Pending::None => *self = Pending::Names(names.iter().cloned().collect()),
            Pending::Names(set) => set.extend(names.iter().cloned()),
        }
    }

    /// True when `name` is among the pending names.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Pending::None => false,
            Pending::All => true,
            Pending::Names(set) => set.contains(name),
        }
    }
}

/// Splits requested names into (wildcard asked explicitly, named set),
/// dropping duplicates: a name asked twice is still one resource.
pub(crate) fn parse_names(names: &[String]) -> (bool, BTreeSet<String>) {
    let mut set: BTreeSet<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
    let star = set.remove("*");
    (star, set)
}
