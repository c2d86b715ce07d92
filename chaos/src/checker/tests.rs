//! Hand-made histories: valid ones pass, each known anomaly is named with
//! the ops that show it. Times are in ms for readability.

use super::*;
use crate::history::{Op, OpKind, Outcome};

fn op(kind: OpKind, call: u64, ret: u64, outcome: Outcome) -> Op {
    Op {
        client: 0,
        key: "k".into(),
        kind,
        call: call * 1_000_000,
        ret: ret * 1_000_000,
        outcome,
        node: 1,
        revision: 0,
    }
}
fn w(v: &str, call: u64, ret: u64) -> Op {
    op(OpKind::Write { value: v.into() }, call, ret, Outcome::Ok)
}
fn w_unknown(v: &str, call: u64, ret: u64) -> Op {
    op(
        OpKind::Write { value: v.into() },
        call,
        ret,
        Outcome::Unknown,
    )
}
fn r(saw: Option<&str>, call: u64, ret: u64) -> Op {
    op(
        OpKind::Read {
            saw: saw.map(str::to_string),
        },
        call,
        ret,
        Outcome::Ok,
    )
}
fn cas(expect: Option<&str>, v: &str, swapped: bool, call: u64, ret: u64) -> Op {
    op(
        OpKind::Cas {
            expect: expect.map(str::to_string),
            value: v.into(),
            swapped,
        },
        call,
        ret,
        Outcome::Ok,
    )
}

fn verdict(h: &[Op]) -> Verdict {
    check_key(h, &CheckOptions::default())
}

#[track_caller]
fn must_pass(h: &[Op]) {
    match verdict(h) {
        Verdict::Linearizable => {}
        v => panic!("expected linearizable, got {v:?}"),
    }
}

#[track_caller]
fn must_find(h: &[Op], kind: AnomalyKind) -> Anomaly {
    match verdict(h) {
        Verdict::Anomaly(a) if a.kind == kind => a,
        v => panic!("expected {kind:?}, got {v:?}"),
    }
}

#[test]
fn a_sequential_history_passes() {
    must_pass(&[
        r(None, 0, 1),
        w("a", 2, 3),
        r(Some("a"), 4, 5),
        cas(Some("a"), "b", true, 6, 7),
        cas(Some("a"), "c", false, 8, 9),
        r(Some("b"), 10, 11),
    ]);
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    must_pass(&[
        w("a", 0, 100),
        r(None, 5, 8),
        r(Some("a"), 10, 20),
        w("b", 50, 60),
        r(Some("a"), 55, 70),
    ]);
    // ...but not go back once the newer value was seen and the write ended.
    must_find(
        &[
            w("a", 0, 10),
            w("b", 20, 100),
            r(Some("b"), 30, 40),
            r(Some("a"), 50, 60),
        ],
        AnomalyKind::NotLinearizable,
    );
}

#[test]
fn an_unknown_write_may_take_effect_late_or_never() {
    must_pass(&[w_unknown("x", 0, 5), r(None, 10, 11), r(Some("x"), 20, 21)]);
    must_pass(&[w_unknown("x", 0, 5), r(None, 10, 11), r(None, 20, 21)]);
    // Once it is seen, it stays.
    must_find(
        &[w_unknown("x", 0, 5), r(Some("x"), 10, 11), r(None, 20, 21)],
        AnomalyKind::NotLinearizable,
    );
}

#[test]
fn a_cas_from_absent_and_an_unknown_cas() {
    must_pass(&[
        cas(None, "a", true, 0, 1),
        r(Some("a"), 2, 3),
        cas(None, "b", false, 4, 5),
    ]);
    let unknown = op(
        OpKind::Cas {
            expect: Some("a".into()),
            value: "b".into(),
            swapped: false,
        },
        6,
        7,
        Outcome::Unknown,
    );
    must_pass(&[
        cas(None, "a", true, 0, 1),
        unknown.clone(),
        r(Some("b"), 10, 11),
    ]);
    must_pass(&[cas(None, "a", true, 0, 1), unknown, r(Some("a"), 10, 11)]);
}

#[test]
fn a_stale_read_is_named_with_the_write_it_missed() {
    let a = must_find(
        &[
            w("a", 0, 1),
            w("b", 2, 3),
            r(Some("a"), 4, 5),
            r(Some("b"), 6, 7),
        ],
        AnomalyKind::StaleRead,
    );
    assert_eq!(
        a.ops[0].kind,
        OpKind::Read {
            saw: Some("a".into())
        },
        "{a:?}"
    );
    assert_eq!(a.ops[1].written(), Some("b"), "{a:?}");
}

