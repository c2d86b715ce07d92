use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use meridian_xds::testing::fixtures::{cluster, endpoints, listener, route, secret};
use meridian_xds::testing::{node, DeltaClient, SotwClient, TestServer};
use meridian_xds::types::CLUSTER;
use meridian_xds::{MemorySource, XdsConfig};

/// Longer than a debounce in [`fast`]: silence this long means "not sent".
pub const QUIET: Duration = Duration::from_millis(300);

/// Short debounce so tests run quickly.
pub fn fast() -> XdsConfig {
    XdsConfig {
        debounce_quiet: Duration::from_millis(20),
        debounce_max: Duration::from_millis(200),
        removal_grace: Duration::from_millis(100),
        region: "home".to_string(),
        ..Default::default()
    }
}

/// Clusters c1, c2 with endpoints, listener l1 routing via r1, secret s1.
pub fn source() -> Arc<MemorySource> {
    let src = Arc::new(MemorySource::new());
    src.update(|v| {
        for c in ["c1", "c2"] {
            v.insert(c, cluster(c, "v1"));
            v.insert(c, endpoints(c, "v1"));
        }
        v.insert("l1", listener("l1", "r1", "v1"));
        v.insert("r1", route("r1", "v1"));
        v.insert("s1", secret("s1", "v1"));
    });
    src
}

pub async fn start() -> (Arc<MemorySource>, TestServer) {
    let src = source();
    let srv = TestServer::start(src.clone(), fast()).await;
    (src, srv)
}

/// [`start`], and one ADS stream of flavor `f` from Envoy `n`.
pub async fn start_ads(f: Flavor) -> (Arc<MemorySource>, TestServer, Stream) {
    let (src, srv) = start().await;
    let c = Stream::ads(f, srv.addr, envoy("n")).await;
    (src, srv, c)
}

pub fn envoy(id: &str) -> Node {
    node(id, "", "")
}

/// A SotW ADS client, Envoy `n`, that has ACKed the clusters of `srv`: what
/// it receives next is a push.
pub async fn sotw_acked_clusters(srv: &TestServer) -> SotwClient {
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.request(CLUSTER, &[], "", "").await;
    let r = c.expect_response().await;
    c.ack(&r, &[]).await;
    c
}

/// A delta ADS client, Envoy `id`, that subscribed to `names` of `type_url`
/// on `srv` and ACKed the answer: what it receives next is a push.
pub async fn delta_acked(srv: &TestServer, id: &str, type_url: &str, names: &[&str]) -> DeltaClient {
    let mut c = DeltaClient::ads(srv.addr, envoy(id)).await.unwrap();
    c.subscribe(type_url, names, &[], "").await;
    let r = c.expect_response().await;
    c.ack(&r).await;
    c
}

/// Polls `f` for up to 5 s.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

mod xds;
pub(crate) use xds::both;
pub use xds::{s, Flavor, Stream};
