//! xDS readiness with real `meridian` processes: a controller that has not
//! caught up with the cluster (here: one that joins on an empty data
//! directory while replication to it is held back) refuses new xDS streams
//! with UNAVAILABLE and never answers with the empty state it holds. An
//! empty SotW CDS/LDS response would delete every cluster and listener of
//! the Envoy that asked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_tests::cluster::{http_get, http_request};
use meridian_tests::{eventually, Cluster, ClusterOpts};
use meridian_xds::testing::{delta_names, names, node, DeltaClient, SotwClient};
use meridian_xds::types::CLUSTER;
use serde_json::json;

async fn put_service(c: &Cluster, name: &str, port: u16) {
    let op = pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: Some(pb::ObjectKey { kind: "service".into(), name: name.into() }),
            value: serde_json::to_vec(&json!({"port": port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]})).unwrap(),
            expected_revision: None,
        })),
    };
    let req = pb::TxnRequest {
        request_id: format!("svc-{name}"),
        ops: vec![op],
        dry_run: false,
    };
    c.config(c.running_ids()[0])
        .await
        .txn(req)
        .await
        .expect("put service");
}

async fn set_faults(c: &Cluster, id: u64, body: &str) {
    let (code, resp) = http_request("PUT", &c.node(id).admin_url("/debug/faults"), Some(body))
        .await
        .unwrap();
    assert_eq!(code, 200, "{resp}");
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
        set_faults(&c, id, &format!(r#"{{"isolated_from": [{new_id}]}}"#)).await;
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
        set_faults(&c, id, "{}").await;
    }
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
    c.wait_ready(id).await;
}
