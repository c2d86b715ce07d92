//! The replicated state machine: objects with revisions, request
//! de-duplication, the watch event history, and snapshots as files.
//!
//! Apply is deterministic (no clocks, no randomness): every replica that
//! applies the same log reaches the same [`StateData`].
//!
//! This file is long because apply, de-duplication, the event history and
//! the watch hand-off share one lock and one order of steps, which is easier
//! to check in one place than across files.
//!
//! Watching: [`StateMachineStore::subscribe_from`] hands out the retained
//! events after a revision plus a broadcast receiver of later
//! [`EventBatch`]es, taken under the lock apply holds, so there is no gap and
//! no duplicate. A receiver ends (`RecvError::Closed`) when a snapshot from
//! the leader replaces the whole state, and reports `RecvError::Lagged` when
//! it fell more than [`WATCH_CHANNEL_CAPACITY`] batches behind; in both cases
//! the watcher subscribes again from its last revision, and lists again if
//! that answers [`WatchError::Compacted`].

mod classes;

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError};
use tokio::sync::{broadcast, watch};

use crate::codec;
use crate::types::*;
use classes::{merged_after, ClassLog};

/// How many applied entries' event batches a watcher may fall behind before
/// it is told it lagged.
pub const WATCH_CHANNEL_CAPACITY: usize = 1024;

const SNAPSHOT_FILE: &str = "current.snap";
const SNAPSHOT_TMP: &str = "current.snap.tmp";

/// The events produced by one applied log entry, in op order.
pub type EventBatch = Arc<Vec<Event>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Events after the requested revision were dropped from the bounded
    /// history; list again, then watch from the listed revision.
    /// `oldest_available` is the smallest `from_revision` served right now.
    #[error("watch history compacted: the oldest revision that can be watched from is {oldest_available}; list again")]
    Compacted { oldest_available: u64 },
}

/// The state machine. Cheap to clone: clones share one state; the node keeps
/// one for reads and watches and gives one to openraft.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    machine: Mutex<Machine>,
    applied_tx: watch::Sender<u64>,
    snapshot_dir: PathBuf,
    /// Serializes snapshot file writes and guards the current snapshot's meta.
    snapshot: tokio::sync::Mutex<Option<SnapshotMeta>>,
    snapshot_counter: AtomicU64,
}

/// The live form of [`StateData`]: each class's FIFOs as deques, its dedup
/// table indexed.
struct Machine {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    objects: BTreeMap<ObjectKey, StoredObject>,
    revision: u64,
    config_seq: u64,
    config: ClassLog,
    agent: ClassLog,
    retired_ids: Vec<NodeId>,
    events_tx: broadcast::Sender<EventBatch>,
    /// The proposer's time of the last batch applied here, and when this
    /// replica applied it (`None`: none since it started or installed a
    /// snapshot). Not replicated state: the leader's time as the log last
    /// carried it, for lease expiry and the next leader's stamps.
    last_batch: Option<(u64, Instant)>,
}

impl Machine {
    fn from_data(d: StateData) -> Self {
        Machine {
            last_applied: d.last_applied,
            last_membership: d.last_membership,
            objects: d.objects,
            revision: d.revision,
            config_seq: d.config_seq,
            config: ClassLog::from_data(d.dedup, d.events, d.revision),
            agent: ClassLog::from_data(d.agent_dedup, d.agent_events, d.revision),
            retired_ids: d.retired_ids,
            events_tx: broadcast::channel(WATCH_CHANNEL_CAPACITY).0,
            last_batch: None,
        }
    }

    fn class(&self, class: WriteClass) -> &ClassLog {
        match class {
            WriteClass::Config => &self.config,
            WriteClass::Agent => &self.agent,
        }
    }

    fn class_mut(&mut self, class: WriteClass) -> &mut ClassLog {
        match class {
            WriteClass::Config => &mut self.config,
            WriteClass::Agent => &mut self.agent,
        }
    }

