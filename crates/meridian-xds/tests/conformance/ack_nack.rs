//! [ACK and NACK semantics], stale nonces, NACK back-off, no unprompted resends.

use meridian_xds::testing::fixtures::cluster;
use meridian_xds::testing::{delta_names, names, DeltaClient, SotwClient};
use meridian_xds::types::CLUSTER;
use meridian_xds::{SyncState, XdsMetrics};

use super::support::{envoy, start, QUIET};

#[tokio::test]
async fn stale_nonce_is_not_answered_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let first = c.expect_response().await;
    src.upsert("c3", cluster("c3", "v1"));
    let second = c.expect_response().await;
    // Envoy's ACK of the first response crosses the second one: stale.
    c.request(CLUSTER, &["c1"], &first.version_info, &first.nonce)
        .await;
    c.expect_silence(QUIET).await;
    let st = &srv.server.status()[0].types[CLUSTER];
    assert!(st.wildcard, "a stale request changes nothing");
    assert_eq!(st.state, SyncState::Stale);
    assert_eq!(XdsMetrics::get(&srv.server.metrics().stale_requests), 1);
    c.ack(&second, &[]).await;
    c.expect_silence(QUIET).await;
    assert_eq!(
        srv.server.status()[0].types[CLUSTER].state,
        SyncState::Synced
    );
}

#[tokio::test]
async fn stale_nonce_is_not_answered_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let first = c.expect_response().await;
    src.upsert("c3", cluster("c3", "v1"));
    let second = c.expect_response().await;
    assert_eq!(delta_names(&second), vec!["c3"]);
    // Acks of older responses are fine in delta, but never answered.
    c.ack(&first).await;
    c.subscribe(CLUSTER, &[], &[], "not-a-nonce").await;
    c.expect_silence(QUIET).await;
    assert_eq!(
        srv.server.status()[0].types[CLUSTER].state,
        SyncState::Stale
    );
    c.ack(&second).await;
    c.expect_silence(QUIET).await;
    assert_eq!(
        srv.server.status()[0].types[CLUSTER].state,
        SyncState::Synced
    );
}

#[tokio::test]
async fn nack_is_detected_by_error_detail_sotw() {
    let (_src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("envoy-7")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let r = c.expect_response().await;
    // version_info equal to the response's: a version heuristic would call it an ACK.
    c.nack(&r, &[], &r.version_info, "cluster c2: bad lb policy")
        .await;
    c.expect_silence(QUIET).await;
    let st = &srv.server.status()[0].types[CLUSTER];
    assert_eq!(st.state, SyncState::Nacked);
    let n = st.last_nack.clone().expect("nack recorded");
    assert_eq!(
        (n.node_id.as_str(), n.type_url.as_str(), n.message.as_str()),
        ("envoy-7", CLUSTER, "cluster c2: bad lb policy")
    );
    assert_eq!(n.resource_names, vec!["c1", "c2"]);
    assert_eq!(srv.server.recent_nacks(), vec![n]);
    assert_eq!(XdsMetrics::get(&srv.server.metrics().nacks), 1);
    assert_eq!(XdsMetrics::get(&srv.server.metrics().acks), 0);
}

#[tokio::test]
async fn nack_is_detected_by_error_detail_delta() {
    let (_src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("envoy-7")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let r = c.expect_response().await;
    c.nack(&r, "cluster c2: bad lb policy").await;
    c.expect_silence(QUIET).await;
    let st = &srv.server.status()[0].types[CLUSTER];
    assert_eq!(st.state, SyncState::Nacked);
    let n = st.last_nack.clone().expect("nack recorded");
    assert_eq!(
        (n.node_id.as_str(), n.message.as_str()),
        ("envoy-7", "cluster c2: bad lb policy")
    );
    assert_eq!(n.resource_names, vec!["c1", "c2"]);
    assert_eq!(srv.server.recent_nacks().len(), 1);
}

#[tokio::test]
async fn nacked_config_is_not_resent_until_it_changes_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let good = c.expect_response().await;
    c.ack(&good, &[]).await;
    src.upsert("c2", cluster("c2", "broken"));
    let bad = c.expect_response().await;
    c.nack(&bad, &[], &good.version_info, "rejected").await;
    c.expect_silence(QUIET).await;
    src.touch(); // a revision without a content change
    c.expect_silence(QUIET).await;
    src.upsert("c2", cluster("c2", "fixed"));
    let fixed = c.expect_response().await;
    assert_ne!(fixed.version_info, bad.version_info);
    assert_eq!(names(&fixed), vec!["c1", "c2"]);
    let _ = srv;
}

#[tokio::test]
async fn nacked_config_is_not_resent_until_it_changes_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let good = c.expect_response().await;
    c.ack(&good).await;
    src.upsert("c2", cluster("c2", "broken"));
    let bad = c.expect_response().await;
    c.nack(&bad, "rejected").await;
    c.expect_silence(QUIET).await;
    src.touch();
    c.expect_silence(QUIET).await;
    src.upsert("c2", cluster("c2", "fixed"));
    let fixed = c.expect_response().await;
    assert_eq!(delta_names(&fixed), vec!["c2"]);
    assert_ne!(fixed.resources[0].version, bad.resources[0].version);
    let _ = srv;
}

#[tokio::test]
async fn identical_response_is_never_resent_unprompted_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let r = c.expect_response().await;
    c.ack(&r, &[]).await;
    for _ in 0..3 {
        src.touch();
        // Re-inserting identical content is not a change either.
        src.upsert("c1", cluster("c1", "v1"));
    }
    c.expect_silence(QUIET).await;
    let _ = srv;
}

#[tokio::test]
async fn identical_response_is_never_resent_unprompted_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let r = c.expect_response().await;
    c.ack(&r).await;
    for _ in 0..3 {
        src.touch();
        src.upsert("c1", cluster("c1", "v1"));
    }
    c.expect_silence(QUIET).await;
    let _ = srv;
}
