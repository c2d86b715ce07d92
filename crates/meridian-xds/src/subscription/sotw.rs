use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{
    parse_names, Ledger, NackRecord, Pending, RequestKind, ResourceState, SubscriptionState,
    SyncState,
};
use crate::source::{Resources, VersionedResource};
use crate::types;
use crate::view::{names_key, SotwList};

/// State-of-the-world subscription of one stream to one type. What was sent
/// and acknowledged are shared lists (usually the one list every stream of
/// the view got), not per-stream copies.
#[derive(Clone, Debug, Default)]
pub struct SotwSubscription {
    /// Names asked for explicitly (never contains `*`).
    pub names: BTreeSet<Arc<str>>,
    /// Everything of the type is in scope.
    pub wildcard: bool,
    /// The stream has named something (or `*`); from then on an empty list
    /// means "nothing" rather than the legacy wildcard.
    pub named_ever: bool,
    /// The latest response sent.
    pub sent: Option<Arc<SotwList>>,
    /// The response the client acknowledged last.
    pub acked: Option<Arc<SotwList>>,
    pub ledger: Ledger,
    /// [`names_key`] of `names`, or 0 under wildcard: streams with equal
    /// keys share one response list per view.
    pub key: u64,
}

/// What the server should do after a SotW request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SotwDecision {
    pub kind: RequestKind,
    /// Answer now, even when the answer equals the last one sent.
    pub respond: bool,
}

impl SotwSubscription {
    /// Applies one request. Stale requests change nothing.
    pub fn on_request(
        &mut self,
        names: &[String],
        nonce: &str,
        error: Option<&str>,
        node_id: &str,
        type_url: &str,
        now: SystemTime,
        intern: impl Fn(&str) -> Arc<str>,
    ) -> SotwDecision {
        // A nonce we could not have sent (a previous stream's) is treated as a
        // fresh request: nonces do not survive a stream restart.
        if !nonce.is_empty()
            && self.ledger.last_nonce_sent.is_some()
            && self.ledger.last_nonce_sent.as_deref() != Some(nonce)
        {
            return SotwDecision {
                kind: RequestKind::Stale,
                respond: false,
            };
        }
        // Legacy wildcard (an empty first request) is LDS's and CDS's only;
        // for the other types an empty list asks for nothing.
        if !types::is_full_state(type_url) {
            self.named_ever = true;
        }
        let added = self.set_names(names, intern);
        let ours = !nonce.is_empty() && self.ledger.last_nonce_sent.as_deref() == Some(nonce);
        if let Some(message) = error {
            let rejected = self
                .sent
                .iter()
                .flat_map(|l| l.items.iter())
                .filter(|r| self.acked_key(&r.name) != Some(r.key))
                .map(|r| r.name.to_string())
                .collect();
            self.ledger.note_nack(NackRecord {
                node_id: node_id.to_string(),
                type_url: type_url.to_string(),
                resource_names: rejected,
                version: self.sent_version().unwrap_or_default().to_string(),
                nonce: nonce.to_string(),
                message: message.to_string(),
                at: now,
            });
            // Not answered: resending what was just rejected would loop. Only
            // names that are new to the stream prompt an answer.
            return SotwDecision {
                kind: RequestKind::Nack,
                respond: added,
            };
        }
        if ours {
            self.acked = self.sent.clone();
            self.ledger.note_ack(nonce.to_string(), now);
            // A later ACK supersedes a NACK of the same stream and type.
            self.ledger.nacked_nonce = None;
            return SotwDecision {
                kind: RequestKind::Ack,
                respond: added,
            };
        }
        SotwDecision {
            kind: RequestKind::Initial,
            respond: true,
        }
    }

    /// Replaces the subscription; true when something entered the scope.
    pub fn set_names(&mut self, names: &[String], intern: impl Fn(&str) -> Arc<str>) -> bool {
        let (star, named) = parse_names(names);
        let wildcard = star || (named.is_empty() && !self.named_ever);
        if star || !named.is_empty() {
            self.named_ever = true;
        }
        let added =
            (wildcard && !self.wildcard) || named.iter().any(|n| !self.names.contains(n.as_str()));
        let changed = wildcard != self.wildcard
            || named.len() != self.names.len()
            || named.iter().any(|n| !self.names.contains(n.as_str()));
        if changed {
            self.names = named.iter().map(|n| intern(n)).collect();
            self.key = if wildcard { 0 } else { names_key(&self.names) };
            // A narrower scope changes the next response even when no
            // resource changed (full-state types drop the names).
            self.ledger.pending = Pending::All;
        }
        self.wildcard = wildcard;
        added
    }

