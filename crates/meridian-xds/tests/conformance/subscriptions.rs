//! [Knowing When a Requested Resource Does Not Exist], re-requests, wildcard,
//! [Grouping Resources into Responses], no duplicate names.

use meridian_xds::testing::fixtures::{cluster, endpoints, listener};
use meridian_xds::testing::{delta_names, names, SotwClient};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER};

use super::support::{both, delta_acked, envoy, s, start, start_ads, Flavor, Stream, QUIET};

both!(
    requested_name_is_sent_when_it_appears,
    newly_requested_names_are_sent_even_if_unchanged,
    wildcard_explicit_and_legacy,
    no_resource_is_named_twice_in_a_response,
    empty_first_request_is_wildcard_only_for_listeners_and_clusters,
);

async fn requested_name_is_sent_when_it_appears(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    c.ask(ENDPOINT, &["c1", "c9"]).await;
    let r = c.expect().await;
    match f {
        Flavor::Sotw => assert_eq!(r.names, vec!["c1"]),
        Flavor::Delta => assert_eq!(
            (r.names.clone(), r.removed.clone()),
            (s(&["c1"]), s(&["c9"]))
        ),
    }
    c.ack(&r).await;
    src.upsert("c9", endpoints("c9", "v1"));
    let r = c.expect().await;
    match f {
        Flavor::Sotw => assert_eq!(r.names, vec!["c1", "c9"]),
        Flavor::Delta => assert_eq!((r.names, r.removed.len()), (s(&["c9"]), 0)),
    }
    let _ = srv;
}

async fn newly_requested_names_are_sent_even_if_unchanged(f: Flavor) {
    let (_src, _srv, mut c) = start_ads(f).await;
    c.ask(ENDPOINT, &["c1", "c2"]).await;
    let r = c.expect().await;
    c.ack(&r).await;
    // Envoy drops cluster c2, then adds it back (go-control-plane #399/#583).
    c.watch(&r, &["c1"]).await;
    c.expect_silence(QUIET).await;
    c.watch(&r, &["c1", "c2"]).await;
    let again = c.expect().await;
    match f {
        Flavor::Sotw => assert_eq!(again.names, vec!["c1", "c2"]),
        Flavor::Delta => assert_eq!(again.names, vec!["c2"]),
    }
}

async fn wildcard_explicit_and_legacy(f: Flavor) {
    let (src, srv) = start().await;
    let mut legacy = Stream::ads(f, srv.addr, envoy("legacy")).await;
    legacy.ask(CLUSTER, &[]).await;
    let lr = legacy.expect().await;
    assert_eq!(lr.names, vec!["c1", "c2"]);
    match f {
        Flavor::Sotw => {
            legacy.ack(&lr).await;
            let mut star = Stream::ads(f, srv.addr, envoy("star")).await;
            star.ask(CLUSTER, &["*"]).await;
            assert_eq!(star.expect().await.names, vec!["c1", "c2"]);
            // After naming something, an empty list means nothing.
            let mut named = Stream::ads(f, srv.addr, envoy("named")).await;
            named.ask(CLUSTER, &["c1"]).await;
            let r = named.expect().await;
            assert_eq!(r.names, vec!["c1"]);
            named.watch(&r, &[]).await;
            src.upsert("c3", cluster("c3", "v1"));
            let r = named.expect().await;
            assert!(r.names.is_empty(), "subscribed to nothing: {:?}", r.names);
            assert_eq!(legacy.expect().await.names, vec!["c1", "c2", "c3"]);
        }
        Flavor::Delta => {
            let mut star = Stream::ads(f, srv.addr, envoy("star")).await;
            star.ask(CLUSTER, &["c1"]).await;
            assert_eq!(star.expect().await.names, vec!["c1"]);
            star.delta().subscribe(CLUSTER, &["*"], &[], "").await;
            assert_eq!(star.expect().await.names, vec!["c2"]);
            // Leaving the wildcard: later clusters are not sent.
            legacy.ack(&lr).await;
            legacy.delta().subscribe(CLUSTER, &[], &["*"], "").await;
            src.upsert("c3", cluster("c3", "v1"));
            assert_eq!(star.expect().await.names, vec!["c3"]);
            legacy.expect_silence(QUIET).await;
        }
    }
}

async fn no_resource_is_named_twice_in_a_response(f: Flavor) {
    let (_src, _srv, mut c) = start_ads(f).await;
    let asked: &[&str] = match f {
        Flavor::Sotw => &["c1", "c1", "c2", "c1"],
        Flavor::Delta => &["c1", "c1", "c2"],
    };
    c.ask(ENDPOINT, asked).await;
    assert_eq!(c.expect().await.names, vec!["c1", "c2"]);
    c.ask(CLUSTER, &["*", "c1", "c1"]).await;
    assert_eq!(c.expect().await.names, vec!["c1", "c2"]);
}

#[tokio::test]
async fn lds_and_cds_responses_are_full_state_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(LISTENER, &[], "", "").await;
    let r = c.expect_response().await;
    c.ack(&r, &[]).await;
    src.upsert("l2", listener("l2", "r1", "v1"));
    let r = c.expect_response().await;
    assert_eq!(
        names(&r),
        vec!["l1", "l2"],
        "unchanged listeners are repeated, not implied"
    );
    c.ack(&r, &[]).await;
    src.update(|v| {
        v.by_type.remove(LISTENER);
    });
    let r = c.expect_response().await;
    assert!(
        r.resources.is_empty(),
        "an empty response deletes all listeners"
    );
    let _ = srv;
}

#[tokio::test]
async fn rds_eds_sds_send_only_requested_names_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(ENDPOINT, &["c1"], "", "").await;
    let r = c.expect_response().await;
    assert_eq!(names(&r), vec!["c1"]);
    c.ack(&r, &["c1"]).await;
    src.upsert("c2", endpoints("c2", "v2"));
    c.expect_silence(QUIET).await;
    // Losing a referenced resource is not announced by an empty response.
    src.remove(ENDPOINT, "c1");
    c.expect_silence(QUIET).await;
    let _ = srv;
}

#[tokio::test]
async fn removals_are_explicit_and_updates_partial_delta() {
    let (src, srv) = start().await;
    let mut c = delta_acked(&srv, "n", LISTENER, &[]).await;
    src.upsert("l2", listener("l2", "r1", "v1"));
    let r = c.expect_response().await;
    assert_eq!(delta_names(&r), vec!["l2"]);
    c.ack(&r).await;
    src.remove(LISTENER, "l1");
    let r = c.expect_response().await;
    assert_eq!(
        (r.resources.len(), r.removed_resources.clone()),
        (0, vec!["l1".to_string()])
    );
    let _ = srv;
}

/// Legacy wildcard (an empty first request) exists for LDS and CDS only:
/// an empty first EDS request asks for nothing, so nothing is sent.
async fn empty_first_request_is_wildcard_only_for_listeners_and_clusters(f: Flavor) {
    let (_src, _srv, mut c) = start_ads(f).await;
    c.ask(ENDPOINT, &[]).await;
    c.expect_silence(QUIET).await;
    c.ask(CLUSTER, &[]).await;
    assert_eq!(c.expect().await.names, s(&["c1", "c2"]));
}
