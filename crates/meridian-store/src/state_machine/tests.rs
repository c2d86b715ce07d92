// This file is long because it is one table of apply rules, each a short
// test over the same helpers; splitting it would scatter the helpers.
use std::collections::BTreeSet;

use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{EntryPayload, Membership, RaftSnapshotBuilder};
use tempfile::TempDir;
use tokio::sync::broadcast::error::RecvError;

use super::*;
use crate::limits::{DEDUP_CAPACITY, DEDUP_MIN_AGE_MS, EVENT_HISTORY};

mod classes;
mod revisions;

async fn fresh() -> (TempDir, StateMachineStore) {
    let dir = tempfile::tempdir().unwrap();
    let sm = StateMachineStore::open(&dir.path().join("snapshots"))
        .await
        .unwrap();
    (dir, sm)
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("cluster", name)
}

fn put(name: &str, value: &str, expected: Option<u64>) -> TxnOp {
    TxnOp::Put {
        key: key(name),
        value: value.as_bytes().to_vec(),
        expected_revision: expected,
    }
}

fn del(name: &str, expected: Option<u64>) -> TxnOp {
    TxnOp::Delete {
        key: key(name),
        expected_revision: expected,
    }
}

fn txn(id: &str, ops: Vec<TxnOp>) -> Txn {
    Txn {
        request_id: id.to_string(),
        ops,
    }
}

fn batch(base: Option<u64>, txns: Vec<Txn>) -> Request {
    Request::Batch(Batch {
        base_config_seq: base,
        proposed_at_ms: 1000,
        txns,
    })
}

fn entry(index: u64, req: Request) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(req),
    }
}

/// Applies one request at `index` and returns its response.
async fn must_apply(sm: &mut StateMachineStore, index: u64, req: Request) -> Response {
    let mut r = sm.apply([entry(index, req)]).await.unwrap();
    assert_eq!(r.len(), 1);
    r.remove(0)
}

#[tokio::test]
async fn put_update_delete_track_revisions() {
    let (_d, mut sm) = fresh().await;
    let r = must_apply(
        &mut sm,
        1,
        batch(Some(0), vec![txn("a", vec![put("web", "v1", Some(0))])]),
    )
    .await;
    assert_eq!(
        r,
        Response {
            outcomes: vec![TxnOutcome::Committed { revision: 1 }],
            revision: 1
        }
    );
    let r = must_apply(&mut sm, 2, Request::Noop).await;
    assert_eq!(
        r,
        Response {
            outcomes: vec![],
            revision: 1
        }
    );
    let r = must_apply(
        &mut sm,
        3,
        batch(Some(1), vec![txn("b", vec![put("web", "v2", Some(1))])]),
    )
    .await;
    // The next revision, whatever the log index.
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 2 }]);
    assert_eq!(
        sm.get(&key("web")),
        Some(StoredObject {
            value: b"v2".to_vec(),
            revision: 2,
            created_revision: 1,
            updated_at_ms: 1000
        })
    );
    assert_eq!((sm.revision(), sm.config_seq()), (2, 2));

    // Deleting an absent object succeeds and changes nothing: it is
    // answered the revision it was checked against.
    let r = must_apply(
        &mut sm,
        4,
        batch(None, vec![txn("c", vec![del("nope", None)])]),
    )
    .await;
    assert_eq!(
        r,
        Response {
            outcomes: vec![TxnOutcome::Committed { revision: 2 }],
            revision: 2
        }
    );
    assert_eq!((sm.revision(), sm.config_seq()), (2, 2));

    let r = must_apply(
        &mut sm,
        5,
        batch(None, vec![txn("d", vec![del("web", Some(2))])]),
    )
    .await;
    assert_eq!(r.revision, 3);
    assert_eq!(sm.get(&key("web")), None);
    assert_eq!(*sm.applied_watch().borrow(), 5);
}

#[tokio::test]
async fn failed_precondition_names_the_key_and_changes_nothing() {
    let (_d, mut sm) = fresh().await;
    must_apply(
        &mut sm,
        1,
        batch(None, vec![txn("a", vec![put("web", "v1", None)])]),
    )
    .await;
    let before = sm.state_clone();

    let r = must_apply(
        &mut sm,
        2,
        batch(
            None,
            vec![txn(
                "b",
                vec![put("other", "x", Some(0)), put("web", "v2", Some(0))],
            )],
        ),
    )
    .await;
    let expected = Conflict {
        key: key("web"),
        expected_revision: 0,
        actual_revision: 1,
        actual_updated_at_ms: Some(1000),
    };
    assert_eq!(r.outcomes, vec![TxnOutcome::Conflict(expected)]);
    assert_eq!(
        sm.get(&key("other")),
        None,
        "a conflicting transaction applies nothing"
    );

    let r = must_apply(
        &mut sm,
        3,
        batch(None, vec![txn("c", vec![del("absent", Some(7))])]),
    )
    .await;
    let expected = Conflict {
        key: key("absent"),
        expected_revision: 7,
        actual_revision: 0,
        actual_updated_at_ms: None,
    };
    assert_eq!(r.outcomes, vec![TxnOutcome::Conflict(expected)]);
    let after = sm.state_clone();
    assert_eq!(
        (after.objects, after.revision, after.config_seq),
        (before.objects, before.revision, before.config_seq)
    );
}

