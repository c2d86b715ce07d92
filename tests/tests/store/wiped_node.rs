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
    // A follower that did not bootstrap (node 1 did): it joins through the
    // others, as it would after a disk replacement.
    let victim = if leader == 3 { 2 } else { 3 };
    let others: Vec<u64> = (1..=3).filter(|i| *i != victim).collect();
    c.kill(victim);
    std::fs::remove_dir_all(&c.node(victim).data_dir).expect("wipe the data dir");
    c.spawn(victim);

    eventually(
        "the wiped node refuses the old cluster",
        Duration::from_secs(30),
        || {
            let log = c.log_of(victim);
            async move { log.contains("this node's data dir is new").then_some(()) }
        },
    )
    .await;
    let url = c.node(victim).admin_url("/metrics");
    eventually(
        "the wiped node counts refusals",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let (_, body) = http_get(&url).await.ok()?;
                body.lines()
                    .find_map(|l| l.strip_prefix("meridian_peer_incarnation_refused_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| *v > 0.0)
            }
        },
    )
    .await;

    // The cluster runs on with the two others (the wiped node knows no
    // leader), and nobody crashed.
    eventually(
        "a write with the wiped node refused",
        Duration::from_secs(30),
        || {
            let (c, others) = (&c, &others);
            async move {
                for id in others {
                    if put_service(c, *id, "during", 8080).await.is_ok() {
                        return Some(());
                    }
                }
                None
            }
        },
    )
    .await;
    for id in 1..=3 {
        assert!(
            !c.log_of(id).contains("panicked at"),
            "node {id} panicked:\n{}",
            c.log_tails(30)
        );
    }

    // The operator's fix, as the ERROR says: remove it, start a new id.
    must_succeed(&c.cli(&["cluster", "remove-node", &victim.to_string()]));
    c.kill(victim);
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
