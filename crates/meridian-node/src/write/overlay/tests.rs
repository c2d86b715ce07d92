use meridian_store::{ObjectKey, StoredObject, Txn, TxnOp};

use super::{Overlay, Verdict};

fn stored(revision: u64, value: serde_json::Value) -> StoredObject {
    StoredObject {
        value: serde_json::to_vec(&value).unwrap(),
        revision,
        created_revision: revision,
        updated_at_ms: 0,
    }
}

fn with_service_x() -> Overlay {
    let objects = vec![(
        ObjectKey::new("service", "x"),
        stored(5, serde_json::json!({"port": 80})),
    )];
    Overlay::from_state(objects).0
}

fn route_to(service: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "hosts": ["example.com"],
        "rules": [{"backends": [{"service": service}]}],
    }))
    .unwrap()
}

fn txn(ops: Vec<TxnOp>) -> Txn {
    Txn {
        request_id: "t".into(),
        ops,
    }
}

/// Would the overlay accept `t` (on its own and against the whole set)?
fn accepted(ov: &mut Overlay, t: &Txn) -> Result<(), String> {
    let p = match ov.prepare(t) {
        Ok(p) => p,
        Err(Verdict::Invalid(e)) => return Err(e.join("\n")),
        Err(Verdict::Conflict { key, .. }) => return Err(format!("conflict on {key}")),
        Err(Verdict::Defer) => return Err("deferred".into()),
    };
    ov.apply(&p).map_err(|e| e.join("\n"))?;
    let errors = ov.relation_errors();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[test]
fn a_delete_and_put_of_one_object_under_two_spellings_is_refused() {
    let mut ov = with_service_x();
    let t = txn(vec![
        TxnOp::Delete {
            key: ObjectKey::new("Route", "r"),
            expected_revision: None,
        },
        TxnOp::Put {
            key: ObjectKey::new("route", "r"),
            value: route_to("missing"),
            expected_revision: None,
        },
    ]);
    let err = accepted(&mut ov, &t).expect_err("apply would leave route/r pointing nowhere");
    assert!(err.contains("route/r"), "{err}");
}

#[test]
fn a_check_on_a_non_canonical_kind_guards_like_the_canonical_one() {
    let ov = with_service_x();
    for (expected, should_pass) in [(0, false), (4, false), (5, true)] {
        let t = txn(vec![TxnOp::Check {
            key: ObjectKey::new("Service", "x"),
            expected_revision: expected,
        }]);
        match ov.prepare(&t) {
            Ok(p) => {
                assert!(
                    should_pass,
                    "Check Service/x @{expected} passed; service/x is at 5"
                );
                // Apply guards on the stored key, so the proposal carries it.
                assert_eq!(p.txn.ops[0].key(), &ObjectKey::new("service", "x"));
            }
            Err(Verdict::Conflict { key, actual, .. }) => {
                assert!(!should_pass, "Check Service/x @5 failed");
                assert_eq!((key, actual), (ObjectKey::new("service", "x"), 5));
            }
            Err(_) => panic!("Check Service/x @{expected}: neither passed nor conflicted"),
        }
    }
}
