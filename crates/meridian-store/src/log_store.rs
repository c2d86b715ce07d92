//! openraft storage-v2 [`RaftLogStorage`] over a [`LogBackend`].
//!
//! Durability: a [`LogFlushed`] callback is called, and `save_vote` and
//! `truncate` return, only after a backend flush that started after the write
//! returned. Flushes run on one dedicated thread that takes every request
//! queued while the previous flush ran and covers them all with one flush
//! (group commit), completing them in the order they were queued.

// openraft's `StorageError` is the error type its storage traits dictate.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageError, StorageIOError};
use tokio::sync::oneshot;

use crate::backend::LogBackend;
use crate::codec;
use crate::types::{Entry, LogId, NodeId, TypeConfig, Vote};

const META_VOTE: &str = "vote";
const META_LAST_PURGED: &str = "last_purged";
const META_COMMITTED: &str = "committed";

/// The Raft log, vote and markers. Cheap to clone; clones share the backend
/// and the flusher thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct LogStore {
    backend: Arc<dyn LogBackend>,
    flusher: Arc<Flusher>,
}

impl LogStore {
    pub fn new(backend: Arc<dyn LogBackend>) -> io::Result<Self> {
        let flusher = Arc::new(Flusher::start(backend.clone())?);
        Ok(LogStore { backend, flusher })
    }

    /// Waits until every write made so far is durable.
    async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.flusher.submit(FlushJob::Notify(tx))?;
        rx.await
            .map_err(|_| io::Error::other("log flusher stopped"))?
    }

    fn read_log_id_meta(&self, key: &str) -> Result<Option<LogId>, StorageError<NodeId>> {
        match self
            .backend
            .read_meta(key)
            .map_err(|e| StorageIOError::read(&e))?
        {
            Some(bytes) => {
                codec::decode_log_id(&bytes).map_err(|e| StorageIOError::read(&e).into())
            }
            None => Ok(None),
        }
    }

    fn write_log_id_meta(&self, key: &str, id: &Option<LogId>) -> Result<(), StorageError<NodeId>> {
        let bytes = codec::encode_log_id(id).map_err(|e| StorageIOError::write(&e))?;
        self.backend
            .save_meta(key, &bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self
            .backend
            .get_range(start, end)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter()
            .map(|(_, bytes)| {
                codec::decode_entry(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.read_log_id_meta(META_LAST_PURGED)?;
        let last = match self
            .backend
            .last()
            .map_err(|e| StorageIOError::read_logs(&e))?
        {
            Some((_, bytes)) => Some(
                codec::decode_entry(&bytes)
                    .map_err(|e| StorageIOError::read_logs(&e))?
                    .log_id,
            ),
            None => None,
        };
        // Entries at or below the purge marker may survive a crash during
        // purge; they are not part of the log.
        let last_log_id = match (last, last_purged_log_id) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p),
            (Some(l), _) => Some(l),
            (None, p) => p,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let bytes = codec::encode_vote(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.backend
            .save_meta(META_VOTE, &bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        match self
            .backend
            .read_meta(META_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e))?
        {
            Some(bytes) => Ok(Some(
                codec::decode_vote(&bytes).map_err(|e| StorageIOError::read_vote(&e))?,
            )),
            None => Ok(None),
        }
    }

    /// Not flushed: openraft tolerates losing the committed marker (it is
    /// learned again from the leader); it only speeds up re-apply on restart.
    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_log_id_meta(META_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        self.read_log_id_meta(META_COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| {
                Ok((
                    e.log_id.index,
                    codec::encode_entry(&e).map_err(|e| StorageIOError::write_logs(&e))?,
                ))
            })
            .collect::<Result<Vec<_>, StorageError<NodeId>>>()?;
        self.backend
            .append(&encoded)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher
            .submit(FlushJob::Log(callback))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.backend
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    /// The marker is written before the entries are removed, so a crash in
    /// between leaves extra entries below the marker, never a hole.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.write_log_id_meta(META_LAST_PURGED, &Some(log_id))?;
        self.backend
            .purge_upto(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

enum FlushJob {
    Log(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

impl FlushJob {
    fn complete(self, result: &io::Result<()>) {
        let result = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            FlushJob::Log(cb) => cb.log_io_completed(result),
            FlushJob::Notify(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// The dedicated flusher thread. Dropping it closes the queue and joins the
/// thread, so the backend (and sled's directory lock) is released when the
/// last [`LogStore`] clone is dropped.
struct Flusher {
    tx: Mutex<Option<mpsc::Sender<FlushJob>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    fn start(backend: Arc<dyn LogBackend>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<FlushJob>();
        let thread = std::thread::Builder::new()
            .name("meridian-log-flush".into())
            .spawn(move || {
                // After a failed flush the kernel may have dropped the dirty
                // pages and cleared the error, so a later flush can succeed
                // without the earlier writes on disk ("fsyncgate"). The first
                // failure is therefore final: every later job fails with it,
                // nothing is acknowledged again, and the node must restart
                // (and recover from what is really on disk).
                let mut failed: Option<(io::ErrorKind, String)> = None;
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    let result = match &failed {
                        Some((kind, msg)) => Err(io::Error::new(
                            *kind,
                            format!("an earlier flush of the raft log failed: {msg}"),
                        )),
                        None => backend.flush(),
                    };
                    if let (Err(e), None) = (&result, &failed) {
                        tracing::error!(
                            error = %e,
                            "flushing the raft log failed (disk full or failing?); \
                             this node acknowledges no more writes: free space or fix the \
                             disk, then restart it"
                        );
                        failed = Some((e.kind(), e.to_string()));
                    }
                    for job in jobs {
                        job.complete(&result);
                    }
                }
            })?;
        Ok(Flusher {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn submit(&self, job: FlushJob) -> io::Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx
                .send(job)
                .map_err(|_| io::Error::other("log flusher stopped")),
            None => Err(io::Error::other("log flusher stopped")),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
