//! Status and liveness: CSDS, proxy-status, no TTL, drain, initial answers,
//! shared state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use futures::StreamExt;
use meridian_xds::testing::fixtures::cluster;
use meridian_xds::testing::TestServer;
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use meridian_xds::{MemorySource, SnapshotSource, SyncState, Viewer, XdsConfig};

use super::support::{both, envoy, fast, source, start, start_ads, Flavor, Stream, QUIET};

both!(
    csds_reports_per_resource_status,
    proxy_status_synced_stale_nacked_not_sent,
    no_ttl_and_drain_leaves_envoy_its_config,
    initial_request_is_answered_at_once,
    stalled_stream_does_not_block_others,
);

/// CDS acked, EDS sent but not acked plus a missing name, LDS nacked;
/// SotW also asks RDS for a name that does not exist.
async fn mixed(c: &mut Stream) {
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await;
    c.ack(&r).await;
    c.ask(ENDPOINT, &["c1", "missing"]).await;
    let _ = c.expect().await;
    c.ask(LISTENER, &[]).await;
    let r = c.expect().await;
    c.nack(&r, "", "listener l1: bad filter").await;
    if c.flavor() == Flavor::Sotw {
        c.ask(ROUTE, &["nope"]).await;
    }
    c.expect_silence(QUIET).await;
}

const SCOPED: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";

fn status_of(
    resp: &envoy_types::pb::envoy::service::status::v3::ClientStatusResponse,
    type_url: &str,
    name: &str,
) -> (ClientResourceStatus, String) {
    let cfg = &resp.config[0];
    let g = cfg
        .generic_xds_configs
        .iter()
        .find(|g| g.type_url == type_url && g.name == name)
        .unwrap_or_else(|| panic!("{type_url} {name} in CSDS"));
    (
        ClientResourceStatus::try_from(g.client_status).unwrap(),
        g.error_state
            .as_ref()
            .map(|e| e.details.clone())
            .unwrap_or_default(),
    )
}

async fn check_csds(srv: &TestServer, node_id: &str) {
    let mut csds = ClientStatusDiscoveryServiceClient::connect(format!("http://{}", srv.addr))
        .await
        .unwrap();
    let resp = csds
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.config.len(), 1);
    assert_eq!(resp.config[0].node.as_ref().unwrap().id, node_id);
    assert_eq!(
        status_of(&resp, CLUSTER, "c1").0,
        ClientResourceStatus::Acked
    );
    assert_eq!(
        status_of(&resp, ENDPOINT, "c1").0,
        ClientResourceStatus::Requested
    );
    assert_eq!(
        status_of(&resp, ENDPOINT, "missing").0,
        ClientResourceStatus::DoesNotExist
    );
    assert_eq!(
        status_of(&resp, LISTENER, "l1"),
        (
            ClientResourceStatus::Nacked,
            "listener l1: bad filter".to_string()
        )
    );
    // Node matchers filter; the streaming variant answers each request.
    let matcher = |p: &str| ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix(p.to_string())),
                ignore_case: false,
            }),
            node_metadatas: vec![],
        }],
        ..Default::default()
    };
    let reqs = futures::stream::iter(vec![matcher("other"), matcher(&node_id[..3])]);
    let mut out = csds.stream_client_status(reqs).await.unwrap().into_inner();
    assert_eq!(out.next().await.unwrap().unwrap().config.len(), 0);
    assert_eq!(out.next().await.unwrap().unwrap().config.len(), 1);
}

fn node_id(f: Flavor) -> &'static str {
    match f {
        Flavor::Sotw => "envoy-sotw",
        Flavor::Delta => "envoy-delta",
    }
}

async fn csds_reports_per_resource_status(f: Flavor) {
    let (_src, srv) = start().await;
    let mut c = Stream::ads(f, srv.addr, envoy(node_id(f))).await;
    mixed(&mut c).await;
    check_csds(&srv, node_id(f)).await;
}

