//! Property: every node serves `/healthz`, `/readyz` and `/metrics`; a node
//! cut off from the others (through the peer transport's fault injection)
//! turns not-ready, and ready again once the partition heals.

use std::time::Duration;

use meridian_tests::cluster::{http_get, http_request};
use meridian_tests::{eventually, Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_series_and_readiness_under_partition() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    put_service(&c, 1, "web", 8080).await.unwrap();
    let leader = c.wait_leader().await;

    let (code, body) = http_get(&c.node(leader).admin_url("/metrics"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    for series in [
        "meridian_raft_term ",
        "meridian_raft_leader_id ",
        "meridian_raft_commit_index ",
        "meridian_raft_applied_index ",
        "meridian_raft_proposal_duration_seconds_bucket{le=",
        "meridian_raft_proposals_total ",
        "meridian_raft_snapshot_index ",
        "meridian_raft_purged_index ",
        "meridian_store_revision ",
        "meridian_xds_streams{variant=\"delta-ads\"}",
        "meridian_xds_pushes_total ",
        "meridian_xds_acks_total ",
        "meridian_xds_nacks_total ",
        "meridian_xds_debounce_merges_total ",
        "meridian_xds_subscribed_streams{type=\"cds\"",
        "meridian_agent_sessions_total ",
        "meridian_lease_expiries_total ",
        "meridian_endpoint_txns_total ",
        "meridian_raft_snapshots_total ",
        "meridian_raft_purges_total ",
        "meridian_xds_push_to_ack_seconds_bucket{le=",
        "meridian_agent_leases{state=\"active\"} ",
        "meridian_agent_endpoints ",
        "process_resident_memory_bytes ",
        "meridian_ready 1",
    ] {
        assert!(body.contains(series), "/metrics lacks {series:?}:\n{body}");
    }
    let (code, _) = http_get(&c.node(leader).admin_url("/healthz"))
        .await
        .unwrap();
    assert_eq!(code, 200);

    // Cut a follower off from both peers.
    let victim = c.a_follower(leader);
    for id in c.running_ids() {
        let (code, body) = http_request(
            "PUT",
            &c.node(id).admin_url("/debug/faults"),
            Some(&format!(
                r#"{{"isolated_from": [{}]}}"#,
                if id == victim { 0 } else { victim }
            )),
        )
        .await
        .unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let (code, _) = http_request(
        "PUT",
        &c.node(victim).admin_url("/debug/faults"),
        Some(r#"{"isolate_all": true}"#),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let url = c.node(victim).admin_url("/readyz");
    let why = eventually(
        "the cut-off node to turn not-ready",
        Duration::from_secs(20),
        || {
            let url = url.clone();
            async move {
                let (code, body) = http_get(&url).await.ok()?;
                (code == 503).then_some(body)
            }
        },
    )
    .await;
    assert!(why.contains("not ready"), "{why}");
    // The majority side still writes.
    put_service(&c, leader, "during-partition", 8081)
        .await
        .expect("the majority keeps a quorum");
    // Healthz stays up: the process is alive.
    assert_eq!(
        http_get(&c.node(victim).admin_url("/healthz"))
            .await
            .unwrap()
            .0,
        200
    );

    for id in c.running_ids() {
        let (code, _) = http_request("PUT", &c.node(id).admin_url("/debug/faults"), Some("{}"))
            .await
            .unwrap();
        assert_eq!(code, 200);
    }
    c.wait_ready(victim).await;
    // Caught up: it serves the write made during the partition locally.
    let (names, _) = list_names(&c, victim, meridian_proto::v1::Consistency::Local)
        .await
        .unwrap();
    let st = c.status(leader).await.unwrap();
    c.wait_applied(victim, st.applied_index).await;
    let (names2, _) = list_names(&c, victim, meridian_proto::v1::Consistency::Local)
        .await
        .unwrap();
    assert!(names.contains("during-partition") || names2.contains("during-partition"));
}
