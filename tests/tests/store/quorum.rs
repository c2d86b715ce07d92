//! Property: with 2 of 3 nodes down, a write fails within a bounded time with
//! a clear "no quorum / no leader" error instead of hanging; after recovery
//! all data is intact.

use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_fails_writes_fast_and_clearly() {
    let mut c = Cluster::start(
        3,
        ClusterOpts {
            write_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    for i in 0..20u16 {
        put_service(&c, 1, &format!("q{i}"), 8000 + i)
            .await
            .unwrap();
    }
    let leader = c.wait_leader().await;
    let survivor = leader; // the hardest case: the survivor believed it led
    for id in c.running_ids() {
        if id != survivor {
            c.kill(id);
        }
    }
    let started = Instant::now();
    let err = put_service(&c, survivor, "lost", 9000)
        .await
        .expect_err("no quorum");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the write hung for {took:?}"
    );
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains("no quorum") || msg.contains("no leader"),
        "unclear error: {msg}"
    );

    // The CLI says the same, with its exit code for "unavailable".
    let out = c.cli(&["put", "service", "lost2", "--value", r#"{"port":1}"#]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for id in 1..=3 {
        if id != survivor {
            c.spawn(id);
        }
    }
    let leader = c.wait_leader().await;
    let (names, _) = list_names(&c, leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    for i in 0..20 {
        assert!(names.contains(&format!("q{i}")));
    }
    put_service(&c, leader, "recovered", 9001).await.unwrap();
}
