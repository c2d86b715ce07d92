//! Format version 1, read for upgrades. Entries, votes and log ids are laid
//! out as in version 2; the state of a snapshot had one de-duplication table
//! and one event history shared by config and agents' writes.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::types::{
    DedupEntry, Event, LogId, NodeId, ObjectKey, SnapshotMeta, StateData, StoredMembership,
    StoredObject, TxnOutcome,
};

pub(super) const VERSION: u8 = 1;

#[derive(Deserialize)]
pub(super) struct Snapshot {
    meta: SnapshotMeta,
    state: State,
}

#[derive(Deserialize)]
struct State {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    objects: BTreeMap<ObjectKey, StoredObject>,
    revision: u64,
    config_seq: u64,
    dedup: Vec<(String, TxnOutcome)>,
    events: Vec<Event>,
    retired_ids: Vec<NodeId>,
}

impl Snapshot {
    /// The shared table and history become the config class's: nothing a
    /// config write may be retried or rolled back against is lost. Agents'
    /// ids from before the upgrade are then not de-duplicated; their writes
    /// (whole endpoint sets, leases) are idempotent. The ids carry no time,
    /// so they are the first to go once the table is over its count.
    pub(super) fn upgrade(self) -> (SnapshotMeta, StateData) {
        let s = self.state;
        let dedup = s
            .dedup
            .into_iter()
            .map(|(request_id, outcome)| DedupEntry {
                request_id,
                outcome,
                at_ms: 0,
            })
            .collect();
        let state = StateData {
            last_applied: s.last_applied,
            last_membership: s.last_membership,
            objects: s.objects,
            revision: s.revision,
            config_seq: s.config_seq,
            dedup,
            events: s.events,
            retired_ids: s.retired_ids,
            agent_dedup: Vec::new(),
            agent_events: Vec::new(),
        };
        (self.meta, state)
    }
}
