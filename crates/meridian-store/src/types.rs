//! The replicated command format and the state it builds.
//!
//! These types are the one serialized domain format of Meridian: they are what
//! the Raft log, the Raft RPCs and the snapshots carry. They change only by
//! adding enum variants at the end or by bumping [`crate::codec::FORMAT_VERSION`]
//! together with a decoder for the old version.

use std::collections::BTreeMap;
use std::fmt;
// `declare_raft_types!` names the default snapshot type `Cursor<Vec<u8>>` unqualified.
#[allow(unused_imports)]
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Raft node id. Ids are never reused: the cluster remembers every id it ever
/// admitted (see [`StateData::retired_ids`]).
pub type NodeId = u64;

/// What the cluster knows of a member, carried inside Raft membership so that
/// every node can address every other one and knows its region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub region: String,
    /// Advertised address of the peer (Raft) listener, `host:port`.
    pub peer_addr: String,
    /// Advertised address of the client API listener, `host:port`.
    pub api_addr: String,
    /// Advertised address of the xDS listener, `host:port`.
    pub xds_addr: String,
    /// Advertised address of the admin HTTP listener, `host:port`.
    pub admin_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.region, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// Meridian's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Raft = openraft::Raft<TypeConfig>;

/// Identifies one object: `kind/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One stored object. `value` is the object's spec as canonical JSON bytes;
/// the store never looks inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
    /// Revision of the transaction that last changed this object.
    pub revision: u64,
    /// Revision of the transaction that created this object.
    pub created_revision: u64,
    /// Leader wall-clock time (ms since the Unix epoch) of the last change,
    /// taken from the command so that apply stays deterministic.
    pub updated_at_ms: u64,
}

/// A command proposed through Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A batch as format versions 1 and 2 wrote it: every transaction of
    /// it is at the entry's log index. Never proposed any more; applied by
    /// the old rule so that a log written before the upgrade replays to the
    /// state it built on every replica, whatever snapshot each starts from.
    IndexedBatch(Batch),
    /// No-op, used to confirm leadership and for tests.
    Noop,
    /// Record that a node id left the cluster so it is never admitted again.
    RetireNode { node_id: NodeId },
    /// A group of client transactions validated together by the leader and
    /// committed in one log entry (group commit). Each transaction that
    /// changes an object gets the next revision of the store's counter
    /// (format version 3).
    Batch(Batch),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The leader validated this batch against the state at this config
    /// sequence number. If the state's [`StateData::config_seq`] differs at
    /// apply time (a leader change raced), every transaction in the batch is
    /// answered [`TxnOutcome::Retry`] and nothing changes.
    pub base_config_seq: Option<u64>,
    /// Leader wall-clock time, ms since the Unix epoch.
    pub proposed_at_ms: u64,
    pub txns: Vec<Txn>,
}

/// An atomic set of puts and deletes: all apply or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Client-chosen id, unique per logical write; a retried write with the
    /// same id is answered from the de-duplication table and applied once.
    pub request_id: String,
    pub ops: Vec<TxnOp>,
}

impl Txn {
    /// The bytes of keys, values and the request id: what the transaction
    /// costs in a log entry, give or take a few bytes of framing per op.
    pub fn size_bytes(&self) -> usize {
        const PER_OP: usize = 16;
        self.request_id.len()
            + self
                .ops
                .iter()
                .map(|op| {
                    let key = op.key();
                    let value = match op {
                        TxnOp::Put { value, .. } => value.len(),
                        TxnOp::Delete { .. } | TxnOp::Check { .. } => 0,
                    };
                    PER_OP + key.kind.len() + key.name.len() + value
                })
                .sum::<usize>()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: ObjectKey,
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
        expected_revision: Option<u64>,
    },
    Delete {
        key: ObjectKey,
        expected_revision: Option<u64>,
    },
    /// Changes nothing; fails the transaction unless `key` is at
    /// `expected_revision` (0: absent). Guards a write on an object it does
    /// not touch (an agent's claim on its cluster).
    Check {
        key: ObjectKey,
        expected_revision: u64,
    },
}

