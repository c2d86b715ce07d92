//! Meridian's own storage trait for the Raft log and its metadata.
//!
//! The Raft code ([`crate::log_store`]) sees only this trait, never sled, so
//! the backend can be replaced (sled is beta) without touching Raft logic.
//! Values are opaque bytes already encoded by [`crate::codec`].

use std::io;

/// Durable, ordered storage for log entries keyed by index, plus a few named
/// metadata values (vote, purge and commit markers).
///
/// Writes may be buffered: they are durable only once [`LogBackend::flush`]
/// has returned. A backend must apply writes in order, so that a crash keeps
/// a prefix of them (a later write never survives an earlier one).
pub trait LogBackend: Send + Sync + 'static {
    /// Stores entries (index, bytes), replacing any with the same index.
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()>;
    /// Entries with `start <= index < end`, in index order.
    fn get_range(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>>;
    /// The entry with the greatest index, if any.
    fn last(&self) -> io::Result<Option<(u64, Vec<u8>)>>;
    /// Removes every entry with `index >= from`, atomically.
    fn truncate_from(&self, from: u64) -> io::Result<()>;
    /// Removes every entry with `index <= upto`, atomically.
    fn purge_upto(&self, upto: u64) -> io::Result<()>;
    fn save_meta(&self, key: &str, value: &[u8]) -> io::Result<()>;
    fn read_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Blocks until every write made before the call is on stable storage.
    fn flush(&self) -> io::Result<()>;
}
