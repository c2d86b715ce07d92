//! The runner against Meridian's own xDS server (every check passes, the
//! push checks included), and against a deliberately broken server that
//! answers every request with the same response, ACKs and NACKs included
//! (the checks of those rules fail): the checks can fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use futures::{Stream, StreamExt};
use meridian_xds::testing::fixtures::{cluster, endpoints, listener, route};
use meridian_xds::testing::{node, TestServer};
use meridian_xds::{MemorySource, XdsConfig};
use meridian_xds_conformance::{run, Change, Outcome, Target, Verdict};

fn target(addr: std::net::SocketAddr, change: Option<Arc<dyn Change>>) -> Arc<Target> {
    Arc::new(Target {
        addr,
        node: node("conformance", "", ""),
        wait: Duration::from_secs(5),
        quiet: Duration::from_millis(400),
        change,
    })
}

/// Step 0 gives cluster c1 new content, step 1 puts it back.
struct Retag(Arc<MemorySource>);

impl Change for Retag {
    fn change(&self, step: u32) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let tag = if step == 0 { "v2" } else { "v1" };
        self.0.update(|v| v.insert("c1", cluster("c1", tag)));
        Box::pin(async { Ok(()) })
    }
}

fn failures(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.id)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meridian_xds_passes_every_check() {
    let src = Arc::new(MemorySource::new());
    src.update(|v| {
        for c in ["c1", "c2"] {
            v.insert(c, cluster(c, "v1"));
            v.insert(c, endpoints(c, "v1"));
        }
        v.insert("l1", listener("l1", "r1", "v1"));
        v.insert("r1", route("r1", "v1"));
    });
    let config = XdsConfig {
        debounce_quiet: Duration::from_millis(20),
        debounce_max: Duration::from_millis(200),
        ..Default::default()
    };
    let srv = TestServer::start(src.clone(), config).await;
    let outcomes = run(target(srv.addr, Some(Arc::new(Retag(src)))), None).await;
    assert_eq!(failures(&outcomes), Vec::<String>::new());
    let skipped: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o.result, Ok(Verdict::Skip(_))))
        .map(|o| o.id)
        .collect();
    assert!(
        skipped.is_empty(),
        "nothing is skipped with this config: {skipped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_checks_are_skipped_without_a_way_to_change_the_config() {
    let src = Arc::new(MemorySource::new());
    src.update(|v| v.insert("c1", cluster("c1", "v1")));
    let srv = TestServer::start(src, XdsConfig::default()).await;
    let outcomes = run(target(srv.addr, None), Some("push-after-change")).await;
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.result, Ok(Verdict::Skip(_)))),
        "{outcomes:?}"
    );
}

/// Answers every request, whatever it says, with one cluster at one version.
struct Echo;

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Echo {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Out<DiscoveryResponse>>, tonic::Status> {
        let mut n = 0u64;
        let out = req.into_inner().map(move |r| {
            let r = r?;
            n += 1;
            Ok(DiscoveryResponse {
                type_url: r.type_url,
                version_info: "1".into(),
                nonce: n.to_string(),
                resources: vec![cluster("c1", "v1")],
                ..Default::default()
            })
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn delta_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Out<DeltaDiscoveryResponse>>, tonic::Status> {
        let mut n = 0u64;
        let out = req.into_inner().map(move |r| {
            let r = r?;
            n += 1;
            Ok(DeltaDiscoveryResponse {
                type_url: r.type_url,
                nonce: n.to_string(),
                resources: vec![Resource {
                    name: "c1".into(),
                    version: "1".into(),
                    resource: Some(cluster("c1", "v1")),
                    ..Default::default()
                }],
                ..Default::default()
            })
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_acks_and_nacks_fails_those_checks() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(Echo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let outcomes = run(target(addr, None), None).await;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failed())
        .map(|o| o.id)
        .collect();
    for rule in [
        "sotw.cds.ack-not-answered",
        "sotw.cds.nack-not-answered",
        "sotw.cds.stale-nonce-ignored",
        "delta.cds.ack-not-answered",
        "delta.cds.nack-not-answered",
        "delta.cds.held-versions-not-resent",
    ] {
        assert!(
            failed.contains(&rule),
            "{rule} should fail against the echo server; failed: {failed:?}"
        );
    }
    // It does answer a first request properly: those checks pass.
    let first = outcomes
        .iter()
        .find(|o| o.id == "sotw.cds.first-request-answered")
        .unwrap();
    assert_eq!(first.result, Ok(Verdict::Pass), "{first:?}");
}

/// Claims to change the config and does not.
struct Nothing;

impl Change for Nothing {
    fn change(&self, _step: u32) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_reaches_no_stream_fails_the_push_checks() {
    let src = Arc::new(MemorySource::new());
    src.update(|v| v.insert("c1", cluster("c1", "v1")));
    let srv = TestServer::start(src, XdsConfig::default()).await;
    let outcomes = run(
        target(srv.addr, Some(Arc::new(Nothing))),
        Some("push-after-change"),
    )
    .await;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(Outcome::failed), "{outcomes:?}");
}