impl TxnOp {
    pub fn key(&self) -> &ObjectKey {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key, .. } | TxnOp::Check { key, .. } => key,
        }
    }
    /// `Some(0)` means "must not exist"; `Some(n)` means "must exist at revision n".
    pub fn expected_revision(&self) -> Option<u64> {
        match self {
            TxnOp::Put {
                expected_revision, ..
            }
            | TxnOp::Delete {
                expected_revision, ..
            } => *expected_revision,
            TxnOp::Check {
                expected_revision, ..
            } => Some(*expected_revision),
        }
    }
}

/// The result of applying one log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// One outcome per transaction of a [`Request::Batch`], in order; empty for
    /// other requests.
    pub outcomes: Vec<TxnOutcome>,
    /// The store's revision after this entry.
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Applied at `revision`, its own when it changed an object (see
    /// [`StateData::revision`]); a transaction that changed nothing is
    /// answered the revision it was checked against.
    Committed { revision: u64 },
    /// A duplicate of an earlier request id; this is the first outcome.
    Duplicate { revision: u64 },
    /// A precondition failed; nothing changed.
    Conflict(Conflict),
    /// The batch was validated against a stale base; nothing changed, the
    /// proposer should validate again and resubmit.
    Retry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: ObjectKey,
    pub expected_revision: u64,
    /// 0 when the object does not exist.
    pub actual_revision: u64,
    /// When the conflicting object was last changed (ms since the epoch), if it exists.
    pub actual_updated_at_ms: Option<u64>,
}

/// One change to one object, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub key: ObjectKey,
    /// Revision of the transaction that made the change.
    pub revision: u64,
    pub updated_at_ms: u64,
    /// The object after the change; `None` for a delete.
    #[serde(with = "crate::bytes::option")]
    pub value: Option<Vec<u8>>,
    /// The object's value before the change; `None` if it did not exist.
    #[serde(with = "crate::bytes::option")]
    pub prev_value: Option<Vec<u8>>,
}

/// The whole replicated state. A snapshot is exactly this, encoded with
/// [`crate::codec`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub objects: BTreeMap<ObjectKey, StoredObject>,
    /// Revision of the last transaction that changed any object: a counter
    /// advanced by one for each such transaction (in an [`Request::IndexedBatch`]
    /// of an old log: the entry's index), so unique per transaction and
    /// monotonic across snapshots.
    pub revision: u64,
    /// Incremented by every applied [`Batch`] with a `base_config_seq` (the
    /// validated config lane) that changed something; the guard for
    /// leader-side validation. Batches without one (agents' endpoint
    /// reports) leave it alone.
    pub config_seq: u64,
    /// Recent request ids of config writes and their outcome, oldest
    /// first, within the budget of [`crate::limits`].
    pub dedup: Vec<DedupEntry>,
    /// Recent events of config writes, oldest first, bounded by
    /// [`crate::limits::EVENT_HISTORY`]. A watch from a revision older than
    /// the first kept event is answered "compacted"; the watcher lists again.
    pub events: Vec<Event>,
    /// Every node id that has ever left the cluster.
    pub retired_ids: Vec<NodeId>,
    /// As `dedup`, for agents' writes (format version 2).
    pub agent_dedup: Vec<DedupEntry>,
    /// As `events`, for agents' writes (format version 2).
    pub agent_events: Vec<Event>,
}

/// One remembered request id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub request_id: String,
    pub outcome: TxnOutcome,
    /// Leader time of the entry that applied it, ms since the epoch.
    pub at_ms: u64,
}

/// Whose write a batch is, decided by the batch itself: config batches carry
/// the config sequence number they were validated against, agents' do not.
/// Each class has its own de-duplication and history budget, so one class's
/// traffic cannot push the other's out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteClass {
    Config,
    Agent,
}

impl Batch {
    pub fn class(&self) -> WriteClass {
        if self.base_config_seq.is_some() {
            WriteClass::Config
        } else {
            WriteClass::Agent
        }
    }
}
