use meridian_store::limits::MAX_TXN_BYTES;
use meridian_store::{ObjectKey, Txn, TxnOp};

use super::super::group_commit::{Admission, Pending};
use super::AgentKindsOnly;
use crate::error::ApiError;

fn put(kind: &str, name: &str, value: Vec<u8>) -> TxnOp {
    TxnOp::Put {
        key: ObjectKey::new(kind, name),
        value,
        expected_revision: None,
    }
}

fn claim_check() -> TxnOp {
    TxnOp::Check {
        key: ObjectKey::new("claim", "c1"),
        expected_revision: 3,
    }
}

/// The endpoint lane's verdict on `ops`: `None` if admitted, else the
/// error it was answered with.
fn verdict(ops: Vec<TxnOp>) -> Option<ApiError> {
    let (p, mut rx) = Pending::new(Txn {
        request_id: "agent-c1-s-1-update-1".into(),
        ops,
    });
    let admitted = AgentKindsOnly.admit(vec![p], &mut Vec::new());
    assert_eq!(admitted.base_config_seq, None);
    if admitted.accepted.len() == 1 {
        return None;
    }
    match rx.try_recv() {
        Ok(Err(e)) => Some(e),
        other => panic!("refused without an error: {other:?}"),
    }
}

#[test]
fn agents_own_kinds_are_admitted() {
    let ops = vec![
        claim_check(),
        put("endpoints", "c1.web", b"[]".to_vec()),
        put("lease", "c1", b"{}".to_vec()),
    ];
    assert!(verdict(ops).is_none());
}

#[test]
fn an_agent_txn_with_a_config_kind_is_refused() {
    for kind in ["service", "Service", "cluster", "route", "widget"] {
        let ops = vec![claim_check(), put(kind, "x", br#"{"port":1}"#.to_vec())];
        match verdict(ops) {
            Some(ApiError::Invalid(m)) => {
                assert!(m.contains("ops[1].key.kind") && m.contains(kind), "{m}")
            }
            other => panic!("{kind}/x through the endpoint lane: {other:?}"),
        }
    }
}

#[test]
fn an_oversized_agent_txn_is_refused() {
    let ops = vec![
        claim_check(),
        put("endpoints", "c1.web", vec![b' '; MAX_TXN_BYTES]),
    ];
    match verdict(ops) {
        Some(ApiError::Invalid(m)) => assert!(m.contains("bytes"), "{m}"),
        other => panic!("an oversized txn: {other:?}"),
    }
    let many = (0..20_000)
        .map(|i| put("endpoints", &format!("c1.s{i}"), b"[]".to_vec()))
        .collect();
    match verdict(many) {
        Some(ApiError::Invalid(m)) => assert!(m.contains("operations"), "{m}"),
        other => panic!("20,000 ops: {other:?}"),
    }
}
