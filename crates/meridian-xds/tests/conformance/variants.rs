//! [Four Variants], node on the first request, per-type and per-stream nonces.

use meridian_xds::testing::fixtures::cluster;
use meridian_xds::testing::{names, node, SotwClient};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use meridian_xds::{SyncState, Viewer};

use super::support::{both, envoy, eventually, start, start_ads, Flavor, Stream, QUIET};

both!(
    all_four_variants,
    node_arrives_on_the_first_request_only,
    nonces_are_per_type_and_per_stream,
);

/// What each type serves in the base source, and the names a client asks for.
const CASES: [(&str, &[&str], &[&str]); 5] = [
    (CLUSTER, &[], &["c1", "c2"]),
    (ENDPOINT, &["c1"], &["c1"]),
    (LISTENER, &[], &["l1"]),
    (ROUTE, &["r1"], &["r1"]),
    (SECRET, &["s1"], &["s1"]),
];

async fn all_four_variants(f: Flavor) {
    let (_src, srv) = start().await;
    let mut ads = Stream::ads(f, srv.addr, envoy("ads")).await;
    for (t, ask, want) in CASES {
        ads.ask(t, ask).await;
        let r = ads.expect().await;
        assert_eq!(
            (r.type_url.as_str(), r.names),
            (t, want.iter().map(|s| s.to_string()).collect())
        );
        let mut one = Stream::per_type(f, srv.addr, t, envoy("per-type")).await;
        one.ask(t, ask).await;
        let r = one.expect().await;
        assert_eq!(
            (r.type_url.as_str(), r.names.clone()),
            (t, want.iter().map(|s| s.to_string()).collect())
        );
        match f {
            Flavor::Sotw => assert!(!r.nonce.is_empty() && !r.version().is_empty()),
            Flavor::Delta => assert!(
                !r.nonce.is_empty() && r.delta().resources.iter().all(|x| !x.version.is_empty())
            ),
        }
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

async fn node_arrives_on_the_first_request_only(f: Flavor) {
    let (src, srv) = start().await;
    src.update_view(&eu(), |v| v.insert("eu-only", cluster("eu-only", "v1")));
    let mut c = Stream::ads(f, srv.addr, node("n1", "edge", "eu")).await;
    c.ask(CLUSTER, &[]).await; // carries the node
    let r = c.expect().await;
    assert!(r.names.contains(&"eu-only".to_string()));
    c.ask(ENDPOINT, &["c1"]).await; // no node: the stream's viewer holds
    assert_eq!(c.expect().await.names, vec!["c1"]);
    let st = srv.server.status();
    match f {
        Flavor::Sotw => assert_eq!((st[0].node_id.as_str(), &st[0].viewer), ("n1", &eu())),
        Flavor::Delta => assert_eq!(st[0].viewer, eu()),
    }
    if f == Flavor::Delta {
        return;
    }
    // Absent locality and cluster: the server's region and the default group.
    let mut d = Stream::ads(f, srv.addr, node("n2", "", "")).await;
    d.ask(CLUSTER, &[]).await;
    assert_eq!(d.expect().await.names, vec!["c1", "c2"]);
    let st = srv.server.status();
    assert_eq!(
        st[1].viewer,
        Viewer {
            region: "home".into(),
            proxy_group: "default".into()
        }
    );
}

async fn nonces_are_per_type_and_per_stream(f: Flavor) {
    let (_src, srv, mut c) = start_ads(f).await;
    c.ask(CLUSTER, &[]).await;
    let cds = c.expect().await;
    c.ask(LISTENER, &[]).await;
    let lds = c.expect().await;
    assert_ne!(cds.nonce, lds.nonce);
    // The CDS nonce does not acknowledge LDS: for LDS it is stale.
    match f {
        Flavor::Sotw => {
            c.sotw()
                .request(LISTENER, &[], lds.version(), &cds.nonce)
                .await
        }
        Flavor::Delta => c.delta().subscribe(LISTENER, &[], &[], &cds.nonce).await,
    }
    c.expect_silence(QUIET).await;
    let st = srv.server.status();
    assert_eq!(st[0].types[LISTENER].state, SyncState::Stale);
    drop(c);
    // A new stream does not know the old stream's nonces: answered as new.
    let mut again = Stream::ads(f, srv.addr, envoy("n")).await;
    match f {
        Flavor::Sotw => {
            again
                .sotw()
                .request(CLUSTER, &[], cds.version(), &cds.nonce)
                .await;
            let r = again.expect().await;
            assert_eq!(
                r.version(),
                cds.version(),
                "content-hash versions are stable"
            );
        }
        Flavor::Delta => {
            again.delta().subscribe(CLUSTER, &[], &[], &cds.nonce).await;
            assert_eq!(again.expect().await.names, vec!["c1", "c2"]);
            assert!(eventually(|| srv.server.status().len() == 1).await);
        }
    }
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
