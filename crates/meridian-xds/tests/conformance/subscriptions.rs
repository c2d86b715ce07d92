//! [Knowing When a Requested Resource Does Not Exist], re-requests, wildcard,
//! [Grouping Resources into Responses], no duplicate names.

use meridian_xds::testing::fixtures::{cluster, endpoints, listener};
use meridian_xds::testing::{delta_names, names, DeltaClient, SotwClient};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER};

use super::support::{envoy, start, QUIET};

#[tokio::test]
async fn requested_name_is_sent_when_it_appears_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(ENDPOINT, &["c1", "c9"], "", "").await;
    let r = c.expect_response().await;
    assert_eq!(names(&r), vec!["c1"]);
    c.ack(&r, &["c1", "c9"]).await;
    src.upsert("c9", endpoints("c9", "v1"));
    assert_eq!(names(&c.expect_response().await), vec!["c1", "c9"]);
    let _ = srv;
}

#[tokio::test]
async fn requested_name_is_sent_when_it_appears_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(ENDPOINT, &["c1", "c9"], &[], "").await;
    let r = c.expect_response().await;
    assert_eq!(
        (delta_names(&r), r.removed_resources.clone()),
        (vec!["c1".to_string()], vec!["c9".to_string()])
    );
    c.ack(&r).await;
    src.upsert("c9", endpoints("c9", "v1"));
    let r = c.expect_response().await;
    assert_eq!(
        (delta_names(&r), r.removed_resources.len()),
        (vec!["c9".to_string()], 0)
    );
    let _ = srv;
}

#[tokio::test]
async fn newly_requested_names_are_sent_even_if_unchanged_sotw() {
    let (_src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(ENDPOINT, &["c1", "c2"], "", "").await;
    let r = c.expect_response().await;
    c.ack(&r, &["c1", "c2"]).await;
    // Envoy drops cluster c2, then adds it back (go-control-plane #399/#583).
    c.ack(&r, &["c1"]).await;
    c.expect_silence(QUIET).await;
    c.ack(&r, &["c1", "c2"]).await;
    let again = c.expect_response().await;
    assert_eq!(names(&again), vec!["c1", "c2"]);
}

#[tokio::test]
async fn newly_requested_names_are_sent_even_if_unchanged_delta() {
    let (_src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(ENDPOINT, &["c1", "c2"], &[], "").await;
    let r = c.expect_response().await;
    c.ack(&r).await;
    c.subscribe(ENDPOINT, &[], &["c2"], "").await;
    c.expect_silence(QUIET).await;
    c.subscribe(ENDPOINT, &["c2"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c2"]);
}

#[tokio::test]
async fn wildcard_explicit_and_legacy_sotw() {
    let (src, srv) = start().await;
    let mut legacy = SotwClient::ads(srv.addr, envoy("legacy")).await.unwrap();
    legacy.request(CLUSTER, &[], "", "").await;
    let lr = legacy.expect_response().await;
    assert_eq!(names(&lr), vec!["c1", "c2"]);
    legacy.ack(&lr, &[]).await;
    let mut star = SotwClient::ads(srv.addr, envoy("star")).await.unwrap();
    star.request(CLUSTER, &["*"], "", "").await;
    assert_eq!(names(&star.expect_response().await), vec!["c1", "c2"]);
    // After naming something, an empty list means nothing.
    let mut named = SotwClient::ads(srv.addr, envoy("named")).await.unwrap();
    named.request(CLUSTER, &["c1"], "", "").await;
    let r = named.expect_response().await;
    assert_eq!(names(&r), vec!["c1"]);
    named.ack(&r, &[]).await;
    src.upsert("c3", cluster("c3", "v1"));
    let r = named.expect_response().await;
    assert!(
        names(&r).is_empty(),
        "subscribed to nothing: {:?}",
        names(&r)
    );
    assert_eq!(
        names(&legacy.expect_response().await),
        vec!["c1", "c2", "c3"]
    );
}

#[tokio::test]
async fn wildcard_explicit_and_legacy_delta() {
    let (src, srv) = start().await;
    let mut legacy = DeltaClient::ads(srv.addr, envoy("legacy")).await.unwrap();
    legacy.subscribe(CLUSTER, &[], &[], "").await;
    let r = legacy.expect_response().await;
    assert_eq!(delta_names(&r), vec!["c1", "c2"]);
    let mut star = DeltaClient::ads(srv.addr, envoy("star")).await.unwrap();
    star.subscribe(CLUSTER, &["c1"], &[], "").await;
    assert_eq!(delta_names(&star.expect_response().await), vec!["c1"]);
    star.subscribe(CLUSTER, &["*"], &[], "").await;
    assert_eq!(delta_names(&star.expect_response().await), vec!["c2"]);
    // Leaving the wildcard: later clusters are not sent.
    legacy.ack(&r).await;
    legacy.subscribe(CLUSTER, &[], &["*"], "").await;
    src.upsert("c3", cluster("c3", "v1"));
    assert_eq!(delta_names(&star.expect_response().await), vec!["c3"]);
    legacy.expect_silence(QUIET).await;
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
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(LISTENER, &[], &[], "").await;
    let r = c.expect_response().await;
    c.ack(&r).await;
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

#[tokio::test]
async fn no_resource_is_named_twice_in_a_response_sotw() {
    let (_src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(ENDPOINT, &["c1", "c1", "c2", "c1"], "", "").await;
    assert_eq!(names(&c.expect_response().await), vec!["c1", "c2"]);
    c.request(CLUSTER, &["*", "c1", "c1"], "", "").await;
    assert_eq!(names(&c.expect_response().await), vec!["c1", "c2"]);
}

#[tokio::test]
async fn no_resource_is_named_twice_in_a_response_delta() {
    let (_src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(ENDPOINT, &["c1", "c1", "c2"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c1", "c2"]);
    c.subscribe(CLUSTER, &["*", "c1", "c1"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c1", "c2"]);
}
