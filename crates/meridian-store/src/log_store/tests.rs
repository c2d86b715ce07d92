use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{blank_ent, log_id};

use super::LogStore;
use crate::backend::LogBackend;
use crate::types::*;

/// An in-memory backend whose flush waits for a token, and which records
/// what was durable at the last flush.
struct GatedBackend {
    log: Mutex<BTreeMap<u64, Vec<u8>>>,
    meta: Mutex<HashMap<String, Vec<u8>>>,
    durable_log: Mutex<BTreeMap<u64, Vec<u8>>>,
    durable_meta: Mutex<HashMap<String, Vec<u8>>>,
    gate: Mutex<mpsc::Receiver<()>>,
    flushes: AtomicU64,
    /// The next flush fails (as on a full disk) without making anything durable.
    fail_next: AtomicBool,
}

impl GatedBackend {
    fn new() -> (Arc<Self>, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel();
        let b = GatedBackend {
            log: Mutex::default(),
            meta: Mutex::default(),
            durable_log: Mutex::default(),
            durable_meta: Mutex::default(),
            gate: Mutex::new(rx),
            flushes: AtomicU64::new(0),
            fail_next: AtomicBool::new(false),
        };
        (Arc::new(b), tx)
    }
}

impl LogBackend for GatedBackend {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.log.lock().unwrap().extend(entries.iter().cloned());
        Ok(())
    }
    fn get_range(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        Ok(self
            .log
            .lock()
            .unwrap()
            .range(start..end)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
    fn last(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .log
            .lock()
            .unwrap()
            .last_key_value()
            .map(|(k, v)| (*k, v.clone())))
    }
    fn truncate_from(&self, from: u64) -> io::Result<()> {
        self.log.lock().unwrap().retain(|k, _| *k < from);
        Ok(())
    }
    fn purge_upto(&self, upto: u64) -> io::Result<()> {
        self.log.lock().unwrap().retain(|k, _| *k > upto);
        Ok(())
    }
    fn save_meta(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.meta
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn read_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.meta.lock().unwrap().get(key).cloned())
    }
    fn flush(&self) -> io::Result<()> {
        let log = self.log.lock().unwrap().clone();
        let meta = self.meta.lock().unwrap().clone();
        self.gate
            .lock()
            .unwrap()
            .recv()
            .map_err(|_| io::Error::other("gate closed"))?;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ));
        }
        *self.durable_log.lock().unwrap() = log;
        *self.durable_meta.lock().unwrap() = meta;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The append callback, and save_vote, complete only after a flush that
/// covers the write.
#[tokio::test]
async fn acknowledged_only_after_flush() {
    let (backend, gate) = GatedBackend::new();
    let mut log = LogStore::new(backend.clone()).unwrap();

    let mut l = log.clone();
    let append =
        tokio::spawn(async move { l.blocking_append([blank_ent::<TypeConfig>(1, 1, 1)]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!append.is_finished(), "acknowledged before the flush");
    gate.send(()).unwrap();
    append.await.unwrap().unwrap();
    assert!(backend.durable_log.lock().unwrap().contains_key(&1));

    let mut l = log.clone();
    let vote = tokio::spawn(async move { l.save_vote(&Vote::new(1, 1)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!vote.is_finished(), "vote saved before the flush");
    gate.send(()).unwrap();
    vote.await.unwrap().unwrap();
    assert!(backend.durable_meta.lock().unwrap().contains_key("vote"));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
}

/// A failed flush is final: a later flush that succeeds does not make the
/// writes before the failure durable (the kernel may have dropped them), so
/// nothing after it is acknowledged either.
#[tokio::test]
async fn a_failed_flush_is_never_followed_by_an_acknowledgement() {
    let (backend, gate) = GatedBackend::new();
    let mut log = LogStore::new(backend.clone()).unwrap();

    backend.fail_next.store(true, Ordering::SeqCst);
    gate.send(()).unwrap();
    let err = log
        .blocking_append([blank_ent::<TypeConfig>(1, 1, 1)])
        .await
        .expect_err("a failed flush acknowledged");
    assert!(err.to_string().contains("No space left"), "{err}");

    for _ in 0..4 {
        gate.send(()).unwrap();
    }
    let err = log
        .blocking_append([blank_ent::<TypeConfig>(1, 1, 2)])
        .await
        .expect_err("acknowledged after a failed flush");
    assert!(err.to_string().contains("an earlier flush"), "{err}");
    let err = log
        .save_vote(&Vote::new(2, 1))
        .await
        .expect_err("vote acknowledged after a failed flush");
    assert!(err.to_string().contains("an earlier flush"), "{err}");
}

/// Requests queued while a flush runs are all covered by the next one.
#[tokio::test]
async fn concurrent_appends_share_flushes() {
    let (backend, gate) = GatedBackend::new();
    let log = LogStore::new(backend.clone()).unwrap();
    let mut tasks = Vec::new();
    for i in 1..=10 {
        let mut l = log.clone();
        tasks.push(tokio::spawn(async move {
            l.blocking_append([blank_ent::<TypeConfig>(1, 1, i)]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // The first flush takes whatever was queued when it started (one or all
    // ten); the second covers the rest.
    let flushes = backend.flushes.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&flushes),
        "{flushes} flushes for 10 appends"
    );
    assert_eq!(backend.durable_log.lock().unwrap().len(), 10);
}

#[tokio::test]
async fn log_state_ignores_entries_left_below_the_purge_marker() {
    let (backend, gate) = GatedBackend::new();
    let mut log = LogStore::new(backend.clone()).unwrap();
    gate.send(()).unwrap();
    log.blocking_append((1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)))
        .await
        .unwrap();
    // As if a crash hit between writing the marker and removing the entries.
    let marker = crate::codec::encode_log_id(&Some(log_id(1, 1, 5))).unwrap();
    backend.save_meta("last_purged", &marker).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 5)));
}
