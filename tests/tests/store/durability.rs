//! Property: every write acknowledged to a client survives SIGKILL of every
//! node at once, and the cluster serves again after restart.

use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_of_all_nodes() {
    let mut c = Cluster::start(
        3,
        ClusterOpts {
            snapshot_logs: 200,
            ..Default::default()
        },
    )
    .await;
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.api_addr()).collect();
    let writers = Writers::start("dur", 8, addrs);
    wait_acked(&writers, 300).await;
    // Kill while writes are in flight.
    c.kill_all();
    let acked = writers.stop().await;
    assert!(acked.len() >= 300);

    for id in 1..=3 {
        c.spawn(id);
    }
    let leader = c.wait_leader().await;
    let (names, _) = list_names(&c, leader, pb::Consistency::Linearizable)
        .await
        .expect("serves after restart");
    assert_all_present(&acked, &names);
    put_service(&c, leader, "after-restart", 8080)
        .await
        .expect("writes after restart");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