    /// True when `name` is in the subscription's scope.
    pub fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The resources a response carries now: everything under wildcard, else
    /// the requested names that exist. Name order, no duplicates.
    pub fn select(&self, all: &Resources) -> Vec<Arc<VersionedResource>> {
        if self.wildcard {
            all.values().cloned().collect()
        } else {
            self.names
                .iter()
                .filter_map(|n| all.get(&**n).cloned())
                .collect()
        }
    }

    /// `version_info` of the latest response sent.
    pub fn sent_version(&self) -> Option<&str> {
        self.sent.as_ref().map(|l| l.version.as_str())
    }

    /// `version_info` of the response acknowledged last.
    pub fn acked_version(&self) -> Option<&str> {
        self.acked.as_ref().map(|l| l.version.as_str())
    }

    /// The version key of `name` in the acknowledged response.
    pub fn acked_key(&self, name: &str) -> Option<u64> {
        self.acked.as_ref()?.get(name).map(|r| r.key)
    }

    /// True when the latest response sent carries `name`.
    pub fn sent_contains(&self, name: &str) -> bool {
        self.sent.as_ref().is_some_and(|l| l.contains(name))
    }

    /// Whether `list` should go out. Identical responses never go out unless
    /// forced; for RDS/EDS/SDS an empty response says nothing, so it is skipped.
    pub fn should_send(&self, type_url: &str, list: &SotwList, forced: bool) -> bool {
        if list.items.is_empty() && !types::is_full_state(type_url) {
            return false;
        }
        forced || self.sent_version() != Some(list.version.as_str())
    }

    /// Records a response as sent.
    pub fn record_sent(&mut self, list: Arc<SotwList>, nonce: &str) {
        self.sent = Some(list);
        self.ledger.last_nonce_sent = Some(nonce.to_string());
    }

    /// CSDS view of one resource in scope.
    pub fn resource_state(&self, name: &str, exists: bool) -> ResourceState {
        if !exists {
            return ResourceState::DoesNotExist;
        }
        let Some(sent) = self.sent.as_ref().and_then(|l| l.get(name)) else {
            return ResourceState::Requested;
        };
        if self.acked_key(name) == Some(sent.key) {
            return ResourceState::Acked;
        }
        let nacked = self.ledger.sync_state() == SyncState::Nacked
            && self
                .ledger
                .last_nack
                .as_ref()
                .is_some_and(|n| n.resource_names.iter().any(|r| r == name));
        if nacked {
            ResourceState::Nacked
        } else {
            ResourceState::Requested
        }
    }
}

impl SubscriptionState for SotwSubscription {
    super::shared_fields!();

    fn held_names<'a>(&'a self, into: &mut BTreeSet<&'a str>) {
        into.extend(
            self.sent
                .iter()
                .flat_map(|l| l.items.iter())
                .map(|r| &*r.name),
        );
    }
    fn held_version(&self, name: &str) -> Option<String> {
        self.sent
            .as_ref()
            .and_then(|l| l.get(name))
            .map(|r| r.version.clone())
    }
    fn resource_state(&self, name: &str, exists: bool) -> ResourceState {
        SotwSubscription::resource_state(self, name, exists)
    }
    fn sent_version(&self) -> Option<&str> {
        SotwSubscription::sent_version(self)
    }
    fn acked_version(&self) -> Option<&str> {
        SotwSubscription::acked_version(self)
    }
}

/// A SotW response's `version_info`: a hash of its names and versions, so any
/// replica with the same content reports the same version.
pub fn response_version(list: &[Arc<VersionedResource>]) -> String {
    names_versions_hash(list.iter().map(|r| (&*r.name, r.version.as_str())))
}

/// The hash behind [`response_version`], over (name, version) pairs in
/// name order; delta status uses it for what a client holds, so both
/// variants show one version for one set of resources.
pub(crate) fn names_versions_hash<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, version) in pairs {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(version.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}
