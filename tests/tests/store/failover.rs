//! Leader loss and catch-up, on 3 and 5 real processes.
//!
//! Property: writes through any node succeed; after SIGKILL of the leader a
//! new one is elected and writes continue; the killed node restarts and
//! catches up, by snapshot when the leader purged the log it needs.

use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

async fn leader_kill_and_catch_up(n: usize) {
    // Snapshots every 30 entries, so the restarted node's missing entries are
    // purged on the leader and it must install a snapshot.
    let mut c = Cluster::start(
        n,
        ClusterOpts {
            snapshot_logs: 30,
            ..Default::default()
        },
    )
    .await;
    for id in c.running_ids() {
        put_service(&c, id, &format!("via-{id}"), 8000 + id as u16)
            .await
            .expect("write through any node");
    }
    let leader = c.wait_leader().await;
    c.kill(leader);
    let killed_at = Instant::now();
    let new_leader = c.wait_leader().await;
    assert_ne!(new_leader, leader);
    let elected_in = killed_at.elapsed();
    // Election timeouts are 0.75-1.5 s: "a few" of them, with process start-up slack.
    assert!(
        elected_in < Duration::from_secs(15),
        "new leader took {elected_in:?}"
    );

    let others: Vec<u64> = c.running_ids();
    for i in 0..100u16 {
        let via = others[i as usize % others.len()];
        put_service(&c, via, &format!("after-{i}"), 9000 + i)
            .await
            .expect("writes continue after leader loss");
    }
    let (names, _) = list_names(&c, new_leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(names.len(), n + 100);

    c.spawn(leader);
    let target = c.status(new_leader).await.unwrap().applied_index;
    let st = c.wait_applied(leader, target).await;
    assert!(
        st.snapshot_index > 0,
        "the restarted node should have caught up through a snapshot: {st:?}"
    );
    let (local, _) = list_names(&c, leader, pb::Consistency::Local)
        .await
        .unwrap();
    assert_eq!(local, names, "the restarted node's replica matches");
    let log = c.log_of(leader);
    assert!(!log.contains("panicked"), "node log shows a panic:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_leader_kill_and_restarted_node_catches_up_by_snapshot() {
    leader_kill_and_catch_up(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_leader_kill_and_restarted_node_catches_up_by_snapshot() {
    leader_kill_and_catch_up(5).await;
}

/// Property: a request id applied once is answered as a duplicate on retry,
/// through any node, and the object changes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_applies_once() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let req = pb::TxnRequest {
        request_id: "retry-me".into(),
        ops: vec![put_op("service", "once", service(8080), Some(0))],
        dry_run: false,
    };
    let first = c
        .config(1)
        .await
        .txn(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    let second = c.config(3).await.txn(req).await.unwrap().into_inner();
    assert!(second.duplicate, "the retry is recognised");
    assert_eq!(second.revision, first.revision);
    let obj = c
        .config(2)
        .await
        .get(get_request("service", "once"))
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!(obj.revision, first.revision);
}

/// Property: a watcher on a follower sees every committed change after the
/// revision it started from, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_follower_streams_committed_changes() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    let follower = c.a_follower(leader);
    let start = put_service(&c, leader, "w0", 8000).await.unwrap();
    let mut stream = c
        .config(follower)
        .await
        .watch(pb::WatchRequest {
            from_revision: start,
            kind: "service".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for i in 1..=5u16 {
        put_service(&c, leader, &format!("w{i}"), 8000 + i)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 && Instant::now() < deadline {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in msg.events {
            seen.push(e.key.unwrap().name);
        }
    }
    assert_eq!(seen, vec!["w1", "w2", "w3", "w4", "w5"]);
}
