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
        Err(Verdict::Locked(why)) => return Err(format!("locked: {why}")),
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

fn run_holding(objects: &[(&str, &str)], state: &str) -> serde_json::Value {
    serde_json::json!({
        "policy": "regions",
        "spec": {"steps": [{"regions": ["us-east"]}, {"regions": ["eu-west"]}]},
        "objects": objects.iter().map(|(k, n)| serde_json::json!({"kind": k, "name": n})).collect::<Vec<_>>(),
        "step": 0, "state": state,
        "startedAtMs": 1, "stepStartedAtMs": 1, "updatedAtMs": 1,
    })
}

fn put(kind: &str, name: &str, value: Vec<u8>, expected: Option<u64>) -> TxnOp {
    TxnOp::Put {
        key: ObjectKey::new(kind, name),
        value,
        expected_revision: expected,
    }
}

/// An object a running rollout holds is written only together with that
/// rollout's run; a second rollout of it, or a plain write, is refused
/// naming the object and the rollout, and a finished run holds nothing.
#[test]
fn objects_of_a_running_rollout_are_locked() {
    let objects = vec![
        (
            ObjectKey::new("service", "x"),
            stored(5, serde_json::json!({"port": 80})),
        ),
        (
            ObjectKey::new("route", "r"),
            stored(6, serde_json::from_slice(&route_to("x")).unwrap()),
        ),
        (
            ObjectKey::new("rolloutrun", "regions-1"),
            stored(6, run_holding(&[("route", "r")], "progressing")),
        ),
    ];
    let (mut ov, broken) = Overlay::from_state(objects.clone());
    assert!(broken.is_empty(), "{broken:?}");
    let plain = txn(vec![put("route", "r", route_to("x"), None)]);
    let err = accepted(&mut ov, &plain).unwrap_err();
    assert!(
        err.starts_with("locked: route/r: part of rollout regions-1 (progressing, step 1 of 2)"),
        "{err}"
    );
    let second = txn(vec![
        put("route", "r", route_to("x"), None),
        put(
            "rolloutrun",
            "regions-2",
            serde_json::to_vec(&run_holding(&[("route", "r")], "progressing")).unwrap(),
            Some(0),
        ),
    ]);
    let err = accepted(&mut ov, &second).unwrap_err();
    assert!(
        err.contains("route/r: already part of rollout regions-1"),
        "{err}"
    );
    // The run's own transition (a rollback writing the previous value) passes.
    let own = txn(vec![
        put("route", "r", route_to("x"), None),
        put(
            "rolloutrun",
            "regions-1",
            serde_json::to_vec(&run_holding(&[("route", "r")], "rolled-back")).unwrap(),
            Some(6),
        ),
    ]);
    accepted(&mut ov, &own).unwrap();
    // Once it ended, plain writes go through again.
    accepted(&mut ov, &plain).unwrap();
    // A run that does not decode is refused before it is stored.
    let bad = txn(vec![put(
        "rolloutrun",
        "x",
        br#"{"policy": 1}"#.to_vec(),
        Some(0),
    )]);
    assert!(accepted(&mut Overlay::from_state(objects).0, &bad)
        .unwrap_err()
        .contains("rolloutrun/x"));
}