#[tokio::test]
async fn later_transactions_see_earlier_ones_of_the_same_batch() {
    let (_d, mut sm) = fresh().await;
    let r = must_apply(
        &mut sm,
        7,
        batch(
            Some(0),
            vec![
                txn("a", vec![put("web", "v1", Some(0))]),
                txn("b", vec![put("web", "v2", Some(0))]),
                txn("c", vec![put("web", "v3", Some(1))]),
            ],
        ),
    )
    .await;
    assert_eq!(r.outcomes[0], TxnOutcome::Committed { revision: 1 });
    assert!(matches!(&r.outcomes[1], TxnOutcome::Conflict(c) if c.actual_revision == 1));
    assert_eq!(r.outcomes[2], TxnOutcome::Committed { revision: 2 });
    assert_eq!(sm.get(&key("web")).unwrap().value, b"v3");
    assert_eq!(
        (sm.revision(), sm.config_seq()),
        (2, 1),
        "one batch bumps config_seq once"
    );
}

#[tokio::test]
async fn retried_request_ids_are_answered_from_the_dedup_table() {
    let (_d, mut sm) = fresh().await;
    must_apply(
        &mut sm,
        1,
        batch(None, vec![txn("w1", vec![put("web", "v1", None)])]),
    )
    .await;
    must_apply(
        &mut sm,
        2,
        batch(None, vec![txn("w2", vec![put("api", "x", Some(5))])]),
    )
    .await;
    let first_conflict = sm.state_clone().agent_dedup[1].outcome.clone();

    let r = must_apply(
        &mut sm,
        3,
        batch(
            None,
            vec![
                txn("w1", vec![put("web", "SHOULD-NOT-APPLY", None)]),
                txn("w2", vec![put("api", "x", None)]),
            ],
        ),
    )
    .await;
    assert_eq!(
        r.outcomes,
        vec![TxnOutcome::Duplicate { revision: 1 }, first_conflict]
    );
    assert_eq!(sm.get(&key("web")).unwrap().value, b"v1");
    assert_eq!(sm.get(&key("api")), None);
    assert_eq!(r.revision, 1);

    // An empty request id is never de-duplicated.
    for (index, revision) in [(4, 2), (5, 3)] {
        let r = must_apply(
            &mut sm,
            index,
            batch(None, vec![txn("", vec![put("web", "again", None)])]),
        )
        .await;
        assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision }]);
    }
}

#[tokio::test]
async fn stale_base_config_seq_retries_everything() {
    let (_d, mut sm) = fresh().await;
    must_apply(
        &mut sm,
        1,
        batch(Some(0), vec![txn("a", vec![put("web", "v1", None)])]),
    )
    .await;
    let before = sm.state_clone();
    let r = must_apply(
        &mut sm,
        2,
        batch(
            Some(0),
            vec![txn("b", vec![put("api", "x", None)]), txn("a", vec![])],
        ),
    )
    .await;
    assert_eq!(
        r,
        Response {
            outcomes: vec![TxnOutcome::Retry, TxnOutcome::Retry],
            revision: 1
        }
    );
    let after = sm.state_clone();
    assert_eq!(
        (&after.objects, &after.dedup, after.config_seq),
        (&before.objects, &before.dedup, 1)
    );
    // The retried id was not consumed.
    let r = must_apply(
        &mut sm,
        3,
        batch(Some(1), vec![txn("b", vec![put("api", "x", None)])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 2 }]);
}

#[tokio::test]
async fn membership_and_retired_nodes() {
    let (_d, mut sm) = fresh().await;
    let members = Membership::new(vec![BTreeSet::from([1u64, 2])], None);
    let e = Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Membership(members.clone()),
    };
    sm.apply([
        e,
        entry(2, Request::RetireNode { node_id: 3 }),
        entry(3, Request::RetireNode { node_id: 3 }),
    ])
    .await
    .unwrap();
    let (applied, m) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(m, StoredMembership::new(Some(log_id(1, 1, 1)), members));
    assert_eq!(sm.retired_ids(), vec![3]);
}

