//! Property: when a write's outcome is unknown, the CLI names the request
//! id it generated, so the write can be retried to apply at most once.

use meridian_tests::{Cluster, ClusterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_outcome_is_unknown_prints_its_request_id() {
    let mut c = Cluster::start(1, ClusterOpts::default()).await;
    c.kill(1);
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
}
