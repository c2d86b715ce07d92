use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::google::protobuf::Any;

use super::delta::DeltaRequestView;
use super::*;
use crate::source::{Resources, VersionedResource};
use crate::types::{CLUSTER, ENDPOINT};

fn res(type_url: &str, items: &[(&str, &str)]) -> Resources {
    items
        .iter()
        .map(|(n, content)| {
            let any = Any {
                type_url: type_url.to_string(),
                value: content.as_bytes().to_vec(),
            };
            (n.to_string(), Arc::new(VersionedResource::new(*n, any)))
        })
        .collect()
}

fn i(n: &str) -> Arc<str> {
    Arc::from(n)
}

fn s(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn sotw_req(
    sub: &mut SotwSubscription,
    names: &[&str],
    nonce: &str,
    error: Option<&str>,
) -> sotw::SotwDecision {
    sub.on_request(
        &s(names),
        nonce,
        error,
        "node-1",
        CLUSTER,
        SystemTime::now(),
        i,
    )
}

fn sotw_send(
    sub: &mut SotwSubscription,
    all: &Resources,
    nonce: &str,
) -> Vec<Arc<VersionedResource>> {
    let list = sub.select(all);
    sub.record_sent(Arc::new(SotwList::new(list.clone())), nonce);
    list
}

#[test]
fn sotw_legacy_empty_list_is_wildcard_until_the_stream_names_something() {
    let mut sub = SotwSubscription::default();
    assert!(sub.set_names(&[], i));
    assert!(sub.wildcard);
    sub.set_names(&s(&["a"]), i);
    assert!(!sub.wildcard);
    sub.set_names(&[], i);
    assert!(!sub.wildcard, "after naming something, empty means nothing");
    assert!(sub.names.is_empty());
}

#[test]
fn sotw_explicit_star_is_wildcard_and_keeps_named_extras() {
    let mut sub = SotwSubscription::default();
    sub.set_names(&s(&["*", "x"]), i);
    assert!(sub.wildcard);
    assert!(sub.names.contains("x") && !sub.names.contains("*"));
    let all = res(CLUSTER, &[("a", "1"), ("b", "2")]);
    assert_eq!(sub.select(&all).len(), 2);
}

#[test]
fn sotw_duplicate_names_yield_one_resource() {
    let mut sub = SotwSubscription::default();
    sub.set_names(&s(&["a", "a", "b"]), i);
    let all = res(ENDPOINT, &[("a", "1"), ("b", "2")]);
    let names: Vec<_> = sub
        .select(&all)
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn sotw_stale_nonce_changes_nothing() {
    let mut sub = SotwSubscription::default();
    let all = res(CLUSTER, &[("a", "1")]);
    sotw_req(&mut sub, &[], "", None);
    sotw_send(&mut sub, &all, "n1");
    sotw_send(&mut sub, &all, "n2");
    let d = sotw_req(&mut sub, &["zzz"], "n1", None);
    assert_eq!(
        d,
        sotw::SotwDecision {
            kind: RequestKind::Stale,
            respond: false
        }
    );
    assert!(sub.wildcard && sub.names.is_empty());
    assert_eq!(sub.ledger.acked_nonce, None);
}

#[test]
fn sotw_ack_records_version_nonce_and_time() {
    let mut sub = SotwSubscription::default();
    let all = res(CLUSTER, &[("a", "1")]);
    sotw_req(&mut sub, &[], "", None);
    sotw_send(&mut sub, &all, "n1");
    assert_eq!(sub.sync_state(), SyncState::Stale);
    let d = sotw_req(&mut sub, &[], "n1", None);
    assert_eq!(d.kind, RequestKind::Ack);
    assert!(!d.respond);
    assert_eq!(sub.ledger.acked_nonce.as_deref(), Some("n1"));
    assert_eq!(sub.acked_version(), sub.sent_version());
    assert!(sub.ledger.last_ack.is_some());
    assert_eq!(sub.sync_state(), SyncState::Synced);
    assert_eq!(sub.resource_state("a", true), ResourceState::Acked);
}

#[test]
fn sotw_nack_is_detected_by_error_detail_and_records_rejected_names() {
    let mut sub = SotwSubscription::default();
    let v1 = res(CLUSTER, &[("a", "1"), ("b", "1")]);
    sotw_req(&mut sub, &[], "", None);
    sotw_send(&mut sub, &v1, "n1");
    sotw_req(&mut sub, &[], "n1", None);
    let v2 = res(CLUSTER, &[("a", "1"), ("b", "2")]);
    sotw_send(&mut sub, &v2, "n2");
    // Same version_info as the sent one: only error_detail makes it a NACK.
    let d = sub.on_request(
        &[],
        "n2",
        Some("bad cluster b"),
        "node-1",
        CLUSTER,
        SystemTime::now(),
        i,
    );
    assert_eq!(
        d,
        sotw::SotwDecision {
            kind: RequestKind::Nack,
            respond: false
        }
    );
    let n = sub.ledger.last_nack.clone().expect("nack recorded");
    assert_eq!(n.resource_names, vec!["b"]);
    assert_eq!(n.message, "bad cluster b");
    assert_eq!(n.node_id, "node-1");
    assert_eq!(sub.sync_state(), SyncState::Nacked);
    assert_eq!(sub.resource_state("b", true), ResourceState::Nacked);
    assert_eq!(sub.resource_state("a", true), ResourceState::Acked);
    // The NACKed content is never re-sent by itself...
    assert!(!sub.should_send(CLUSTER, &SotwList::new(sub.select(&v2)), false));
    // ...but changed content is.
    let v3 = res(CLUSTER, &[("a", "1"), ("b", "3")]);
    assert!(sub.should_send(CLUSTER, &SotwList::new(sub.select(&v3)), false));
}

#[test]
fn sotw_empty_response_only_for_full_state_types() {
    let sub = SotwSubscription::default();
    assert!(sub.should_send(CLUSTER, &SotwList::default(), true));
    assert!(!sub.should_send(ENDPOINT, &SotwList::default(), true));
}

#[test]
fn sotw_new_names_prompt_an_answer_removed_names_do_not() {
    let mut sub = SotwSubscription::default();
    let all = res(ENDPOINT, &[("a", "1"), ("b", "1")]);
    sotw_req(&mut sub, &["a", "b"], "", None);
    sotw_send(&mut sub, &all, "n1");
    assert!(!sotw_req(&mut sub, &["a"], "n1", None).respond);
    assert!(sotw_req(&mut sub, &["a", "b"], "n1", None).respond);
}

fn delta_req<'a>(
    sub: &mut DeltaSubscription,
    subscribe: &'a [String],
    unsubscribe: &'a [String],
    initial: &'a HashMap<String, String>,
    nonce: &'a str,
    error: Option<&'a str>,
) -> RequestKind {
    sub.on_request(
        DeltaRequestView {
            subscribe,
            unsubscribe,
            initial_versions: initial,
            nonce,
            error,
        },
        "node-1",
        ENDPOINT,
        SystemTime::now(),
        i,
    )
}

#[test]
fn delta_first_request_skips_what_the_client_holds() {
    let all = res(ENDPOINT, &[("a", "1"), ("b", "1")]);
    let mut initial = HashMap::new();
    initial.insert("a".to_string(), all["a"].version.clone());
    initial.insert("gone".to_string(), "old".to_string());
    let mut sub = DeltaSubscription::default();
    delta_req(&mut sub, &s(&["a", "b", "gone"]), &[], &initial, "", None);
    let plan = sub.plan(&all, &Pending::All, false);
    assert_eq!(
        plan.resources.iter().map(|r| &*r.name).collect::<Vec<_>>(),
        vec!["b"]
    );
    assert_eq!(plan.removed, vec!["gone"]);
}

#[test]
fn delta_resubscribe_sends_a_held_resource_again() {
    let all = res(ENDPOINT, &[("a", "1")]);
    let mut sub = DeltaSubscription::default();
    let none = HashMap::new();
    delta_req(&mut sub, &s(&["a"]), &[], &none, "", None);
    let p = sub.plan(&all, &Pending::All, false);
    sub.record_sent(&p, "n1");
    assert!(sub.plan(&all, &Pending::All, false).is_empty());
    delta_req(&mut sub, &s(&["a"]), &[], &none, "", None);
    assert_eq!(sub.plan(&all, &Pending::All, false).resources.len(), 1);
}

#[test]
fn delta_removals_only_for_held_names_and_absent_subscriptions_once() {
    let mut sub = DeltaSubscription::default();
    let none = HashMap::new();
    delta_req(&mut sub, &s(&["a", "missing"]), &[], &none, "", None);
    let all = res(ENDPOINT, &[("a", "1")]);
    let p = sub.plan(&all, &Pending::All, false);
    assert_eq!(
        p.removed,
        vec!["missing"],
        "a subscribed name that does not exist is answered as removed"
    );
    sub.record_sent(&p, "n1");
    assert!(
        sub.plan(&all, &Pending::All, false).is_empty(),
        "reported once"
    );
    // A wildcard stream is never told about names it never got.
    let mut w = DeltaSubscription::default();
    // Explicitly: an empty first request is wildcard for LDS and CDS only.
    delta_req(&mut w, &s(&["*"]), &[], &none, "", None);
    assert!(w.wildcard);
    let p = w.plan(&all, &Pending::All, false);
    w.record_sent(&p, "n1");
    let after = res(ENDPOINT, &[("b", "1")]);
    let p = w.plan(&after, &Pending::All, false);
    assert_eq!(p.removed, vec!["a"]);
    assert_eq!(p.resources.len(), 1);
    // And a missing name that appears later is sent.
    let later = res(ENDPOINT, &[("a", "1"), ("missing", "1")]);
    assert_eq!(sub.plan(&later, &Pending::All, false).resources.len(), 1);
}

#[test]
fn delta_unsubscribing_an_unknown_name_is_a_noop() {
    let mut sub = DeltaSubscription::default();
    let none = HashMap::new();
    delta_req(&mut sub, &s(&["a"]), &[], &none, "", None);
    let before = format!(
        "{:?}",
        (sub.names.clone(), sub.client_has.clone(), sub.wildcard)
    );
    delta_req(&mut sub, &[], &s(&["zzz"]), &none, "", None);
    assert_eq!(
        before,
        format!(
            "{:?}",
            (sub.names.clone(), sub.client_has.clone(), sub.wildcard)
        )
    );
}

#[test]
fn delta_nack_backs_off_until_the_config_changes() {
    let mut sub = DeltaSubscription::default();
    let none = HashMap::new();
    delta_req(&mut sub, &s(&["a"]), &[], &none, "", None);
    let v1 = res(ENDPOINT, &[("a", "1")]);
    let p = sub.plan(&v1, &Pending::All, false);
    sub.record_sent(&p, "n1");
    assert_eq!(
        delta_req(&mut sub, &[], &[], &none, "n1", Some("bad")),
        RequestKind::Nack
    );
    let n = sub.ledger.last_nack.clone().expect("nack recorded");
    assert_eq!(
        (n.resource_names, n.message.as_str()),
        (vec!["a".to_string()], "bad")
    );
    assert_eq!(sub.sync_state(), SyncState::Nacked);
    assert!(sub.plan(&v1, &Pending::All, false).is_empty());
    assert_eq!(
        sub.plan(&res(ENDPOINT, &[("a", "2")]), &Pending::All, false)
            .resources
            .len(),
        1
    );
}

#[test]
fn delta_unknown_nonce_still_changes_the_subscription() {
    let mut sub = DeltaSubscription::default();
    let none = HashMap::new();
    delta_req(&mut sub, &s(&["a"]), &[], &none, "", None);
    let all = res(ENDPOINT, &[("a", "1"), ("b", "1")]);
    let p = sub.plan(&all, &Pending::All, false);
    sub.record_sent(&p, "n1");
    assert_eq!(
        delta_req(&mut sub, &s(&["b"]), &[], &none, "stale", None),
        RequestKind::Unknown
    );
    assert!(sub.names.contains("b"));
    assert_eq!(sub.plan(&all, &Pending::All, false).resources.len(), 1);
}

#[test]
fn sync_state_follows_nonces() {
    assert_eq!(sync_state(None, None, None), SyncState::NotSent);
    assert_eq!(sync_state(Some("2"), Some("1"), None), SyncState::Stale);
    assert_eq!(sync_state(Some("2"), Some("2"), None), SyncState::Synced);
    assert_eq!(
        sync_state(Some("2"), Some("1"), Some("2")),
        SyncState::Nacked
    );
}

/// A stream that was fully planned at one view and moves one step must get
/// from the changed names alone exactly what a full plan would give it.
#[test]
fn planning_only_changed_names_equals_a_full_plan() {
    use crate::source::ViewSnapshot;
    use crate::view::View;
    let mk = |items: &[(&str, &str)]| {
        let mut v = ViewSnapshot::default();
        for (n, c) in items {
            v.insert(
                *n,
                Any {
                    type_url: ENDPOINT.to_string(),
                    value: c.as_bytes().to_vec(),
                },
            );
        }
        Arc::new(v)
    };
    let before = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")];
    let afters: [&[(&str, &str)]; 4] = [
        &[("a", "2"), ("b", "1"), ("d", "1"), ("e", "1")],
        &[],
        &[
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            ("missing", "1"),
        ],
        &[("b", "9")],
    ];
    let none = HashMap::new();
    for after in afters {
        let v1 = View::first(mk(&before));
        let v2 = View::next(mk(after), &v1);
        let changed = v2.changed(ENDPOINT);
        let subs: [&[&str]; 3] = [&[], &["a", "c", "missing"], &["e", "zzz"]];
        for names in subs {
            let mut sub = DeltaSubscription::default();
            delta_req(&mut sub, &s(names), &[], &none, "", None);
            let p = sub.plan(v1.snap.resources(ENDPOINT), &Pending::All, false);
            sub.record_sent(&p, "n1");
            let full = sub.plan(v2.snap.resources(ENDPOINT), &Pending::All, false);
            let mut scope = Pending::None;
            scope.extend(changed);
            let part = sub.plan(v2.snap.resources(ENDPOINT), &scope, false);
            let key = |p: &DeltaPlan| {
                (
                    p.resources
                        .iter()
                        .map(|r| r.name.to_string())
                        .collect::<Vec<_>>(),
                    p.removed.clone(),
                )
            };
            assert_eq!(key(&full), key(&part), "names {names:?} after {after:?}");
        }
    }
}