async fn proxy_status_synced_stale_nacked_not_sent(f: Flavor) {
    let (_src, srv, mut c) = start_ads(f).await;
    mixed(&mut c).await;
    // SotW: RDS asked for a name that does not exist; delta: wildcard over
    // a type with no resources. Either way nothing to send yet.
    let unsent = match f {
        Flavor::Sotw => ROUTE,
        Flavor::Delta => {
            c.ask(SCOPED, &[]).await;
            c.expect_silence(QUIET).await;
            SCOPED
        }
    };
    let st = srv.server.status();
    let t = &st[0].types;
    assert_eq!(
        [
            t[CLUSTER].state,
            t[ENDPOINT].state,
            t[LISTENER].state,
            t[unsent].state
        ],
        [
            SyncState::Synced,
            SyncState::Stale,
            SyncState::Nacked,
            SyncState::NotSent
        ]
    );
    if f == Flavor::Sotw {
        assert!(t[CLUSTER].last_ack.is_some());
        assert_eq!(t[CLUSTER].acked_version, t[CLUSTER].sent_version);
    }
}

async fn no_ttl_and_drain_leaves_envoy_its_config(f: Flavor) {
    let (_src, srv, mut c) = start_ads(f).await;
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await;
    match f {
        Flavor::Sotw => {
            c.ack(&r).await;
            srv.server.drain();
            // The stream ends without any "empty config" response before it.
            let next = c.sotw().next_raw().await;
            assert!(
                matches!(next, Ok(None) | Err(_)),
                "no response after drain: {next:?}"
            );
        }
        Flavor::Delta => {
            assert!(
                r.delta().resources.iter().all(|x| x.ttl.is_none()),
                "resources carry no TTL"
            );
            c.ack(&r).await;
            let shutdown = tokio::spawn(srv.shutdown());
            assert!(c.delta().ended_within(Duration::from_secs(5)).await);
            shutdown.await.unwrap().unwrap();
        }
    }
}

async fn initial_request_is_answered_at_once(f: Flavor) {
    let slow = XdsConfig {
        debounce_quiet: Duration::from_secs(5),
        debounce_max: Duration::from_secs(10),
        ..fast()
    };
    let srv = TestServer::start(source(), slow).await;
    let t = Instant::now();
    let mut c = Stream::ads(f, srv.addr, envoy("n")).await;
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await;
    match f {
        Flavor::Sotw => assert_eq!(r.names, vec!["c1", "c2"]),
        Flavor::Delta => assert_eq!(r.delta().resources.len(), 2),
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "well inside Envoy's 15 s initial fetch timeout"
    );
}

#[tokio::test]
async fn resources_are_encoded_once_and_shared_by_view() {
    let src = source();
    let a = src.snapshot(&Viewer {
        region: "x".into(),
        proxy_group: "g".into(),
    });
    let b = src.snapshot(&Viewer {
        region: "y".into(),
        proxy_group: "h".into(),
    });
    assert!(
        Arc::ptr_eq(&a, &b),
        "viewers of the same view share one snapshot"
    );
    src.upsert("c3", cluster("c3", "v1"));
    let c = src.snapshot(&Viewer {
        region: "x".into(),
        proxy_group: "g".into(),
    });
    assert!(
        Arc::ptr_eq(&a.resources(CLUSTER)["c1"], &c.resources(CLUSTER)["c1"]),
        "unchanged resources keep their encoding"
    );
}

fn big_source() -> Arc<MemorySource> {
    let src = source();
    src.update(|v| {
        for i in 0..200 {
            v.insert(
                format!("big{i}"),
                cluster(&format!("big{i}"), &"x".repeat(2_000)),
            );
        }
    });
    src
}