    /// Every event of both classes after this is retained.
    fn floor(&self) -> u64 {
        self.config.floor().max(self.agent.floor())
    }

    fn to_data(&self) -> StateData {
        StateData {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            objects: self.objects.clone(),
            revision: self.revision,
            config_seq: self.config_seq,
            dedup: self.config.dedup_data(),
            events: self.config.events_data(),
            retired_ids: self.retired_ids.clone(),
            agent_dedup: self.agent.dedup_data(),
            agent_events: self.agent.events_data(),
        }
    }

    fn apply_entry(&mut self, entry: Entry) -> Response {
        self.last_applied = Some(entry.log_id);
        let index = entry.log_id.index;
        let mut events = Vec::new();
        let mut class = WriteClass::Config;
        let outcomes = match entry.payload {
            EntryPayload::Blank | EntryPayload::Normal(Request::Noop) => Vec::new(),
            EntryPayload::Membership(m) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                Vec::new()
            }
            EntryPayload::Normal(Request::RetireNode { node_id }) => {
                if !self.retired_ids.contains(&node_id) {
                    self.retired_ids.push(node_id);
                }
                Vec::new()
            }
            EntryPayload::Normal(Request::Batch(batch)) => {
                class = batch.class();
                self.apply_batch(None, batch, &mut events)
            }
            EntryPayload::Normal(Request::IndexedBatch(batch)) => {
                class = batch.class();
                // As versions 1 and 2 applied it (there the index was
                // always above the revision); the max keeps revisions
                // monotonic should an old leader append after a new one.
                let shared = index.max(self.revision + 1);
                self.apply_batch(Some(shared), batch, &mut events)
            }
        };
        if !events.is_empty() {
            self.class_mut(class).record(&events);
            // No receiver is not an error: nobody watches.
            let _ = self.events_tx.send(Arc::new(events));
        }
        Response {
            outcomes,
            revision: self.revision,
        }
    }

    /// Applies a batch's transactions in order, each checked against the
    /// state the ones before it left. Each transaction that changes an
    /// object takes the next revision, or all take `shared` (an
    /// [`Request::IndexedBatch`] of an old log).
    fn apply_batch(
        &mut self,
        shared: Option<u64>,
        batch: Batch,
        events: &mut Vec<Event>,
    ) -> Vec<TxnOutcome> {
        // 0: a batch of a log written before batches carried a time.
        if batch.proposed_at_ms > 0 {
            self.last_batch = Some((batch.proposed_at_ms, Instant::now()));
        }
        if batch.base_config_seq.is_some_and(|s| s != self.config_seq) {
            return batch.txns.iter().map(|_| TxnOutcome::Retry).collect();
        }
        let class = batch.class();
        let mut changed = false;
        let mut outcomes = Vec::with_capacity(batch.txns.len());
        for txn in batch.txns {
            if let Some(first) = self.class(class).outcome(&txn.request_id) {
                outcomes.push(match first {
                    TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision } => {
                        TxnOutcome::Duplicate {
                            revision: *revision,
                        }
                    }
                    other => other.clone(),
                });
                continue;
            }
            let outcome = match self.check(&txn.ops) {
                Some(conflict) => TxnOutcome::Conflict(conflict),
                None => {
                    let revision = shared.unwrap_or(self.revision + 1);
                    if self.apply_ops(revision, batch.proposed_at_ms, txn.ops, events) {
                        self.revision = revision;
                        changed = true;
                    }
                    TxnOutcome::Committed {
                        revision: shared.unwrap_or(self.revision),
                    }
                }
            };
            // An empty request id opts out of de-duplication: such a write
            // may be applied twice if the client retries it.
            if !txn.request_id.is_empty() {
                self.class_mut(class).remember(
                    txn.request_id,
                    outcome.clone(),
                    batch.proposed_at_ms,
                );
            }
            outcomes.push(outcome);
        }
        // Only the validated config lane guards on config_seq; the
        // endpoint lane (agents) must not make config batches retry.
        if changed && batch.base_config_seq.is_some() {
            self.config_seq += 1;
        }
        outcomes
    }

    /// The first failed precondition, checked against the state before the
    /// transaction (after the batch's earlier ones).
    fn check(&self, ops: &[TxnOp]) -> Option<Conflict> {
        ops.iter().find_map(|op| {
            let expected = op.expected_revision()?;
            let current = self.objects.get(op.key());
            let actual = current.map_or(0, |o| o.revision);
            (actual != expected).then(|| Conflict {
                key: op.key().clone(),
                expected_revision: expected,
                actual_revision: actual,
                actual_updated_at_ms: current.map(|o| o.updated_at_ms),
            })
        })
    }

    /// Applies the ops; returns whether any object changed.
    fn apply_ops(
        &mut self,
        revision: u64,
        at_ms: u64,
        ops: Vec<TxnOp>,
        events: &mut Vec<Event>,
    ) -> bool {
        let mut changed = false;
        for op in ops {
            match op {
                TxnOp::Put { key, value, .. } => {
                    let prev = self.objects.get(&key);
                    let created_revision = prev.map_or(revision, |o| o.created_revision);
                    let prev_value = prev.map(|o| o.value.clone());
                    let obj = StoredObject {
                        value: value.clone(),
                        revision,
                        created_revision,
                        updated_at_ms: at_ms,
                    };
                    self.objects.insert(key.clone(), obj);
                    events.push(Event {
                        key,
                        revision,
                        updated_at_ms: at_ms,
                        value: Some(value),
                        prev_value,
                    });
                    changed = true;
                }
                TxnOp::Check { .. } => {}
                TxnOp::Delete { key, .. } => {
                    if let Some(prev) = self.objects.remove(&key) {
                        events.push(Event {
                            key,
                            revision,
                            updated_at_ms: at_ms,
                            value: None,
                            prev_value: Some(prev.value),
                        });
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

impl StateMachineStore {
    /// Opens the state machine whose snapshots live in `snapshot_dir`,
    /// restoring the latest snapshot if there is one; openraft re-applies the
    /// log after it.
    pub async fn open(snapshot_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        let _ = std::fs::remove_file(snapshot_dir.join(SNAPSHOT_TMP));
        let (meta, data) = match std::fs::read(snapshot_dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let (meta, data) = codec::decode_snapshot(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("snapshot {SNAPSHOT_FILE}: {e}"),
                    )
                })?;
                (Some(meta), data)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, StateData::default()),
            Err(e) => return Err(e),
        };
        let applied = data.last_applied.map_or(0, |l| l.index);
        Ok(StateMachineStore {
            inner: Arc::new(Inner {
                machine: Mutex::new(Machine::from_data(data)),
                applied_tx: watch::channel(applied).0,
                snapshot_dir: snapshot_dir.to_path_buf(),
                snapshot: tokio::sync::Mutex::new(meta),
                snapshot_counter: AtomicU64::new(0),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // Apply never panics half-way on valid input; a poisoned lock still
        // holds a consistent state.
        self.inner.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The proposer's (the leader's) time of the last batch this replica
    /// applied, and when it applied it on its monotonic clock, if it applied
    /// one since it started.
    pub fn last_batch(&self) -> Option<(u64, Instant)> {
        self.lock().last_batch
    }

    pub fn get(&self, key: &ObjectKey) -> Option<StoredObject> {
        self.lock().objects.get(key).cloned()
    }

    /// One object (as [`StateMachineStore::get`]) and the revision the
    /// store is at, read together.
    pub fn get_at(&self, key: &ObjectKey) -> (Option<StoredObject>, u64) {
        let m = self.lock();
        (m.objects.get(key).cloned(), m.revision)
    }

    /// Every object, or every object of one kind, in key order.
    pub fn list(&self, kind: Option<&str>) -> Vec<(ObjectKey, StoredObject)> {
        self.list_at(kind).0
    }

    /// Objects (as [`StateMachineStore::list`]) and the revision they are at,
    /// read together.
    pub fn list_at(&self, kind: Option<&str>) -> (Vec<(ObjectKey, StoredObject)>, u64) {
        let m = self.lock();
        let objects = match kind {
            None => m
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some(kind) => m
                .objects
                .range(ObjectKey::new(kind, "")..)
                .take_while(|(k, _)| k.kind == kind)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        (objects, m.revision)
    }

    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    pub fn config_seq(&self) -> u64 {
        self.lock().config_seq
    }

    /// The recorded outcome of an applied request id of `class`, if it is
    /// still in that class's de-duplication table.
    pub fn dedup_outcome(&self, class: WriteClass, request_id: &str) -> Option<TxnOutcome> {
        self.lock().class(class).outcome(request_id).cloned()
    }

    pub fn retired_ids(&self) -> Vec<NodeId> {
        self.lock().retired_ids.clone()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.lock().last_applied
    }

    /// A copy of the whole state (clones every object).
    pub fn state_clone(&self) -> StateData {
        self.lock().to_data()
    }

    /// The retained events with `revision > from_revision`, and a receiver of
    /// the events of every entry applied afterwards, with no gap and no
    /// duplicate between the two.
    pub fn subscribe_from(
        &self,
        from_revision: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<EventBatch>), WatchError> {
        self.subscribe_at(from_revision)
            .map(|(events, rx, _)| (events, rx))
    }

    /// As [`StateMachineStore::subscribe_from`], with the revision the
    /// store was at when the receiver was taken: the retained events reach
    /// exactly up to it, and the receiver's first event is after it.
    pub fn subscribe_at(
        &self,
        from_revision: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<EventBatch>, u64), WatchError> {
        let m = self.lock();
        let floor = m.floor();
        if from_revision < floor {
            return Err(WatchError::Compacted {
                oldest_available: floor,
            });
        }
        let events = merged_after(&m.config, &m.agent, from_revision);
        Ok((events, m.events_tx.subscribe(), m.revision))
    }

    /// The objects changed after `from_revision`, each with its current value
    /// (`None`: deleted), the current revision, and the commit time of that
    /// revision (0 if no retained event has it). Lets a reader that built
    /// state at `from_revision` catch up in O(changes) rather than re-reading
    /// everything; `Err` with the oldest retained revision when the history
    /// no longer reaches back that far.
    pub fn changes_since(
        &self,
        from_revision: u64,
    ) -> Result<(Vec<(ObjectKey, Option<StoredObject>)>, u64, u64), WatchError> {
        let m = self.lock();
        let floor = m.floor();
        if from_revision < floor {
            return Err(WatchError::Compacted {
                oldest_available: floor,
            });
        }
        let mut keys = std::collections::BTreeSet::new();
        let mut committed_at_ms = 0;
        let recent = [&m.config, &m.agent].into_iter().flat_map(|c| {
            c.events()
                .iter()
                .rev()
                .take_while(|e| e.revision > from_revision)
        });
        for e in recent {
            if e.revision == m.revision {
                committed_at_ms = committed_at_ms.max(e.updated_at_ms);
            }
            keys.insert(&e.key);
        }
        let changes = keys
            .into_iter()
            .map(|k| (k.clone(), m.objects.get(k).cloned()))
            .collect();
        Ok((changes, m.revision, committed_at_ms))
    }

    /// The retained events of `class` (`None`: of both), of one object or
    /// all, oldest first, with the revision every later such event is
    /// retained after (0: nothing compacted) and the current revision, read
    /// together. The config's own history is not shortened by agents'
    /// traffic.
    pub fn history(
        &self,
        class: Option<WriteClass>,
        key: Option<&ObjectKey>,
    ) -> (Vec<Event>, u64, u64) {
        let m = self.lock();
        let (events, floor) = match class {
            Some(c) => {
                let c = m.class(c);
                (c.events().iter().cloned().collect(), c.floor())
            }
            None => (merged_after(&m.config, &m.agent, 0), m.floor()),
        };
        let events = events
            .into_iter()
            .filter(|e| key.is_none_or(|k| &e.key == k))
            .collect();
        (events, floor, m.revision)
    }

    /// The index of the last applied log entry; wait on it for `applied >= x`.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.inner.snapshot_dir.join(SNAPSHOT_FILE)
    }

    /// Writes `bytes` as the current snapshot unless a newer one is already
    /// there; the caller holds the snapshot lock.
    async fn persist_snapshot(
        &self,
        current: &mut Option<SnapshotMeta>,
        meta: &SnapshotMeta,
        bytes: Arc<Vec<u8>>,
    ) -> io::Result<bool> {
        if current
            .as_ref()
            .is_some_and(|c| c.last_log_id > meta.last_log_id)
        {
            return Ok(false);
        }
        let dir = self.inner.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || write_file_durably(&dir, &bytes))
            .await
            .map_err(io::Error::other)??;
        *current = Some(meta.clone());
        Ok(true)
    }
}

/// Write tmp, fsync, rename over the current file, fsync the directory: after
/// a crash the current file is either the old snapshot or the new one, whole.
fn write_file_durably(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Copy under the lock; encode and write without it.
        let data = self.lock().to_data();
        let counter = self.inner.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, counter),
            None => format!("none-0-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership.clone(),
            snapshot_id,
        };
        let m2 = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || codec::encode_snapshot(&m2, &data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let bytes = Arc::new(bytes);
        let mut current = self.inner.snapshot.lock().await;
        self.persist_snapshot(&mut current, &meta, bytes.clone())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        drop(current);
        tracing::info!(snapshot_id = %meta.snapshot_id, size = bytes.len(), "built snapshot");
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|a| (*a).clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let m = self.lock();
        Ok((m.last_applied, m.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (responses, applied) = {
            let mut m = self.lock();
            let responses: Vec<Response> = entries.into_iter().map(|e| m.apply_entry(e)).collect();
            (responses, m.last_applied.map_or(0, |l| l.index))
        };
        self.inner.applied_tx.send_replace(applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let err = |e: &dyn std::error::Error| {
            StorageIOError::read_snapshot(Some(meta.signature()), openraft::AnyError::error(e))
        };
        let bytes = snapshot.into_inner();
        let (decoded_meta, data) = codec::decode_snapshot(&bytes).map_err(|e| err(&e))?;
        if decoded_meta.last_log_id != meta.last_log_id || data.last_applied != meta.last_log_id {
            let msg = format!(
                "snapshot data is at {:?}, its meta says {:?}",
                data.last_applied, meta.last_log_id
            );
            return Err(err(&io::Error::new(io::ErrorKind::InvalidData, msg)).into());
        }
        let bytes = if decoded_meta == *meta {
            bytes
        } else {
            codec::encode_snapshot(meta, &data).map_err(|e| err(&e))?
        };
        let mut current = self.inner.snapshot.lock().await;
        self.persist_snapshot(&mut current, meta, Arc::new(bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let applied = data.last_applied.map_or(0, |l| l.index);
        {
            let mut m = self.lock();
            // Replacing the machine drops the old broadcast sender: every
            // watcher's receiver ends and it subscribes again.
            *m = Machine::from_data(data);
        }
        drop(current);
        self.inner.applied_tx.send_replace(applied);
        tracing::info!(snapshot_id = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.inner.snapshot.lock().await;
        let Some(meta) = current.clone() else {
            return Ok(None);
        };
        let bytes = tokio::fs::read(self.snapshot_path())
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests;
