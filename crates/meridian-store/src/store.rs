//! Opening a node's store from its data directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk_faults::{DiskFaults, FaultyBackend};
use crate::log_store::LogStore;
use crate::sled_backend::SledBackend;
use crate::state_machine::StateMachineStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the raft log in {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot open the state machine snapshots in {path}: {source}")]
    Snapshots { path: PathBuf, source: io::Error },
}

/// Opens (creating if needed) the store in a node's data directory: the Raft
/// log in `<dir>/raft` (sled, its flushes under `faults`) and snapshots in
/// `<dir>/snapshots`.
pub async fn open(
    dir: &Path,
    faults: DiskFaults,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    let raft_dir = dir.join("raft");
    let log = std::fs::create_dir_all(&raft_dir)
        .and_then(|()| SledBackend::open(&raft_dir))
        .and_then(|b| LogStore::new(Arc::new(FaultyBackend::new(b, faults))))
        .map_err(|source| StoreError::Log {
            path: raft_dir.clone(),
            source,
        })?;
    let snap_dir = dir.join("snapshots");
    let sm = StateMachineStore::open(&snap_dir)
        .await
        .map_err(|source| StoreError::Snapshots {
            path: snap_dir.clone(),
            source,
        })?;
    Ok((log, sm))
}

#[cfg(test)]
mod tests;
