//! xDS readiness with real `meridian` processes: a controller that has not
//! caught up with the cluster (here: one that joins on an empty data
//! directory while replication to it is held back) refuses new xDS streams
//! with UNAVAILABLE and never answers with the empty state it holds. An
//! empty SotW CDS/LDS response would delete every cluster and listener of
//! the Envoy that asked. With a real Envoy: one that fails over to a
//! controller with an empty data directory removes nothing (its own
//! `/stats`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_tests::bootstrap::{AdsVariant, BootstrapSpec};
use meridian_tests::cluster::http_get;
use meridian_tests::envoy::{batch, wait_all_ok, Envoy};
use meridian_tests::ops::{edge_ops, put_op};
use meridian_tests::upstream::Upstream;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use meridian_xds::testing::{delta_names, names, node, DeltaClient, SotwClient};
use meridian_xds::types::CLUSTER;
use serde_json::json;

async fn put_service(c: &Cluster, name: &str, port: u16) {
    let spec = json!({"port": port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]});
    c.apply_ops(vec![put_op("service", name, spec)]).await;
}

/// One Envoy-like first request for every cluster; what came back: the
/// names, or the error code. `None`: the listener is not up yet.
async fn ask_clusters(addr: SocketAddr, delta: bool) -> Option<Result<Vec<String>, tonic::Code>> {
    let envoy = node("edge-1", "", "us-east");
    if delta {
        let mut c = DeltaClient::ads(addr, envoy).await.ok()?;
        c.subscribe(CLUSTER, &[], &[], "").await;
        Some(match c.next_raw().await {
            Ok(Some(r)) => {
                let mut n = delta_names(&r);
                n.extend(r.removed_resources.iter().map(|r| format!("removed:{r}")));
                Ok(n)
            }
            Ok(None) => Err(tonic::Code::Ok),
            Err(st) => Err(st.code()),
        })
    } else {
        let mut c = SotwClient::ads(addr, envoy).await.ok()?;
        c.request(CLUSTER, &[], "", "").await;
        Some(match c.next_raw().await {
            Ok(Some(r)) => Ok(names(&r)),
            Ok(None) => Err(tonic::Code::Ok),
            Err(st) => Err(st.code()),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_joining_on_an_empty_data_dir_never_serves_an_empty_view() {
    let mut c = Cluster::start(2, ClusterOpts::default()).await;
    put_service(&c, "web", 8080).await;
    // Hold back replication to the node about to join, so it stays a
    // replica with nothing in it for as long as this test looks.
    let new_id = c.nodes.iter().map(|n| n.id).max().unwrap() + 1;
    for id in c.running_ids() {
        c.set_faults(id, &format!(r#"{{"isolated_from": [{new_id}]}}"#))
            .await;
    }
    let id = c.add_node().await;
    assert_eq!(id, new_id);
    let addr: SocketAddr = format!("127.0.0.1:{}", c.node(id).ports.xds)
        .parse()
        .unwrap();

    let until = Instant::now() + Duration::from_secs(4);
    let mut refused = 0;
    while Instant::now() < until {
        for delta in [false, true] {
            match ask_clusters(addr, delta).await {
                None => {}
                Some(Err(tonic::Code::Unavailable)) => refused += 1,
                Some(other) => {
                    panic!("a controller with no state answered (delta: {delta}): {other:?}")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused > 0,
        "the new controller's xDS listener never answered"
    );
    let (code, body) = http_get(&c.node(id).admin_url("/readyz")).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("member") || body.contains("xDS"),
        "the reason is named: {body}"
    );
    let (_, metrics) = http_get(&c.node(id).admin_url("/metrics")).await.unwrap();
    assert!(metrics.contains("meridian_xds_ready 0"), "{metrics}");
    assert!(
        !metrics.contains("meridian_xds_refused_streams_total 0\n"),
        "{metrics}"
    );

    // Replication resumes: the controller catches up and then serves the
    // cluster's config, not an empty one.
    for id in c.running_ids() {
        c.set_faults(id, "{}").await;
    }
    let healed = Instant::now();
    for delta in [false, true] {
        let got = eventually(
            "the caught-up controller to serve its clusters",
            Duration::from_secs(60),
            || async move {
                match ask_clusters(addr, delta).await? {
                    Ok(n) => Some(n),
                    Err(tonic::Code::Unavailable) => None,
                    Err(other) => panic!("unexpected end of stream: {other:?}"),
                }
            },
        )
        .await;
        assert!(
            got.iter().any(|n| n.contains("web")),
            "delta: {delta}: {got:?}"
        );
        assert!(got.iter().all(|n| !n.starts_with("removed:")), "{got:?}");
    }
    eprintln!(
        "served its clusters {:?} after replication resumed",
        healed.elapsed()
    );
    c.wait_ready(id).await;
}

fn web(upstream: &Upstream) -> pb::TxnOp {
    put_op(
        "service",
        "web",
        json!({"port": upstream.port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]}),
    )
}

/// What Envoy's own stats say was removed or rejected.
async fn removals(envoy: &Envoy) -> (u64, u64, u64) {
    let n = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (
        n(envoy.stat("listener_manager.listener_removed").await),
        n(envoy.stat("cluster_manager.cluster_removed").await),
        envoy.sum_stats("update_rejected").await,
    )
}

/// An Envoy whose controller dies while the only other one it knows has
/// just joined on an empty data directory keeps every listener and cluster
/// and serves every request: the new controller refuses its stream until
/// it has caught up, then serves it the cluster's config, changes
/// included. (A controller restarted on its own wiped data directory under
/// the same id is not a supported operation: Raft forbids a voter's log to
/// go back. Replacing it is this: a new node, empty.)
async fn envoy_fails_over_to_a_controller_with_an_empty_data_dir(variant: AdsVariant) {
    let mut c = Cluster::start(3, ClusterOpts::default()).await;
    let port = meridian_tests::ports::free_port();
    let before = Upstream::start("before").await;
    c.apply_ops([vec![web(&before)], edge_ops("web", port)].concat())
        .await;
    let leader = c.wait_leader().await;
    let serving = c.a_follower(leader);
    // The new controller joins while replication to it is held back, so it
    // stays a replica with nothing in it for as long as this test needs.
    let fresh = c.nodes.iter().map(|n| n.id).max().unwrap() + 1;
    for id in c.running_ids() {
        c.set_faults(id, &format!(r#"{{"isolated_from": [{fresh}]}}"#))
            .await;
    }
    assert_eq!(c.add_node().await, fresh);
    let xds = |id: u64| {
        (
            "us-east".to_string(),
            format!("127.0.0.1:{}", c.node(id).ports.xds),
        )
    };
    let mut spec = BootstrapSpec::new(
        &format!("failover-{variant:?}"),
        "us-east",
        Envoy::free_admin_port(),
        vec![xds(serving), xds(fresh)],
    );
    spec.variant = variant;
    let envoy = Envoy::from_spec(&spec, c.dir(), "info").expect("envoy starts");
    wait_all_ok(port, "/", 10, Duration::from_secs(30), |b| b == "before").await;
    let at_start = removals(&envoy).await;

    c.kill(serving);
    let until = Instant::now() + Duration::from_secs(6);
    let mut failed = 0;
    while Instant::now() < until {
        failed += batch(port, "/", 5).await.1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        failed, 0,
        "requests failed while Envoy's only live controller had no state"
    );
    assert_eq!(
        removals(&envoy).await,
        at_start,
        "(listeners removed, clusters removed, updates rejected)"
    );

    for id in c.running_ids() {
        c.set_faults(id, "{}").await;
    }
    c.wait_ready(fresh).await;
    // The new controller serves it now: a change reaches Envoy through it.
    let after = Upstream::start("after").await;
    c.apply_ops(vec![web(&after)]).await;
    wait_all_ok(port, "/", 10, Duration::from_secs(60), |b| b == "after").await;
    let ident = envoy
        .stat("control_plane.identifier")
        .await
        .unwrap_or_default();
    assert!(ident.ends_with(&format!("-{fresh}")), "served by {ident}");
    assert_eq!(
        removals(&envoy).await,
        at_start,
        "(listeners removed, clusters removed, updates rejected)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_keeps_its_config_failing_over_to_an_empty_controller() {
    envoy_fails_over_to_a_controller_with_an_empty_data_dir(AdsVariant::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_envoy_keeps_its_config_failing_over_to_an_empty_controller() {
    envoy_fails_over_to_a_controller_with_an_empty_data_dir(AdsVariant::Sotw).await;
}
