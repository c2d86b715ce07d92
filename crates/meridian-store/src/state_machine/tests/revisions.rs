//! A revision per transaction: each transaction of a batch that changes an
//! object gets its own, and is checked against the state the batch's
//! earlier ones left; old logs' batches still apply at their index.

use super::*;

#[tokio::test]
async fn each_transaction_in_a_batch_gets_its_own_revision() {
    let (_d, mut sm) = fresh().await;
    let r = must_apply(
        &mut sm,
        5,
        batch(
            Some(0),
            vec![
                txn("a", vec![put("web", "v1", Some(0))]),
                txn("b", vec![put("api", "v1", None), put("db", "v1", None)]),
                // Changes nothing: answered the revision it saw.
                txn("c", vec![del("absent", None)]),
                txn("d", vec![put("web", "v2", Some(1))]),
            ],
        ),
    )
    .await;
    assert_eq!(
        r,
        Response {
            outcomes: vec![
                TxnOutcome::Committed { revision: 1 },
                TxnOutcome::Committed { revision: 2 },
                TxnOutcome::Committed { revision: 2 },
                TxnOutcome::Committed { revision: 3 },
            ],
            revision: 3
        }
    );
    let revision_of = |name: &str| sm.get(&key(name)).map(|o| o.revision);
    assert_eq!(revision_of("web"), Some(3));
    assert_eq!(sm.get(&key("web")).unwrap().created_revision, 1);
    assert_eq!((revision_of("api"), revision_of("db")), (Some(2), Some(2)));
    let (events, _) = sm.subscribe_from(0).unwrap();
    let seen: Vec<(&str, u64)> = events
        .iter()
        .map(|e| (e.key.name.as_str(), e.revision))
        .collect();
    assert_eq!(seen, [("web", 1), ("api", 2), ("db", 2), ("web", 3)]);
    assert_eq!(sm.subscribe_from(2).unwrap().0.len(), 1);

    // The next entry goes on from the counter, not from its log index, and
    // a client can compare-and-set on its own write's revision.
    let r = must_apply(
        &mut sm,
        9,
        batch(Some(1), vec![txn("e", vec![put("api", "v2", Some(2))])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 4 }]);
    // A retry is answered its own revision, not the batch's.
    let r = must_apply(
        &mut sm,
        10,
        batch(Some(2), vec![txn("b", vec![put("api", "v1", None)])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Duplicate { revision: 2 }]);
}

/// The agent's claim: a session puts the claim unconditionally and guards
/// every later write on the revision of its own put. Two sessions whose
/// claims land in one batch must not both hold the cluster.
#[tokio::test]
async fn two_claims_in_one_batch_resolve_to_the_newer_session() {
    let (_d, mut sm) = fresh().await;
    let claim = |session: &str| TxnOp::Put {
        key: ObjectKey::new("claim", "east-1"),
        value: session.as_bytes().to_vec(),
        expected_revision: None,
    };
    let r = must_apply(
        &mut sm,
        3,
        batch(
            None,
            vec![
                txn("agent-old-claim", vec![claim("old")]),
                txn("agent-new-claim", vec![claim("new")]),
            ],
        ),
    )
    .await;
    let revs: Vec<u64> = r
        .outcomes
        .iter()
        .map(|o| match o {
            TxnOutcome::Committed { revision } => *revision,
            other => panic!("{other:?}"),
        })
        .collect();
    let (old_rev, new_rev) = (revs[0], revs[1]);
    assert!(new_rev > old_rev, "{revs:?}");

    let guarded = |id: &str, claim_rev: u64| {
        txn(
            id,
            vec![
                TxnOp::Check {
                    key: ObjectKey::new("claim", "east-1"),
                    expected_revision: claim_rev,
                },
                TxnOp::Put {
                    key: ObjectKey::new("endpoints", "east-1.web"),
                    value: id.as_bytes().to_vec(),
                    expected_revision: None,
                },
            ],
        )
    };
    let r = must_apply(
        &mut sm,
        4,
        batch(
            None,
            vec![
                guarded("agent-old-full", old_rev),
                guarded("agent-new-full", new_rev),
            ],
        ),
    )
    .await;
    match &r.outcomes[0] {
        TxnOutcome::Conflict(c) => {
            assert_eq!(c.key, ObjectKey::new("claim", "east-1"));
            assert_eq!((c.expected_revision, c.actual_revision), (old_rev, new_rev));
        }
        other => panic!("the older session still holds the claim: {other:?}"),
    }
    assert!(matches!(r.outcomes[1], TxnOutcome::Committed { .. }));
    let claim = sm.get(&ObjectKey::new("claim", "east-1")).unwrap();
    assert_eq!(claim.value, b"new");
    let eps = sm.get(&ObjectKey::new("endpoints", "east-1.web")).unwrap();
    assert_eq!(eps.value, b"agent-new-full");
}

/// A log written by version 2 replays to the state it built: every
/// transaction of an old batch at the entry's index.
#[tokio::test]
async fn an_indexed_batch_of_an_old_log_applies_at_its_index() {
    let (_d, mut sm) = fresh().await;
    let old = |txns| {
        Request::IndexedBatch(Batch {
            base_config_seq: None,
            proposed_at_ms: 1000,
            txns,
        })
    };
    let r = must_apply(
        &mut sm,
        7,
        old(vec![
            txn("a", vec![put("web", "v1", None)]),
            txn("b", vec![put("api", "v1", None)]),
        ]),
    )
    .await;
    assert_eq!(
        r.outcomes,
        vec![
            TxnOutcome::Committed { revision: 7 },
            TxnOutcome::Committed { revision: 7 }
        ]
    );
    assert_eq!(sm.revision(), 7);
    // After the upgrade the counter goes on from there.
    let r = must_apply(
        &mut sm,
        8,
        batch(None, vec![txn("c", vec![put("web", "v2", Some(7))])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 8 }]);
    let r = must_apply(
        &mut sm,
        9,
        batch(None, vec![txn("d", vec![put("web", "v3", Some(8))])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 9 }]);
}

/// The counter travels in snapshots: a replica built from one goes on
/// where the leader's counter is, not from the log index.
#[tokio::test]
async fn revisions_go_on_after_a_snapshot() {
    let (_d, mut sm) = fresh().await;
    let many = (0..3)
        .map(|i| txn(&format!("r{i}"), vec![put(&format!("k{i}"), "v", None)]))
        .collect();
    must_apply(&mut sm, 1, batch(None, many)).await;
    assert_eq!(sm.revision(), 3);
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let (_d2, mut other) = fresh().await;
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let r = must_apply(
        &mut other,
        2,
        batch(None, vec![txn("x", vec![put("k9", "v", None)])]),
    )
    .await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 4 }]);
}
