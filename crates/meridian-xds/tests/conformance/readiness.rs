//! Readiness: a server whose source cannot serve yet (a replica that has
//! not caught up, on an empty or old data directory) refuses new streams
//! with UNAVAILABLE and never sends the empty or old state it holds; an
//! SotW LDS/CDS response from it would delete every listener and cluster
//! of the Envoy, a delta answer would list them in `removed_resources`.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meridian_xds::testing::TestServer;
use meridian_xds::types::{CLUSTER, LISTENER};
use meridian_xds::{MemorySource, XdsMetrics};

use super::support::{both, envoy, fast, s, start, Flavor, Stream};

both!(
    a_source_that_is_not_ready_refuses_new_streams,
    an_empty_source_that_is_not_ready_never_sends_an_empty_state,
    streams_open_before_readiness_was_lost_keep_their_config,
);

/// What the stream ended with: `Ok(names)` for a response, the status
/// code for an error.
async fn outcome(c: &mut Stream) -> Result<Vec<String>, tonic::Code> {
    match c.flavor() {
        Flavor::Sotw => match c.sotw().next_raw().await {
            Ok(Some(r)) => Ok(meridian_xds::testing::names(&r)),
            Ok(None) => Err(tonic::Code::Ok),
            Err(st) => Err(st.code()),
        },
        Flavor::Delta => match c.delta().next_raw().await {
            Ok(Some(r)) => {
                let mut n = meridian_xds::testing::delta_names(&r);
                n.extend(r.removed_resources.iter().map(|r| format!("removed:{r}")));
                Ok(n)
            }
            Ok(None) => Err(tonic::Code::Ok),
            Err(st) => Err(st.code()),
        },
    }
}

async fn a_source_that_is_not_ready_refuses_new_streams(f: Flavor) {
    let (src, srv) = start().await;
    src.set_not_ready("applied revision 3 behind the leader's 9");
    let mut ads = Stream::ads(f, srv.addr, envoy("ads")).await;
    ads.ask(CLUSTER, &[]).await;
    assert_eq!(outcome(&mut ads).await, Err(tonic::Code::Unavailable));
    let mut one = Stream::per_type(f, srv.addr, LISTENER, envoy("one")).await;
    one.ask(LISTENER, &[]).await;
    assert_eq!(outcome(&mut one).await, Err(tonic::Code::Unavailable));
    assert_eq!(XdsMetrics::get(&srv.server.metrics().refused_streams), 2);
    assert!(
        srv.server.status().is_empty(),
        "a refused stream is never registered"
    );
    // Once the source is ready, the same Envoy gets its config.
    src.set_ready();
    let mut again = Stream::ads(f, srv.addr, envoy("ads")).await;
    again.ask(CLUSTER, &[]).await;
    assert_eq!(outcome(&mut again).await, Ok(s(&["c1", "c2"])));
}

async fn an_empty_source_that_is_not_ready_never_sends_an_empty_state(f: Flavor) {
    // A replica started on an empty data directory: nothing in it yet.
    let src = Arc::new(MemorySource::new());
    src.set_not_ready("not a member of a cluster yet");
    let srv = TestServer::start(src.clone(), fast()).await;
    for t in [CLUSTER, LISTENER] {
        let mut c = Stream::ads(f, srv.addr, envoy("n")).await;
        match f {
            Flavor::Sotw => c.ask(t, &[]).await,
            // A reconnecting Envoy declares what it holds; an unready
            // server must not answer it with removals.
            Flavor::Delta => {
                let held = HashMap::from([("c1".to_string(), "0123456789abcdef".to_string())]);
                c.delta().resume(t, &[], held).await
            }
        }
        assert_eq!(outcome(&mut c).await, Err(tonic::Code::Unavailable), "{t}");
    }
}

async fn streams_open_before_readiness_was_lost_keep_their_config(f: Flavor) {
    let (src, srv) = start().await;
    let mut c = Stream::ads(f, srv.addr, envoy("n")).await;
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await;
    c.ack(&r).await;
    // The replica loses its leader: it stops taking new streams, but the
    // Envoys it serves keep their stream and their config.
    src.set_not_ready("no leader reachable");
    let mut late = Stream::ads(f, srv.addr, envoy("late")).await;
    late.ask(CLUSTER, &[]).await;
    assert_eq!(outcome(&mut late).await, Err(tonic::Code::Unavailable));
    c.ask(LISTENER, &[]).await;
    assert_eq!(c.expect().await.names, s(&["l1"]));
}

#[tokio::test]
async fn unary_fetch_from_a_source_that_is_not_ready_is_unavailable() {
    let (src, srv) = start().await;
    src.set_not_ready("catching up");
    let mut c = ClusterDiscoveryServiceClient::connect(format!("http://{}", srv.addr))
        .await
        .unwrap();
    let err = c
        .fetch_clusters(DiscoveryRequest {
            node: Some(envoy("f")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("catching up"), "{}", err.message());
}
