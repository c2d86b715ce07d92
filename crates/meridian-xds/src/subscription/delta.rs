use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use super::{
    Ledger, NackRecord, Pending, RequestKind, ResourceState, SubscriptionState, SyncState,
};
use crate::source::{version_key, version_string, Resources, VersionedResource, FOREIGN_VERSION};

/// Responses remembered for ACK/NACK correlation; older nonces count as unknown.
const IN_FLIGHT: usize = 32;

/// Incremental subscription of one stream to one type. Names are `Arc<str>`
/// shared with the view and versions are [`version_key`] numbers, so the
/// per-stream cost of a resource is a few words, not two strings.
#[derive(Clone, Debug, Default)]
pub struct DeltaSubscription {
    /// Names subscribed explicitly (never contains `*`).
    pub names: BTreeSet<Arc<str>>,
    pub wildcard: bool,
    /// A request for the type was seen (the first one decides legacy wildcard
    /// and carries `initial_resource_versions`).
    pub started: bool,
    /// What the client holds, name to version key, as far as this stream
    /// knows: seeded from `initial_resource_versions`, then from what was
    /// sent.
    pub client_has: BTreeMap<Arc<str>, u64>,
    /// Names to send on the next answer even if the client holds them.
    pub force: BTreeSet<Arc<str>>,
    /// Subscribed names already answered as absent in `removed_resources`.
    pub reported_absent: BTreeSet<Arc<str>>,
    /// Version key the client acknowledged last, by name.
    pub acked: BTreeMap<Arc<str>, u64>,
    pub nacked: BTreeSet<Arc<str>>,
    pub ledger: Ledger,
    in_flight: VecDeque<(String, Vec<(Arc<str>, u64)>)>,
}

/// One delta answer: what to add or update, and what to remove.
#[derive(Clone, Debug, Default)]
pub struct DeltaPlan {
    pub resources: Vec<Arc<VersionedResource>>,
    pub removed: Vec<String>,
}

impl DeltaPlan {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.removed.is_empty()
    }
}

/// A delta request's fields that matter to the subscription.
#[derive(Clone, Copy, Debug)]
pub struct DeltaRequestView<'a> {
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    pub initial_versions: &'a HashMap<String, String>,
    pub nonce: &'a str,
    pub error: Option<&'a str>,
}

impl DeltaSubscription {
    /// Applies one request. Subscription changes always count, whatever the
    /// nonce; the nonce only correlates ACK and NACK.
    pub fn on_request(
        &mut self,
        req: DeltaRequestView<'_>,
        node_id: &str,
        type_url: &str,
        now: SystemTime,
        intern: impl Fn(&str) -> Arc<str>,
    ) -> RequestKind {
        let first = !self.started;
        self.started = true;
        if first {
            self.client_has = req
                .initial_versions
                .iter()
                .map(|(k, v)| (intern(k), version_key(v)))
                .collect();
            // A client reports only versions it accepted, so what it holds
            // counts as acknowledged: a reconnect that needs no answer is
            // in sync from its first request, on whichever controller.
            self.acked = self
                .client_has
                .iter()
                .filter(|(_, k)| **k != FOREIGN_VERSION)
                .map(|(n, k)| (n.clone(), *k))
                .collect();
            if !self.acked.is_empty() {
                self.ledger.last_ack = Some(now);
            }
            // Legacy rule: a first request naming nothing is a wildcard
            // one, for LDS and CDS only.
            if crate::types::is_full_state(type_url) && req.subscribe.iter().all(|n| n.is_empty()) {
                self.wildcard = true;
            }
        }
        for name in req.subscribe.iter().filter(|n| !n.is_empty()) {
            if name == "*" {
                self.wildcard = true;
                continue;
            }
            let name = intern(name);
            self.reported_absent.remove(&name);
            // On the first request the client told us what it holds; later,
            // subscribing to a held name still means "send it".
            if !first {
                self.force.insert(name.clone());
            }
            self.names.insert(name);
        }
        for name in req.unsubscribe {
            if name == "*" {
                self.wildcard = false;
                // What only the wildcard covered is no longer the client's:
                // a later `*` sends it again.
                let names = &self.names;
                self.client_has.retain(|n, _| names.contains(n));
                continue;
            }
            // Unsubscribing a name never subscribed is a no-op.
            if self.names.remove(name.as_str()) {
                self.force.remove(name.as_str());
                self.reported_absent.remove(name.as_str());
                if !self.wildcard {
                    self.client_has.remove(name.as_str());
                }
            }
        }
        if req.nonce.is_empty() {
            return RequestKind::Initial;
        }
        let Some(pos) = self.in_flight.iter().position(|(n, _)| n == req.nonce) else {
            return RequestKind::Unknown;
        };
        let (nonce, carried) = self.in_flight.remove(pos).expect("position is in range");
        if let Some(message) = req.error {
            let names: Vec<String> = carried.iter().map(|(n, _)| n.to_string()).collect();
            self.nacked.extend(carried.into_iter().map(|(n, _)| n));
            self.ledger.note_nack(NackRecord {
                node_id: node_id.to_string(),
                type_url: type_url.to_string(),
                resource_names: names,
                version: nonce.clone(),
                nonce,
                message: message.to_string(),
                at: now,
            });
            return RequestKind::Nack;
        }
        for (name, version) in carried {
            self.nacked.remove(&name);
            self.acked.insert(name, version);
        }
        self.ledger.note_ack(nonce, now);
        RequestKind::Ack
    }

