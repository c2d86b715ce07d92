//! Bounds on the replicated state that grows with traffic.

/// How many request ids the state machine remembers for de-duplication.
///
/// A client retries a write whose outcome it did not learn (timeout, leader
/// change) within seconds; 100 000 ids cover minutes of a busy cluster while
/// keeping the table (and every snapshot) to a few MiB.
pub const DEDUP_CAPACITY: usize = 100_000;

/// How many change events the state machine keeps for watchers.
///
/// A watcher that falls further behind than this (or starts from an older
/// revision) is told "compacted" and lists again; the bound keeps snapshots
/// small while letting a briefly disconnected watcher resume without a list.
pub const EVENT_HISTORY: usize = 10_000;

/// The largest transaction either lane proposes, in bytes as
/// [`crate::Txn::size_bytes`] counts them.
///
/// Far below the peer transport's 64 MiB message cap, so that a log entry
/// holding one such transaction, and an AppendEntries carrying it, always
/// fit.
pub const MAX_TXN_BYTES: usize = 8 * 1024 * 1024;
