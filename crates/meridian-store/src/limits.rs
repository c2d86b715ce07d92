//! Bounds on the replicated state that grows with traffic.
//!
//! Request ids and change events are kept per write class (config writes,
//! agents' writes; see [`crate::WriteClass`]), each under its own budget, so
//! endpoint churn never shortens the config's retry window or history.

/// How many request ids of one class the state machine remembers for
/// de-duplication, at least.
///
/// 100 000 ids keep the table (and every snapshot) to a few MiB.
pub const DEDUP_CAPACITY: usize = 100_000;

/// A request id is kept at least this long (by the leaders' clocks, which
/// travel in the commands) even past [`DEDUP_CAPACITY`]: the retry window of
/// a client is ten write timeouts of up to 6 s (the default is 5 s), however
/// busy the cluster.
pub const DEDUP_MIN_AGE_MS: u64 = 60_000;

/// Past this many ids of one class, the oldest go even if younger than
/// [`DEDUP_MIN_AGE_MS`]: the bound on memory and snapshot size.
pub const DEDUP_HARD_CAP: usize = 1_000_000;

/// How many change events of one class the state machine keeps for
/// watchers, `history` and `rollback`.
///
/// A watcher that falls further behind than this (or starts from an older
/// revision) is told "compacted" and lists again; the bound keeps snapshots
/// small while letting a briefly disconnected watcher resume without a list.
/// Config changes have their own 10 000, so `history` and `rollback` reach
/// back at least that many config changes whatever the endpoint churn.
pub const EVENT_HISTORY: usize = 10_000;

/// The largest transaction either lane proposes, in bytes as
/// [`crate::Txn::size_bytes`] counts them.
///
/// Far below the peer transport's 64 MiB message cap, so that a log entry
/// holding one such transaction, and an AppendEntries carrying it, always
/// fit.
pub const MAX_TXN_BYTES: usize = 8 * 1024 * 1024;
