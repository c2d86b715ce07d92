//! Property: a snapshot saved while writers run restores into a new 3-node
//! cluster holding every write acknowledged before the save.

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writing_restores_into_a_new_cluster() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.api_addr()).collect();
    let writers = Writers::start("bk", 4, addrs);
    wait_acked(&writers, 100).await;
    let acked_before = writers.acked.lock().unwrap().clone();
    let file = c.dir().join("backup.snap");
    let out = c.cli(&["snapshot", "save", file.to_str().unwrap()]);
    must_succeed(&out);
    let acked_total = writers.stop().await;
    assert!(acked_total.len() >= acked_before.len());

    let out = c.cli(&["snapshot", "inspect", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("service"));

    let fresh = Cluster::start(3, ClusterOpts::default()).await;
    let out = fresh.cli(&["snapshot", "restore", file.to_str().unwrap()]);
    must_succeed(&out);
    let leader = fresh.wait_leader().await;
    let (names, _) = list_names(&fresh, leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert_all_present(&acked_before, &names);

    // Restoring the same backup again resumes it: nothing changes.
    let out = fresh.cli(&["snapshot", "restore", file.to_str().unwrap()]);
    must_succeed(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    let (again, _) = list_names(&fresh, leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(again, names);
    // Into a cluster holding config of its own, it is refused.
    put_service(&fresh, leader, "not-from-the-backup", 8000)
        .await
        .unwrap();
    let out = fresh.cli(&["snapshot", "restore", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
}
