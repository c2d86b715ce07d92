//! Push control: debounce, concurrency limit, connection age, limits, metrics.

use std::time::{Duration, Instant};

use meridian_xds::testing::fixtures::cluster;
use meridian_xds::testing::{names, DeltaClient, SotwClient, TestServer};
use meridian_xds::types::{CLUSTER, LISTENER};
use meridian_xds::{Variant, XdsConfig, XdsMetrics};

use super::support::{delta_acked, envoy, eventually, fast, sotw_acked_clusters, source, QUIET};

/// [`fast`] but for the debounce under test.
fn debounced(quiet: Duration, max: Duration) -> XdsConfig {
    XdsConfig {
        debounce_quiet: quiet,
        debounce_max: max,
        ..fast()
    }
}

#[tokio::test]
async fn changes_are_debounced_and_coalesced() {
    // Generous quiet period: a loaded 2-core CI machine must not split the burst.
    let cfg = debounced(Duration::from_millis(300), Duration::from_secs(3));
    let src = source();
    let srv = TestServer::start(src.clone(), cfg).await;
    let mut c = sotw_acked_clusters(&srv).await;
    let mut d = delta_acked(&srv, "d", CLUSTER, &[]).await;
    for i in 0..10 {
        src.upsert(&format!("n{i}"), cluster(&format!("n{i}"), "v1"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        names(&c.expect_response().await).len(),
        12,
        "one push with the final state"
    );
    assert_eq!(d.expect_response().await.resources.len(), 10);
    c.expect_silence(QUIET).await;
    d.expect_silence(QUIET).await;
    assert!(XdsMetrics::get(&srv.server.metrics().debounce_merges) >= 8);
}

#[tokio::test]
async fn debounce_max_bounds_the_delay_under_steady_writes() {
    let cfg = debounced(Duration::from_millis(100), Duration::from_millis(300));
    let src = source();
    let srv = TestServer::start(src.clone(), cfg).await;
    let mut c = sotw_acked_clusters(&srv).await;
    let writer = {
        let src = src.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                src.upsert(&format!("w{i}"), cluster(&format!("w{i}"), "v1"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let t = Instant::now();
    let _ = c.expect_response().await;
    // Writes go on for 3 s; without the max the push would wait for them all.
    assert!(
        t.elapsed() < Duration::from_millis(2_500),
        "pushed after {:?} while writes continued",
        t.elapsed()
    );
    writer.abort();
}

/// A source whose changes are all endpoint churn: its config generation
/// never moves.
struct EndpointChurn(std::sync::Arc<meridian_xds::MemorySource>);

impl meridian_xds::SnapshotSource for EndpointChurn {
    fn snapshot(
        &self,
        viewer: &meridian_xds::Viewer,
    ) -> std::sync::Arc<meridian_xds::ViewSnapshot> {
        self.0.snapshot(viewer)
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes()
    }
    fn config_generation(&self) -> u64 {
        0
    }
}

/// Under steady writes that never leave 100 ms of quiet, endpoint-only
/// changes are pushed within the short endpoint bound while config changes
/// wait for the long one.
#[tokio::test]
async fn endpoint_only_changes_use_the_shorter_bound() {
    let cfg = XdsConfig {
        debounce_max_endpoints: Duration::from_millis(200),
        ..debounced(Duration::from_millis(100), Duration::from_secs(30))
    };
    for endpoint_only in [true, false] {
        let src = source();
        let served: std::sync::Arc<dyn meridian_xds::SnapshotSource> = if endpoint_only {
            std::sync::Arc::new(EndpointChurn(src.clone()))
        } else {
            src.clone()
        };
        let srv = TestServer::start_with(served, cfg.clone()).await;
        let mut c = sotw_acked_clusters(&srv).await;
        let writer = {
            let src = src.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    src.upsert(&format!("w{i}"), cluster(&format!("w{i}"), "v1"));
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        };
        if endpoint_only {
            // expect_response waits up to 5 s; writes never stop.
            let r = c.expect_response().await;
            assert!(names(&r).len() > 2, "pushed while writes continued");
        } else {
            c.expect_silence(Duration::from_secs(3)).await;
        }
        writer.abort();
    }
}

#[tokio::test]
async fn push_concurrency_is_limited() {
    let cfg = XdsConfig {
        push_concurrency: 1,
        ..fast()
    };
    let src = source();
    let srv = TestServer::start(src.clone(), cfg).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = SotwClient::ads(srv.addr, envoy(&format!("n{i}")))
            .await
            .unwrap();
        c.request(CLUSTER, &[], "", "").await;
        let r = c.expect_response().await;
        c.ack(&r, &[]).await;
        clients.push(c);
    }
    src.upsert("c3", cluster("c3", "v1"));
    for c in &mut clients {
        assert_eq!(names(&c.expect_response().await).len(), 3);
    }
    let m = srv.server.metrics();
    assert_eq!(
        m.pushes_in_flight_max
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(XdsMetrics::get(&m.pushes), 20);
}

#[tokio::test]
async fn max_connection_age_ends_streams_so_envoys_rebalance() {
    let cfg = XdsConfig {
        max_connection_age: Some(Duration::from_millis(500)),
        ..fast()
    };
    let srv = TestServer::start(source(), cfg).await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let _ = c.expect_response().await;
    assert!(c.ended_within(Duration::from_secs(5)).await);
    let mut d = DeltaClient::ads(srv.addr, envoy("d")).await.unwrap();
    d.subscribe(CLUSTER, &[], &[], "").await;
    let _ = d.expect_response().await;
    assert!(d.ended_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let cfg = XdsConfig {
        max_request_bytes: 1024,
        ..fast()
    };
    let srv = TestServer::start(source(), cfg).await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    let many: Vec<String> = (0..200).map(|i| format!("endpoint-name-{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    c.request(CLUSTER, &refs, "", "").await;
    // Ended with a status that says why, not with OK.
    let code = c.next_raw().await.map(|_| ()).map_err(|s| s.code());
    assert_eq!(code, Err(tonic::Code::OutOfRange));
    assert!(srv.server.status().iter().all(|p| p.types.is_empty()));
}

#[tokio::test]
async fn metrics_count_streams_by_type_and_variant() {
    let srv = TestServer::start(source(), fast()).await;
    let m = srv.server.metrics();
    let c = sotw_acked_clusters(&srv).await;
    let mut d = DeltaClient::per_type(srv.addr, LISTENER, envoy("d"))
        .await
        .unwrap();
    d.subscribe(LISTENER, &[], &[], "").await;
    let _ = d.expect_response().await;
    assert!(eventually(|| XdsMetrics::get(&m.acks) == 1).await);
    assert_eq!(
        (
            m.streams(Variant::SotwAds),
            m.streams(Variant::DeltaPerType)
        ),
        (1, 1)
    );
    assert_eq!(
        (
            m.subscribed(CLUSTER, Variant::SotwAds),
            m.subscribed(LISTENER, Variant::DeltaPerType)
        ),
        (1, 1)
    );
    assert_eq!(XdsMetrics::get(&m.responses), 2);
    drop(c);
    drop(d);
    assert!(
        eventually(|| m.streams(Variant::SotwAds) == 0
            && m.subscribed(LISTENER, Variant::DeltaPerType) == 0)
        .await
    );
}
