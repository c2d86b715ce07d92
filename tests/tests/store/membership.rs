//! Property: growing 3 -> 5 and shrinking 5 -> 3 while writers run loses
//! nothing acknowledged; a removed node no longer counts toward quorum and
//! its id can never join again.

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_and_shrink_while_writing() {
    let mut c = Cluster::start(3, ClusterOpts::default()).await;
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.api_addr()).collect();
    let writers = Writers::start("mem", 4, addrs);
    wait_acked(&writers, 50).await;

    let four = c.add_node().await;
    let five = c.add_node().await;
    c.wait_voters(&[1, 2, 3, four, five]).await;
    wait_acked(&writers, 150).await;

    // Shrink by removing two of the original nodes, one of which may lead.
    for id in [1u64, 2] {
        let out = c.cli(&["cluster", "remove-node", &id.to_string()]);
        assert!(
            out.status.success(),
            "remove-node {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.wait_voters(&[3, four, five]).await;
    wait_acked(&writers, 250).await;
    let acked = writers.stop().await;

    // The removed nodes stop; with 3 voters left, losing one more still
    // leaves a quorum (2 of 3). Had 1 and 2 still counted, 2 of 5 would not.
    c.kill(1);
    c.kill(2);
    let leader = c.wait_leader().await;
    let victim = [3, four, five]
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    c.kill(victim);
    put_service(&c, leader, "after-shrink", 8080)
        .await
        .expect("2 of 3 voters are a quorum");
    let (names, _) = list_names(&c, leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert_all_present(&acked, &names);

    // A removed id is never admitted again.
    let out = c.cli(&[
        "cluster",
        "add-node",
        "--id",
        "1",
        "--region",
        "us-east",
        "--peer-addr",
        "127.0.0.1:1",
        "--api-addr",
        "127.0.0.1:2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never reused"), "{err}");
}