#[test]
fn a_lost_write_is_named() {
    let a = must_find(
        &[
            w("a", 0, 1),
            w("b", 2, 3),
            r(Some("a"), 4, 5),
            r(Some("a"), 6, 7),
        ],
        AnomalyKind::LostWrite,
    );
    assert_eq!(a.ops[1].written(), Some("b"), "{a:?}");
    // Lost from the start: a read after an acknowledged first write finds nothing.
    must_find(&[w("a", 0, 1), r(None, 4, 5)], AnomalyKind::LostWrite);
}

#[test]
fn a_cas_that_succeeded_twice_is_named() {
    let a = must_find(
        &[
            w("a", 0, 1),
            cas(Some("a"), "b", true, 2, 10),
            cas(Some("a"), "c", true, 3, 9),
        ],
        AnomalyKind::DoubleCas,
    );
    let mut written: Vec<_> = a.ops.iter().filter_map(|o| o.written()).collect();
    written.sort();
    assert_eq!(written, ["b", "c"]);
}

#[test]
fn a_read_of_a_value_never_written_is_named() {
    let a = must_find(
        &[w("a", 0, 1), r(Some("zz"), 2, 3)],
        AnomalyKind::PhantomRead,
    );
    assert_eq!(
        a.ops[0].kind,
        OpKind::Read {
            saw: Some("zz".into())
        }
    );
    // A write that definitely failed wrote nothing.
    let failed = op(OpKind::Write { value: "f".into() }, 0, 1, Outcome::Failed);
    must_find(&[failed, r(Some("f"), 2, 3)], AnomalyKind::PhantomRead);
}

#[test]
fn a_failed_cas_is_an_observation_unless_told_otherwise() {
    let h = [w("a", 0, 1), cas(Some("a"), "b", false, 2, 3)];
    must_find(&h, AnomalyKind::NotLinearizable);
    let lenient = CheckOptions {
        failed_cas_observes: false,
        ..CheckOptions::default()
    };
    assert!(matches!(check_key(&h, &lenient), Verdict::Linearizable));
}

#[test]
fn a_search_past_its_bound_is_undecided() {
    // Many concurrent unknown writes and a contradiction at the end: the
    // search must try every subset before it can refute.
    let mut h: Vec<Op> = (0..40)
        .map(|i| w_unknown(&format!("u{i}"), i, i + 1))
        .collect();
    h.push(w("a", 100, 101));
    h.push(r(Some("u1"), 200, 201));
    h.push(r(Some("u2"), 202, 203));
    h.push(r(Some("u1"), 204, 205));
    let tight = CheckOptions {
        max_steps: 10_000,
        ..CheckOptions::default()
    };
    assert!(
        matches!(check_key(&h, &tight), Verdict::Undecided(_)),
        "{:?}",
        check_key(&h, &tight)
    );
}

#[test]
fn keys_are_checked_apart() {
    let mut h = vec![w("a", 0, 1), r(Some("a"), 2, 3)];
    let mut other = vec![w("x", 0, 1), w("y", 2, 3), r(Some("x"), 4, 5)];
    for o in &mut other {
        o.key = "other".into();
    }
    h.append(&mut other);
    let reports = check(&h, &CheckOptions::default());
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].key, "k");
    assert!(matches!(reports[0].verdict, Verdict::Linearizable));
    assert!(matches!(reports[1].verdict, Verdict::Anomaly(_)));
}

#[test]
fn a_long_concurrent_valid_history_is_decided_quickly() {
    // 4 clients, overlapping ops, some unknown: the shape real runs produce.
    let mut h = Vec::new();
    let mut last = None::<String>;
    for g in 0..750u64 {
        let b = g * 100;
        let v = format!("v{g}");
        // The read may see the write before it or this one: they overlap.
        h.push(r(last.as_deref(), b, b + 12));
        h.push(w(&v, b + 5, b + 25));
        h.push(w_unknown(&format!("u{g}"), b + 10, b + 15));
        h.push(r(Some(&v), b + 30, b + 40));
        let c = format!("c{g}");
        h.push(cas(Some(&v), &c, true, b + 45, b + 55));
        last = Some(c);
    }
    let started = std::time::Instant::now();
    must_pass(&h);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