    pub fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Everything in scope that the client does not hold at the current
    /// version (or that it asked for again), plus removals: names the client
    /// holds that are gone, and explicitly subscribed names that do not exist
    /// and were not yet answered as such. A name never sent and not
    /// subscribed is never in `removed`. Only names `scope` covers are
    /// looked at (and those to be forced); `force_all` resends everything
    /// in scope.
    pub fn plan(&self, all: &Resources, scope: &Pending, force_all: bool) -> DeltaPlan {
        match scope {
            _ if force_all => self.plan_all(all, true),
            Pending::All => self.plan_all(all, false),
            Pending::None if self.force.is_empty() => DeltaPlan::default(),
            Pending::None => self.plan_names(all, self.force.iter()),
            Pending::Names(set) if self.force.is_empty() => self.plan_names(all, set.iter()),
            Pending::Names(set) => self.plan_names(all, set.union(&self.force)),
        }
    }

    fn wants(&self, r: &VersionedResource, force_all: bool) -> bool {
        force_all || self.force.contains(&r.name) || self.client_has.get(&r.name) != Some(&r.key)
    }

    /// Whether a name absent from the view must be answered as removed.
    fn absent_removed(&self, name: &str) -> bool {
        if self.client_has.contains_key(name) {
            self.in_scope(name)
        } else {
            self.names.contains(name) && !self.reported_absent.contains(name)
        }
    }

    fn plan_all(&self, all: &Resources, force_all: bool) -> DeltaPlan {
        let mut plan = DeltaPlan::default();
        if self.wildcard {
            plan.resources
                .extend(all.values().filter(|r| self.wants(r, force_all)).cloned());
            // Explicit names outside the view are not covered by the loop.
        } else {
            plan.resources.extend(
                self.names
                    .iter()
                    .filter_map(|n| all.get(&**n))
                    .filter(|r| self.wants(r, force_all))
                    .cloned(),
            );
        }
        let mut removed: BTreeSet<&str> = BTreeSet::new();
        for name in self.client_has.keys().chain(self.names.iter()) {
            if !all.contains_key(&**name) && self.absent_removed(name) {
                removed.insert(name);
            }
        }
        plan.removed = removed.into_iter().map(str::to_string).collect();
        plan
    }

    fn plan_names<'a>(
        &self,
        all: &Resources,
        names: impl Iterator<Item = &'a Arc<str>>,
    ) -> DeltaPlan {
        let mut plan = DeltaPlan::default();
        for name in names {
            match all.get(&**name) {
                Some(r) => {
                    if self.in_scope(name) && self.wants(r, false) {
                        plan.resources.push(r.clone());
                    }
                }
                None => {
                    if self.absent_removed(name) {
                        plan.removed.push(name.to_string());
                    }
                }
            }
        }
        plan
    }

    /// Records an answer as sent under `nonce`.
    pub fn record_sent(&mut self, plan: &DeltaPlan, nonce: &str) {
        let mut carried = Vec::with_capacity(plan.resources.len());
        for r in &plan.resources {
            self.client_has.insert(r.name.clone(), r.key);
            self.force.remove(&r.name);
            self.reported_absent.remove(&r.name);
            carried.push((r.name.clone(), r.key));
        }
        for name in &plan.removed {
            let name = name.as_str();
            self.client_has.remove(name);
            self.force.remove(name);
            self.acked.remove(name);
            self.nacked.remove(name);
            if let Some(n) = self.names.get(name) {
                self.reported_absent.insert(n.clone());
            }
        }
        self.in_flight.push_back((nonce.to_string(), carried));
        if self.in_flight.len() > IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.ledger.last_nonce_sent = Some(nonce.to_string());
    }

    /// True while `nonce` is a response awaiting its ACK or NACK.
    pub fn in_flight(&self, nonce: &str) -> bool {
        self.in_flight.iter().any(|(n, _)| n == nonce)
    }

    /// CSDS view of one resource in scope.
    pub fn resource_state(&self, name: &str, exists: bool) -> ResourceState {
        if !exists {
            return ResourceState::DoesNotExist;
        }
        if self.nacked.contains(name) {
            return ResourceState::Nacked;
        }
        match (self.client_has.get(name), self.acked.get(name)) {
            (Some(has), Some(acked)) if has == acked => ResourceState::Acked,
            _ => ResourceState::Requested,
        }
    }
}

impl SubscriptionState for DeltaSubscription {
    super::shared_fields!();

    fn held_names<'a>(&'a self, into: &mut BTreeSet<&'a str>) {
        into.extend(self.client_has.keys().map(|n| &**n));
    }
    fn held_version(&self, name: &str) -> Option<String> {
        self.client_has.get(name).map(|k| version_string(*k))
    }
    fn resource_state(&self, name: &str, exists: bool) -> ResourceState {
        DeltaSubscription::resource_state(self, name, exists)
    }
    /// Nothing sent on this stream: synced when the client holds exactly
    /// what the view has in scope (a reconnect at current versions), stale
    /// when it holds something else (an answer is due), not sent when it
    /// holds nothing.
    fn sync_state_in(&self, all: &Resources) -> SyncState {
        let by_nonce = self.ledger.sync_state();
        if by_nonce != SyncState::NotSent || !self.started || self.client_has.is_empty() {
            return by_nonce;
        }
        if self.force.is_empty() && self.plan_all(all, false).is_empty() {
            SyncState::Synced
        } else {
            SyncState::Stale
        }
    }
    fn status_versions(&self) -> (Option<String>, Option<String>) {
        let hash = |m: &BTreeMap<Arc<str>, u64>| {
            (!m.is_empty()).then(|| {
                let held: Vec<(&str, String)> =
                    m.iter().map(|(n, k)| (&**n, version_string(*k))).collect();
                super::sotw::names_versions_hash(held.iter().map(|(n, v)| (*n, v.as_str())))
            })
        };
        (hash(&self.client_has), hash(&self.acked))
    }
}
