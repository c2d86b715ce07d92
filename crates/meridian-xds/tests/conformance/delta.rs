//! [Incremental xDS] and [Subscribing to Resources].

use std::collections::HashMap;
use std::time::Duration;

use meridian_xds::testing::fixtures::{cluster, endpoints};
use meridian_xds::testing::{delta_names, DeltaClient};
use meridian_xds::types::{CLUSTER, ENDPOINT};

use super::support::{both, delta_acked, envoy, start, start_ads, Flavor, QUIET};

both!(every_response_path_rearms_the_watch);

#[tokio::test]
async fn delta_subscription_change_with_a_stale_nonce_counts() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(ENDPOINT, &["c1"], &[], "").await;
    let first = c.expect_response().await;
    src.upsert("c1", endpoints("c1", "v2"));
    let _second = c.expect_response().await;
    c.subscribe(ENDPOINT, &["c2"], &[], &first.nonce).await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c2"]);
}

#[tokio::test]
async fn delta_initial_resource_versions_are_not_resent() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let r = c.expect_response().await;
    drop(c);
    let mut held: HashMap<String, String> = r
        .resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect();
    held.insert("gone".into(), "0123".into());
    src.upsert("c2", cluster("c2", "v2"));
    let mut again = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    again.resume(CLUSTER, &[], held).await;
    let r = again.expect_response().await;
    assert_eq!(delta_names(&r), vec!["c2"], "only what differs");
    assert_eq!(r.removed_resources, vec!["gone"]);
}

#[tokio::test]
async fn delta_subscribing_a_held_resource_sends_it_anyway() {
    let (_src, srv) = start().await;
    let mut c = delta_acked(&srv, "n", ENDPOINT, &["c1"]).await;
    c.subscribe(ENDPOINT, &["c1"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c1"]);
}

#[tokio::test]
async fn delta_removed_only_for_names_sent_before_or_under_wildcard() {
    let (src, srv) = start().await;
    let mut c = delta_acked(&srv, "n", ENDPOINT, &["c1"]).await;
    // Names never sent to this stream come and go: no removal for them.
    src.upsert("x", endpoints("x", "v1"));
    src.remove(ENDPOINT, "x");
    c.expect_silence(QUIET).await;
    src.remove(ENDPOINT, "c1");
    let r = c.expect_response().await;
    assert_eq!(
        (r.resources.len(), r.removed_resources.clone()),
        (0, vec!["c1".to_string()])
    );
}

#[tokio::test]
async fn delta_missing_subscribed_name_is_answered_in_removed_resources() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(ENDPOINT, &["nope"], &[], "").await;
    let r = c.expect_response().await;
    assert_eq!(
        (r.resources.len(), r.removed_resources.clone()),
        (0, vec!["nope".to_string()])
    );
    c.ack(&r).await;
    c.expect_silence(QUIET).await; // said once
    src.upsert("nope", endpoints("nope", "v1"));
    assert_eq!(
        delta_names(&c.expect_response().await),
        vec!["nope"],
        "the subscription survived"
    );
}

#[tokio::test]
async fn delta_unsubscribing_an_unknown_name_is_a_noop() {
    let (_src, srv) = start().await;
    let mut c = delta_acked(&srv, "n", ENDPOINT, &["c1"]).await;
    c.subscribe(ENDPOINT, &[], &["never"], "").await;
    c.expect_silence(QUIET).await;
    assert_eq!(srv.server.status()[0].types[ENDPOINT].requested, vec!["c1"]);
}

async fn every_response_path_rearms_the_watch(f: Flavor) {
    let (src, _srv, mut c) = start_ads(f).await;
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await; // immediate reply path
    src.upsert("c3", cluster("c3", "v1")); // no ACK yet
    let r2 = c.expect().await;
    if f == Flavor::Sotw {
        assert_eq!(r2.names.len(), 3);
    }
    c.nack(&r2, r.version(), "no").await; // NACK path
    src.upsert("c4", cluster("c4", "v1"));
    let r3 = c.expect().await;
    if f == Flavor::Delta {
        assert_eq!(r3.names, vec!["c4"]);
    }
    c.ack(&r3).await; // ACK path
    src.upsert("c5", cluster("c5", "v1"));
    let r5 = c.expect().await;
    match f {
        Flavor::Sotw => {
            assert_eq!(r5.names.len(), 5);
            return;
        }
        Flavor::Delta => assert_eq!(r5.names, vec!["c5"]),
    }
    c.ack(&r5).await;
    // A response to a subscription (the immediate path) also keeps the watch.
    c.ask(ENDPOINT, &["c1"]).await;
    let _ = c.expect().await;
    src.upsert("c1", endpoints("c1", "v9"));
    let r = tokio::time::timeout(Duration::from_secs(5), c.expect())
        .await
        .unwrap();
    assert_eq!(r.names, vec!["c1"]);
}

/// An Envoy that reconnects (to this replica or another) declares what it
/// holds. A cluster that changed meanwhile is sent, and Envoy warms it
/// until it gets an EDS response for it: its endpoints must be sent too,
/// though Envoy holds them at the current version, or the cluster waits
/// for Envoy's 15 s initial fetch timeout.
#[tokio::test]
async fn delta_reconnect_sends_the_endpoints_of_an_updated_cluster() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let cds = c.expect_response().await;
    c.ack(&cds).await;
    c.subscribe(ENDPOINT, &["c1", "c2"], &[], "").await;
    let eds = c.expect_response().await;
    c.ack(&eds).await;
    drop(c);
    let versions = |r: &envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse| {
        r.resources
            .iter()
            .map(|x| (x.name.clone(), x.version.clone()))
            .collect::<HashMap<String, String>>()
    };
    src.upsert("c1", cluster("c1", "v2"));
    let mut again = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    again.resume(CLUSTER, &[], versions(&cds)).await;
    assert_eq!(delta_names(&again.expect_response().await), vec!["c1"]);
    again.resume(ENDPOINT, &["c1", "c2"], versions(&eds)).await;
    let r = again.expect_response().await;
    assert_eq!(
        delta_names(&r),
        vec!["c1"],
        "the updated cluster's endpoints, once"
    );
    again.expect_silence(QUIET).await;
}

/// A fresh Envoy gets each cluster's endpoints once, not once for the
/// request and again because the cluster was just sent.
#[tokio::test]
async fn delta_first_endpoints_are_sent_once() {
    let (_src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let cds = c.expect_response().await;
    c.ack(&cds).await;
    c.subscribe(ENDPOINT, &["c1", "c2"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c1", "c2"]);
    c.expect_silence(QUIET).await;
}

/// Unsubscribing `*` and subscribing it again sends the wildcard's
/// resources again: the client dropped them.
#[tokio::test]
async fn delta_resubscribing_the_wildcard_resends_it() {
    let (_src, srv) = start().await;
    let mut c = delta_acked(&srv, "n", CLUSTER, &[]).await;
    c.subscribe(CLUSTER, &[], &["*"], "").await;
    c.expect_silence(QUIET).await;
    c.subscribe(CLUSTER, &["*"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c1", "c2"]);
}