#[tokio::test]
async fn events_and_watch() {
    let (_d, mut sm) = fresh().await;
    must_apply(
        &mut sm,
        1,
        batch(
            None,
            vec![txn(
                "a",
                vec![put("web", "v1", None), put("api", "a1", None)],
            )],
        ),
    )
    .await;
    let (events, mut rx) = sm.subscribe_from(0).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.key.name.as_str(), e.revision))
            .collect::<Vec<_>>(),
        [("web", 1), ("api", 1)]
    );
    assert!(sm.subscribe_from(1).unwrap().0.is_empty());

    must_apply(&mut sm, 2, Request::Noop).await; // no events, no message
    must_apply(
        &mut sm,
        3,
        batch(
            None,
            vec![txn("b", vec![del("web", None), del("gone", None)])],
        ),
    )
    .await;
    let got = rx.recv().await.unwrap();
    assert_eq!(
        *got,
        vec![Event {
            key: key("web"),
            revision: 2,
            updated_at_ms: 1000,
            value: None,
            prev_value: Some(b"v1".to_vec())
        }]
    );
    assert!(rx.try_recv().is_err());
    let (list, rev) = sm.list_at(Some("cluster"));
    assert_eq!((list.len(), rev), (1, 2));
    assert!(sm.list(Some("other")).is_empty());
}

/// A watcher that subscribes while entries are being applied sees every
/// event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_has_no_gap_while_applies_race() {
    const N: u64 = 300;
    let (_d, sm) = fresh().await;
    let mut writer = sm.clone();
    let applier = tokio::spawn(async move {
        for i in 1..=N {
            let req = batch(
                None,
                vec![txn(
                    &format!("r{i}"),
                    vec![put(&format!("k{i}"), "v", None)],
                )],
            );
            writer.apply([entry(i, req)]).await.unwrap();
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Subscribe somewhere in the middle of the applies.
    let mut applied = sm.applied_watch();
    applied.wait_for(|a| *a >= N / 3).await.unwrap();
    let (mut seen, mut rx) = sm.subscribe_from(0).unwrap();
    while seen.last().map_or(0, |e| e.revision) < N {
        seen.extend(rx.recv().await.unwrap().iter().cloned());
    }
    applier.await.unwrap();
    let revisions: Vec<u64> = seen.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, (1..=N).collect::<Vec<_>>());
}

#[tokio::test]
async fn watch_from_a_dropped_revision_is_compacted() {
    let (_d, mut sm) = fresh().await;
    let per_entry = 1000;
    let puts = |index: u64, n: usize| {
        let ops = (0..n)
            .map(|j| put(&format!("k{index}-{j}"), "v", None))
            .collect();
        batch(None, vec![txn("", ops)])
    };
    assert!(sm.subscribe_from(0).is_ok(), "nothing dropped yet");
    let entries = (1..=11).map(|i| entry(i, puts(i, per_entry)));
    sm.apply(entries).await.unwrap();
    // 11 000 events: all of revision 1 were dropped.
    assert_eq!(
        sm.subscribe_from(0).unwrap_err(),
        WatchError::Compacted {
            oldest_available: 1
        }
    );
    assert_eq!(sm.subscribe_from(1).unwrap().0.len(), EVENT_HISTORY);

    // Half of revision 2 goes: watching from 1 would miss some of it.
    must_apply(&mut sm, 12, puts(12, 500)).await;
    assert_eq!(
        sm.subscribe_from(1).unwrap_err(),
        WatchError::Compacted {
            oldest_available: 2
        }
    );
    assert_eq!(sm.subscribe_from(2).unwrap().0.len(), 9 * per_entry + 500);
    assert_eq!(
        WatchError::Compacted {
            oldest_available: 2
        }
        .to_string(),
        "watch history compacted: the oldest revision that can be watched from is 2; list again"
    );
}

#[tokio::test]
async fn dedup_table_is_bounded() {
    let (_d, mut sm) = fresh().await;
    let ids = |range: std::ops::Range<usize>| -> Vec<Txn> {
        range.map(|i| txn(&format!("r{i}"), vec![])).collect()
    };
    must_apply(&mut sm, 1, batch(None, ids(0..10))).await;
    // Once the first ten are old enough, the count bounds the table.
    let later = Request::Batch(Batch {
        base_config_seq: None,
        proposed_at_ms: 1000 + DEDUP_MIN_AGE_MS,
        txns: ids(10..DEDUP_CAPACITY + 10),
    });
    must_apply(&mut sm, 2, later).await;
    let state = sm.state_clone();
    assert_eq!(state.agent_dedup.len(), DEDUP_CAPACITY);
    assert_eq!(state.agent_dedup[0].request_id, "r10");
    // The forgotten id applies again; a remembered one is a duplicate.
    // (Empty transactions change nothing: revision 0 throughout.)
    let r = must_apply(
        &mut sm,
        3,
        batch(None, vec![txn("r10", vec![]), txn("r0", vec![])]),
    )
    .await;
    assert_eq!(
        r.outcomes,
        vec![
            TxnOutcome::Duplicate { revision: 0 },
            TxnOutcome::Committed { revision: 0 }
        ]
    );
}

/// A snapshot built on one replica and installed on a fresh one gives the
/// same state, and closes the fresh replica's watchers.
#[tokio::test]
async fn snapshot_transfer_gives_equal_state() {
    let (_d1, mut leader) = fresh().await;
    must_apply(
        &mut leader,
        1,
        batch(
            None,
            vec![txn(
                "a",
                vec![put("web", "v1", None), put("api", "a", None)],
            )],
        ),
    )
    .await;
    must_apply(
        &mut leader,
        2,
        batch(None, vec![txn("b", vec![del("api", None)])]),
    )
    .await;
    must_apply(&mut leader, 3, Request::RetireNode { node_id: 9 }).await;
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(
        leader.get_current_snapshot().await.unwrap().unwrap().meta,
        snap.meta
    );

    let (d2, mut follower) = fresh().await;
    let (_, mut rx) = follower.subscribe_from(0).unwrap();
    let mut buf = follower.begin_receiving_snapshot().await.unwrap();
    *buf = *snap.snapshot;
    follower.install_snapshot(&snap.meta, buf).await.unwrap();

    assert_eq!(follower.state_clone(), leader.state_clone());
    assert_eq!(*follower.applied_watch().borrow(), 3);
    assert!(matches!(rx.recv().await, Err(RecvError::Closed)));
    // The dedup index was rebuilt.
    let r = must_apply(&mut follower, 4, batch(None, vec![txn("a", vec![])])).await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Duplicate { revision: 1 }]);

    // Only the latest snapshot is kept, and it is what a restart reads.
    let files: Vec<_> = std::fs::read_dir(d2.path().join("snapshots"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let reopened = StateMachineStore::open(&d2.path().join("snapshots"))
        .await
        .unwrap();
    assert_eq!(reopened.state_clone(), leader.state_clone());
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused() {
    let (_d, mut sm) = fresh().await;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 1, 3)),
        ..Default::default()
    };
    let mut buf = sm.begin_receiving_snapshot().await.unwrap();
    buf.get_mut().extend_from_slice(b"MRDNSNAP\x07garbage");
    let err = sm.install_snapshot(&meta, buf).await.unwrap_err();
    assert!(
        err.to_string().contains("unsupported format version 7"),
        "{err}"
    );
    assert_eq!(sm.state_clone(), StateData::default());
}