async fn stalled_stream_does_not_block_others(f: Flavor) {
    let src = big_source();
    let srv = TestServer::start(src.clone(), fast()).await;
    let mut stalled = Stream::ads(f, srv.addr, envoy("stalled")).await;
    stalled.ask(CLUSTER, &[]).await; // and never reads again
    let mut live = Stream::ads(f, srv.addr, envoy("live")).await;
    live.ask(CLUSTER, &[]).await;
    let mut r = live.expect().await;
    for gen in 0..30 {
        live.ack(&r).await;
        src.update(|v| {
            for i in 0..200 {
                v.insert(
                    format!("big{i}"),
                    cluster(&format!("big{i}"), &format!("{gen}{}", "y".repeat(2_000))),
                );
            }
        });
        r = live.expect().await;
    }
    if f == Flavor::Sotw {
        let _ = srv.server.status(); // status never waits on a stream either
    }
}

/// The status of Envoy `node`'s newest stream, once it has one for `t`.
async fn newest_status(srv: &TestServer, node: &str, t: &str) -> meridian_xds::ProxyStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = srv.server.status();
        if let Some(p) = st
            .into_iter()
            .filter(|p| p.node_id == node && p.types.contains_key(t))
            .max_by_key(|p| p.stream_id)
        {
            return p;
        }
        assert!(Instant::now() < deadline, "no stream of {node} for {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Property: a delta Envoy that reconnects holding the current versions
/// (to the same server after a restart, or to another one serving the same
/// config: a moved Envoy) is sent nothing, and status says SYNCED with the
/// version it holds, the one the first stream showed, and the revision it
/// runs; holding an old version it is STALE until it is answered, never
/// "not sent".
#[tokio::test]
async fn delta_reconnect_at_current_versions_is_synced_with_its_version() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use meridian_xds::testing::DeltaClient;
    let (src, srv) = start().await;
    let other = TestServer::start(src.clone(), fast()).await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    c.subscribe(CLUSTER, &[], &[], "").await;
    let cds = c.expect_response().await;
    c.ack(&cds).await;
    c.expect_silence(QUIET).await;
    let first = newest_status(&srv, "n", CLUSTER).await;
    let first = first.types[CLUSTER].clone();
    assert_eq!(first.state, SyncState::Synced);
    drop(c);
    let versions = |r: &DeltaDiscoveryResponse| {
        r.resources
            .iter()
            .map(|x| (x.name.clone(), x.version.clone()))
            .collect::<std::collections::HashMap<String, String>>()
    };
    for (to, what) in [(&srv, "the same server"), (&other, "another server")] {
        let mut again = DeltaClient::ads(to.addr, envoy("n")).await.unwrap();
        again.resume(CLUSTER, &[], versions(&cds)).await;
        again.expect_silence(QUIET).await;
        let p = newest_status(to, "n", CLUSTER).await;
        let t = &p.types[CLUSTER];
        assert_eq!(t.state, SyncState::Synced, "{what}: {t:?}");
        assert!(t.sent_version.is_some(), "{what}: no version shown");
        assert_eq!(t.sent_version, first.sent_version, "{what}");
        assert_eq!(t.acked_version, t.sent_version, "{what}");
        assert!(t.last_ack.is_some(), "{what}");
        assert_eq!(p.synced_revision(), Some(src.revision()), "{what}");
    }
    // Holding an old version of c1: stale until the answer is ACKed.
    let mut held = versions(&cds);
    held.insert("c1".into(), "00000000000000aa".into());
    let mut stale = DeltaClient::ads(other.addr, envoy("m")).await.unwrap();
    stale.resume(CLUSTER, &[], held).await;
    let r = stale.expect_response().await;
    assert_eq!(meridian_xds::testing::delta_names(&r), vec!["c1"]);
    let p = newest_status(&other, "m", CLUSTER).await;
    assert_eq!(p.types[CLUSTER].state, SyncState::Stale);
    assert_eq!(p.synced_revision(), None);
    stale.ack(&r).await;
    stale.expect_silence(QUIET).await;
    let p = newest_status(&other, "m", CLUSTER).await;
    assert_eq!(p.types[CLUSTER].state, SyncState::Synced);
}
