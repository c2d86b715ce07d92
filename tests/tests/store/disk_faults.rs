//! Disk faults through the storage trait's fault layer
//! (`/debug/disk-faults`, on with `--enable-fault-injection`).

use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_tests::{eventually, Cluster, ClusterOpts};

use super::support::*;

/// Property: a leader whose log flushes fail (an fsync returning EIO)
/// stops acknowledging and exits saying why; the other two keep the
/// quorum and the writes going; nothing acknowledged is lost; restarted on
/// its data dir, the node catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_fsync_fails_exits_and_catches_up_after_a_restart() {
    let mut c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    let writers = Writers::start("disk", 4, c.api_addrs());
    wait_acked(&writers, 30).await;

    c.set_disk_faults(leader, r#"{"fail_flush": true}"#).await;
    let started = std::time::Instant::now();
    while !c.has_exited(leader) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node {leader} kept running with failing flushes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = c.log_of(leader);
    assert!(
        log.contains("raft stopped") && log.contains("fsync failed"),
        "node {leader} exited without saying why:\n{}",
        c.log_tails(20)
    );
    assert!(!log.contains("panicked"), "{}", c.log_tails(20));

    // The others go on: a new leader, and more writes acknowledged.
    let more = writers.acked_count() + 30;
    wait_acked(&writers, more).await;
    let acked = writers.stop().await;

    c.restart(leader);
    let now = c.wait_leader().await;
    let (names, _) = list_names(&c, now, pb::Consistency::Linearizable)
        .await
        .expect("serves after the restart");
    assert_all_present(&acked, &names);
    let c = &c;
    let acked = &acked;
    eventually(
        &format!("node {leader} caught up after its restart"),
        Duration::from_secs(30),
        || async move {
            let (local, _) = list_names(c, leader, pb::Consistency::Local).await.ok()?;
            acked.is_subset(&local).then_some(())
        },
    )
    .await;
}

/// Property: a leader whose flushes are slow (300 ms each) still commits
/// every write, and keeps running; cleared, it is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_slow_disk_still_commits() {
    let mut c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    c.set_disk_faults(leader, r#"{"flush_delay_ms": 300}"#)
        .await;
    for i in 0..5 {
        put_service(&c, leader, &format!("slow-{i}"), 8000 + i)
            .await
            .expect("a write with a slow disk");
    }
    assert!(!c.has_exited(leader));
    c.set_disk_faults(leader, "{}").await;
    let (names, _) = list_names(&c, leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert!((0..5).all(|i| names.contains(&format!("slow-{i}"))));
}