#[tokio::test]
async fn endpoint_lane_batches_do_not_move_the_config_guard() {
    let (_d, mut sm) = fresh().await;
    let r = must_apply(
        &mut sm,
        1,
        batch(None, vec![txn("e1", vec![put("eps", "v1", None)])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 1 }]);
    assert_eq!((sm.revision(), sm.config_seq()), (1, 0));
    // A config batch validated before the endpoint write still applies.
    let r = must_apply(
        &mut sm,
        2,
        batch(Some(0), vec![txn("c1", vec![put("web", "v1", None)])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 2 }]);
    assert_eq!((sm.revision(), sm.config_seq()), (2, 1));
}

#[tokio::test]
async fn changes_since_lists_each_changed_key_once_with_its_current_value() {
    let (_d, mut sm) = fresh().await;
    must_apply(
        &mut sm,
        1,
        batch(
            None,
            vec![txn("", vec![put("a", "1", None), put("b", "1", None)])],
        ),
    )
    .await;
    must_apply(
        &mut sm,
        2,
        batch(None, vec![txn("", vec![put("a", "2", None)])]),
    )
    .await;
    must_apply(
        &mut sm,
        3,
        batch(
            None,
            vec![txn(
                "",
                vec![put("a", "3", None), del("b", None), put("c", "1", None)],
            )],
        ),
    )
    .await;
    let (changes, revision, committed_at_ms) = sm.changes_since(1).unwrap();
    assert_eq!((revision, committed_at_ms), (3, 1000));
    let got: Vec<(String, Option<Vec<u8>>)> = changes
        .into_iter()
        .map(|(k, o)| (k.name, o.map(|o| o.value)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), Some(b"3".to_vec())),
            ("b".to_string(), None),
            ("c".to_string(), Some(b"1".to_vec())),
        ]
    );
    assert!(sm.changes_since(3).unwrap().0.is_empty());
    // Once the history no longer reaches back, the reader must list again.
    let many = (0..EVENT_HISTORY + 1)
        .map(|j| put(&format!("k{j}"), "v", None))
        .collect();
    must_apply(&mut sm, 4, batch(None, vec![txn("", many)])).await;
    assert!(matches!(
        sm.changes_since(3),
        Err(WatchError::Compacted { .. })
    ));
}
