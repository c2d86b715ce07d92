//! Config writes and agents' writes have their own de-duplication and
//! history budgets: no amount of endpoint churn pushes the config's out.

use super::*;

const AGENT_WRITES: usize = DEDUP_CAPACITY + 10;

/// Applies `n` agents' writes from `index` on, each with its own request id
/// and one changed endpoint set; returns the next free index.
async fn churn_endpoints(sm: &mut StateMachineStore, mut index: u64, n: usize) -> u64 {
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(4096) {
        let txns = chunk
            .iter()
            .map(|i| {
                let op = TxnOp::Put {
                    key: ObjectKey::new("endpoints", "c1.web"),
                    value: i.to_string().into_bytes(),
                    expected_revision: None,
                };
                txn(&format!("agent-renew-{i}"), vec![op])
            })
            .collect();
        must_apply(sm, index, batch(None, txns)).await;
        index += 1;
    }
    index
}

#[tokio::test]
async fn a_config_retry_after_100k_agent_writes_is_still_deduplicated() {
    let (_d, mut sm) = fresh().await;
    let write = || batch(Some(0), vec![txn("cfg-1", vec![put("web", "v1", None)])]);
    let r = must_apply(&mut sm, 1, write()).await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Committed { revision: 1 }]);
    let next = churn_endpoints(&mut sm, 2, AGENT_WRITES).await;

    // The retry comes with the batch's base as the proposer saw it then.
    let retry = Request::Batch(Batch {
        base_config_seq: Some(1),
        proposed_at_ms: 1000,
        txns: vec![txn("cfg-1", vec![put("web", "SHOULD-NOT-APPLY", None)])],
    });
    let r = must_apply(&mut sm, next, retry).await;
    assert_eq!(r.outcomes, vec![TxnOutcome::Duplicate { revision: 1 }]);
    assert_eq!(sm.get(&key("web")).unwrap().value, b"v1");
    assert_eq!(
        sm.dedup_outcome(WriteClass::Config, "cfg-1"),
        Some(TxnOutcome::Committed { revision: 1 })
    );
}

#[tokio::test]
async fn config_history_reaches_back_past_100k_endpoint_changes() {
    let (_d, mut sm) = fresh().await;
    must_apply(
        &mut sm,
        1,
        batch(Some(0), vec![txn("c1", vec![put("web", "v1", None)])]),
    )
    .await;
    must_apply(
        &mut sm,
        2,
        batch(Some(1), vec![txn("c2", vec![put("web", "v2", None)])]),
    )
    .await;
    churn_endpoints(&mut sm, 3, AGENT_WRITES).await;

    // What rollback to revision 1 reads: the config's history after it.
    let (events, floor, revision) = sm.history(Some(WriteClass::Config), Some(&key("web")));
    assert!(floor <= 1, "config history compacted up to {floor}");
    assert!(revision > 2);
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, vec![1, 2]);
    assert_eq!(events[1].prev_value.as_deref(), Some(&b"v1"[..]));
    // Both classes together (watchers of everything) are bounded by the
    // agents' churn, as before.
    assert!(sm.history(None, None).1 > 2);
}

#[tokio::test]
async fn request_ids_younger_than_the_minimum_age_are_kept_past_the_count() {
    let (_d, mut sm) = fresh().await;
    must_apply(&mut sm, 1, batch(Some(0), vec![txn("early", vec![])])).await;
    // DEDUP_CAPACITY more ids within the minimum age: "early" stays.
    let txns = (0..DEDUP_CAPACITY)
        .map(|i| txn(&format!("r{i}"), vec![]))
        .collect();
    let within = Request::Batch(Batch {
        base_config_seq: Some(0),
        proposed_at_ms: 1000 + DEDUP_MIN_AGE_MS - 1,
        txns,
    });
    must_apply(&mut sm, 2, within).await;
    assert!(sm.dedup_outcome(WriteClass::Config, "early").is_some());
    // Once it is old enough and over the count, it goes.
    let after = Request::Batch(Batch {
        base_config_seq: Some(0),
        proposed_at_ms: 1000 + DEDUP_MIN_AGE_MS,
        txns: vec![txn("late", vec![])],
    });
    must_apply(&mut sm, 3, after).await;
    assert!(sm.dedup_outcome(WriteClass::Config, "early").is_none());
    assert!(
        sm.dedup_outcome(WriteClass::Config, "r0").is_some(),
        "r0 is still young"
    );
}
