use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder, StorageError, StorageIOError};
use tempfile::TempDir;

use super::open;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::types::*;

struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = open(dir.path(), Default::default())
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

/// openraft's own storage conformance suite, on the sled-backed store.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(FreshStore).unwrap();
}

fn put_entry(index: u64, name: &str) -> Entry {
    Entry {
        log_id: log_id(2, 1, index),
        payload: EntryPayload::Normal(Request::Batch(Batch {
            base_config_seq: None,
            proposed_at_ms: index * 10,
            txns: vec![Txn {
                request_id: format!("req-{index}"),
                ops: vec![TxnOp::Put {
                    key: ObjectKey::new("cluster", name),
                    value: name.as_bytes().to_vec(),
                    expected_revision: None,
                }],
            }],
        })),
    }
}

/// Whatever was acknowledged (append callback, save_vote) is there after the
/// store is dropped and opened again.
#[tokio::test]
async fn log_vote_and_markers_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<Entry> = (1..=6).map(|i| put_entry(i, &format!("c{i}"))).collect();
    {
        let (mut log, _sm) = open(dir.path(), Default::default()).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(2, 1, 4))).await.unwrap();
        log.purge(log_id(2, 1, 2)).await.unwrap();
        log.truncate(log_id(2, 1, 6)).await.unwrap();
    }
    let (mut log, _sm) = open(dir.path(), Default::default()).await.unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 1, 4)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 5)));
    let got = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(got, entries[2..5].to_vec());
}

/// The state machine comes back from its snapshot file; openraft re-applies
/// the log after it.
#[tokio::test]
async fn state_machine_restarts_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (_log, mut sm) = open(dir.path(), Default::default()).await.unwrap();
        sm.apply((1..=3).map(|i| put_entry(i, &format!("c{i}"))))
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.apply([put_entry(4, "not-in-snapshot")]).await.unwrap();
        sm.state_clone()
    };
    let (_log, mut sm) = open(dir.path(), Default::default()).await.unwrap();
    let restored = sm.state_clone();
    assert_eq!(restored.last_applied, Some(log_id(2, 1, 3)));
    assert_eq!(restored.objects.len(), 3);
    assert!(sm.get_current_snapshot().await.unwrap().is_some());
    sm.apply([put_entry(4, "not-in-snapshot")]).await.unwrap();
    assert_eq!(sm.state_clone(), before);
}
