use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use super::{sync_state, NackRecord, RequestKind, ResourceState, SyncState};
use crate::source::{Resources, VersionedResource};

/// Responses remembered for ACK/NACK correlation; older nonces count as unknown.
const IN_FLIGHT: usize = 32;

/// Incremental subscription of one stream to one type.
#[derive(Clone, Debug, Default)]
pub struct DeltaSubscription {
    /// Names subscribed explicitly (never contains `*`).
    pub names: BTreeSet<String>,
    pub wildcard: bool,
    /// A request for the type was seen (the first one decides legacy wildcard
    /// and carries `initial_resource_versions`).
    pub started: bool,
    /// What the client holds, name to version, as far as this stream knows:
    /// seeded from `initial_resource_versions`, then from what was sent.
    pub client_has: BTreeMap<String, String>,
    /// Names to send on the next answer even if the client holds them.
    pub force: BTreeSet<String>,
    /// Subscribed names already answered as absent in `removed_resources`.
    pub reported_absent: BTreeSet<String>,
    pub last_nonce_sent: Option<String>,
    pub acked: BTreeMap<String, String>,
    pub nacked: BTreeSet<String>,
    pub acked_nonce: Option<String>,
    pub last_ack: Option<SystemTime>,
    pub nacked_nonce: Option<String>,
    pub last_nack: Option<NackRecord>,
    in_flight: VecDeque<(String, Vec<(String, String)>)>,
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
    ) -> RequestKind {
        let first = !self.started;
        self.started = true;
        if first {
            self.client_has = req
                .initial_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Legacy rule: a first request naming nothing is a wildcard one.
            if req.subscribe.iter().all(|n| n.is_empty()) {
                self.wildcard = true;
            }
        }
        for name in req.subscribe.iter().filter(|n| !n.is_empty()) {
            if name == "*" {
                self.wildcard = true;
                continue;
            }
            self.names.insert(name.clone());
            self.reported_absent.remove(name);
            // On the first request the client told us what it holds; later,
            // subscribing to a held name still means "send it".
            if !first {
                self.force.insert(name.clone());
            }
        }
        for name in req.unsubscribe {
            if name == "*" {
                self.wildcard = false;
                continue;
            }
            // Unsubscribing a name never subscribed is a no-op.
            if self.names.remove(name) {
                self.force.remove(name);
                self.reported_absent.remove(name);
                if !self.wildcard {
                    self.client_has.remove(name);
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
            let names: Vec<String> = carried.iter().map(|(n, _)| n.clone()).collect();
            self.nacked.extend(names.iter().cloned());
            self.nacked_nonce = Some(nonce.clone());
            self.last_nack = Some(NackRecord {
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
        self.acked_nonce = Some(nonce);
        self.last_ack = Some(now);
        RequestKind::Ack
    }

    pub fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Everything in scope that the client does not hold at the current
    /// version (or that it asked for again), plus removals: names the client
    /// holds that are gone, and explicitly subscribed names that do not exist
    /// and were not yet answered as such. A name never sent and not
    /// subscribed is never in `removed`.
    pub fn plan(&self, all: &Resources, force_all: bool) -> DeltaPlan {
        let mut plan = DeltaPlan::default();
        let wants = |r: &Arc<VersionedResource>| {
            force_all
                || self.force.contains(&r.name)
                || self.client_has.get(&r.name) != Some(&r.version)
        };
        if self.wildcard {
            plan.resources
                .extend(all.values().filter(|r| wants(r)).cloned());
            // Explicit names outside the view are not covered by the loop.
        } else {
            plan.resources.extend(
                self.names
                    .iter()
                    .filter_map(|n| all.get(n))
                    .filter(|r| wants(r))
                    .cloned(),
            );
        }
        let mut removed: BTreeSet<String> = BTreeSet::new();
        for name in self.client_has.keys() {
            if !all.contains_key(name) && self.in_scope(name) {
                removed.insert(name.clone());
            }
        }
        for name in &self.names {
            if !all.contains_key(name)
                && !self.reported_absent.contains(name)
                && !self.client_has.contains_key(name)
            {
                removed.insert(name.clone());
            }
        }
        plan.removed = removed.into_iter().collect();
        plan
    }

    /// Records an answer as sent under `nonce`.
    pub fn record_sent(&mut self, plan: &DeltaPlan, nonce: &str) {
        let mut carried = Vec::with_capacity(plan.resources.len());
        for r in &plan.resources {
            self.client_has.insert(r.name.clone(), r.version.clone());
            self.force.remove(&r.name);
            self.reported_absent.remove(&r.name);
            carried.push((r.name.clone(), r.version.clone()));
        }
        for name in &plan.removed {
            self.client_has.remove(name);
            self.force.remove(name);
            self.acked.remove(name);
            self.nacked.remove(name);
            if self.names.contains(name) {
                self.reported_absent.insert(name.clone());
            }
        }
        self.in_flight.push_back((nonce.to_string(), carried));
        if self.in_flight.len() > IN_FLIGHT {
            self.in_flight.pop_front();
        }
        self.last_nonce_sent = Some(nonce.to_string());
    }

    /// True while `nonce` is a response awaiting its ACK or NACK.
    pub fn in_flight(&self, nonce: &str) -> bool {
        self.in_flight.iter().any(|(n, _)| n == nonce)
    }

    pub fn sync_state(&self) -> SyncState {
        sync_state(
            self.last_nonce_sent.as_deref(),
            self.acked_nonce.as_deref(),
            self.nacked_nonce.as_deref(),
        )
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
