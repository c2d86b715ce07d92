//! Property: when a write's outcome is unknown, the CLI names the request
//! id it generated, so the write can be retried to apply at most once;
//! when the write was never sent, it does not pretend otherwise.

use std::time::Duration;

use meridian_tests::{Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_outcome_is_unknown_prints_its_request_id() {
    let mut c = Cluster::start(
        3,
        ClusterOpts {
            write_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_leader().await;
    for id in c.running_ids() {
        if id != leader {
            c.kill(id);
        }
    }
    let out = c.cli(&["put", "service", "web", "--value", r#"{"port": 80}"#]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr
        .split_whitespace()
        .skip_while(|w| *w != "--request-id")
        .nth(1)
        .unwrap_or_else(|| panic!("no request id named: {stderr}"));
    assert!(id.starts_with("cli-"), "{stderr}");
    assert!(stderr.contains(&format!("request id {id}:")), "{stderr}");

    // No controller reached at all: the write was never sent.
    c.kill(leader);
    let out = c.cli(&["put", "service", "web", "--value", r#"{"port": 80}"#]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach any controller"), "{stderr}");
    assert!(!stderr.contains("--request-id"), "{stderr}");
}
