//! [Four Variants], node on the first request, per-type and per-stream nonces.

use meridian_xds::testing::fixtures::cluster;
use meridian_xds::testing::{delta_names, names, node, DeltaClient, SotwClient};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use meridian_xds::{SyncState, Viewer};

use super::support::{envoy, eventually, start, QUIET};

/// What each type serves in the base source, and the names a client asks for.
const CASES: [(&str, &[&str], &[&str]); 5] = [
    (CLUSTER, &[], &["c1", "c2"]),
    (ENDPOINT, &["c1"], &["c1"]),
    (LISTENER, &[], &["l1"]),
    (ROUTE, &["r1"], &["r1"]),
    (SECRET, &["s1"], &["s1"]),
];

#[tokio::test]
async fn all_four_variants_sotw() {
    let (_src, srv) = start().await;
    let mut ads = SotwClient::ads(srv.addr, envoy("ads")).await.unwrap();
    for (t, ask, want) in CASES {
        ads.request(t, ask, "", "").await;
        let r = ads.expect_response().await;
        assert_eq!(
            (r.type_url.as_str(), names(&r)),
            (t, want.iter().map(|s| s.to_string()).collect())
        );
        let mut one = SotwClient::per_type(srv.addr, t, envoy("per-type"))
            .await
            .unwrap();
        one.request(t, ask, "", "").await;
        let r = one.expect_response().await;
        assert_eq!(
            (r.type_url.as_str(), names(&r)),
            (t, want.iter().map(|s| s.to_string()).collect())
        );
        assert!(!r.nonce.is_empty() && !r.version_info.is_empty());
    }
}

#[tokio::test]
async fn all_four_variants_delta() {
    let (_src, srv) = start().await;
    let mut ads = DeltaClient::ads(srv.addr, envoy("ads")).await.unwrap();
    for (t, ask, want) in CASES {
        ads.subscribe(t, ask, &[], "").await;
        let r = ads.expect_response().await;
        assert_eq!(
            (r.type_url.as_str(), delta_names(&r)),
            (t, want.iter().map(|s| s.to_string()).collect())
        );
        let mut one = DeltaClient::per_type(srv.addr, t, envoy("per-type"))
            .await
            .unwrap();
        one.subscribe(t, ask, &[], "").await;
        let r = one.expect_response().await;
        assert_eq!(
            (r.type_url.as_str(), delta_names(&r)),
            (t, want.iter().map(|s| s.to_string()).collect())
        );
        assert!(!r.nonce.is_empty() && r.resources.iter().all(|x| !x.version.is_empty()));
    }
}

#[tokio::test]
async fn per_type_service_rejects_another_type() {
    let (_src, srv) = start().await;
    let mut c = SotwClient::per_type(srv.addr, CLUSTER, envoy("x"))
        .await
        .unwrap();
    c.request(LISTENER, &[], "", "").await;
    assert_eq!(
        c.next_raw().await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

fn eu() -> Viewer {
    Viewer {
        region: "eu".into(),
        proxy_group: "edge".into(),
    }
}

#[tokio::test]
async fn node_arrives_on_the_first_request_only_sotw() {
    let (src, srv) = start().await;
    src.update_view(&eu(), |v| v.insert("eu-only", cluster("eu-only", "v1")));
    let mut c = SotwClient::ads(srv.addr, node("n1", "edge", "eu"))
        .await
        .unwrap();
    c.request(CLUSTER, &[], "", "").await; // carries the node
    let r = c.expect_response().await;
    assert!(names(&r).contains(&"eu-only".to_string()));
    c.request(ENDPOINT, &["c1"], "", "").await; // no node: the stream's viewer holds
    assert_eq!(names(&c.expect_response().await), vec!["c1"]);
    let st = srv.server.status();
    assert_eq!((st[0].node_id.as_str(), &st[0].viewer), ("n1", &eu()));
    // Absent locality and cluster: the server's region and the default group.
    let mut d = SotwClient::ads(srv.addr, node("n2", "", "")).await.unwrap();
    d.request(CLUSTER, &[], "", "").await;
    assert_eq!(names(&d.expect_response().await), vec!["c1", "c2"]);
    let st = srv.server.status();
    assert_eq!(
        st[1].viewer,
        Viewer {
            region: "home".into(),
            proxy_group: "default".into()
        }
    );
}

#[tokio::test]
async fn node_arrives_on_the_first_request_only_delta() {
    let (src, srv) = start().await;
    src.update_view(&eu(), |v| v.insert("eu-only", cluster("eu-only", "v1")));
    let mut c = DeltaClient::ads(srv.addr, node("n1", "edge", "eu"))
        .await
        .unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    assert!(delta_names(&c.expect_response().await).contains(&"eu-only".to_string()));
    c.subscribe(ENDPOINT, &["c1"], &[], "").await;
    assert_eq!(delta_names(&c.expect_response().await), vec!["c1"]);
    assert_eq!(srv.server.status()[0].viewer, eu());
}

#[tokio::test]
async fn nonces_are_per_type_and_per_stream_sotw() {
    let (_src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let cds = c.expect_response().await;
    c.request(LISTENER, &[], "", "").await;
    let lds = c.expect_response().await;
    assert_ne!(cds.nonce, lds.nonce);
    // The CDS nonce does not acknowledge LDS: for LDS it is stale.
    c.request(LISTENER, &[], &lds.version_info, &cds.nonce)
        .await;
    c.expect_silence(QUIET).await;
    let st = srv.server.status();
    assert_eq!(st[0].types[LISTENER].state, SyncState::Stale);
    drop(c);
    // A new stream does not know the old stream's nonces: answered as new.
    let mut again = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    again
        .request(CLUSTER, &[], &cds.version_info, &cds.nonce)
        .await;
    let r = again.expect_response().await;
    assert_eq!(
        r.version_info, cds.version_info,
        "content-hash versions are stable"
    );
}

#[tokio::test]
async fn nonces_are_per_type_and_per_stream_delta() {
    let (_src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let cds = c.expect_response().await;
    c.subscribe(LISTENER, &[], &[], "").await;
    let lds = c.expect_response().await;
    assert_ne!(cds.nonce, lds.nonce);
    c.subscribe(LISTENER, &[], &[], &cds.nonce).await;
    c.expect_silence(QUIET).await;
    assert_eq!(
        srv.server.status()[0].types[LISTENER].state,
        SyncState::Stale
    );
    drop(c);
    let mut again = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    again.subscribe(CLUSTER, &[], &[], &cds.nonce).await;
    assert_eq!(
        delta_names(&again.expect_response().await),
        vec!["c1", "c2"]
    );
    assert!(eventually(|| srv.server.status().len() == 1).await);
}

#[tokio::test]
async fn unary_fetch_returns_the_current_state() {
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let (_src, srv) = start().await;
    let mut c = ClusterDiscoveryServiceClient::connect(format!("http://{}", srv.addr))
        .await
        .unwrap();
    let r = c
        .fetch_clusters(DiscoveryRequest {
            node: Some(envoy("f")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), vec!["c1", "c2"]);
    let r = c
        .fetch_clusters(DiscoveryRequest {
            resource_names: vec!["c2".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), vec!["c2"]);
}
