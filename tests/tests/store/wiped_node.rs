//! A node that comes back with an empty data dir under its old node id is
//! refused by its peers (its incarnation changed) instead of crashing the
//! leader, says how to fix it, and the operator's fix works: remove the
//! member, start a node with a new id.

use std::time::Duration;

use meridian_tests::cluster::http_get;
use meridian_tests::{eventually, Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_and_the_operator_can_replace_it() {
    let mut c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    for i in 0..20 {
        put_service(&c, leader, &format!("before-{i}"), 8080)
            .await
            .expect("writes before the wipe");
    }
    // Node 3 never bootstraps: it joins through the others, as it would
    // after a disk replacement.
    c.kill(3);
    std::fs::remove_dir_all(&c.node(3).data_dir).expect("wipe node 3's data dir");
    c.spawn(3);

    eventually(
        "node 3 refuses the old cluster",
        Duration::from_secs(30),
        || {
            let log = c.log_of(3);
            async move { log.contains("this node's data dir is new").then_some(()) }
        },
    )
    .await;
    let url = c.node(3).admin_url("/metrics");
    eventually("node 3 counts refusals", Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let (_, body) = http_get(&url).await.ok()?;
            body.lines()
                .find_map(|l| l.strip_prefix("meridian_peer_incarnation_refused_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| *v > 0.0)
        }
    })
    .await;

    // The cluster runs on with the two others, and nobody crashed.
    let leader = c.wait_leader().await;
    put_service(&c, leader, "during", 8080)
        .await
        .expect("writes with the wiped node refused");
    for id in 1..=3 {
        assert!(
            !c.log_of(id).contains("panicked at"),
            "node {id} panicked:\n{}",
            c.log_tails(30)
        );
    }

    // The operator's fix, as the ERROR says: remove it, start a new id.
    must_succeed(&c.cli(&["cluster", "remove-node", "3"]));
    c.kill(3);
    let new = c.add_node().await;
    eventually(
        "the new node serves the data",
        Duration::from_secs(60),
        || {
            let c = &c;
            async move {
                let (names, _) = list_names(c, new, meridian_proto::v1::Consistency::Linearizable)
                    .await
                    .ok()?;
                names.contains("before-0").then_some(())
            }
        },
    )
    .await;
}
