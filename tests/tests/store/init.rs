//! Property: three uninitialized nodes become one cluster with an explicit
//! initial member list, and `cluster status` shows every member.

use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_initial_member_list_and_status() {
    let c = Cluster::start(3, ClusterOpts { auto_join: false, ..Default::default() }).await;
    // Before init, a write has nowhere to go and says so.
    let out = c.cli(&["--timeout", "5s", "put", "service", "early", "--value", r#"{"port":1}"#]);
    assert!(!out.status.success());

    let members = c.servers();
    let out = c.cli(&["cluster", "init", "--members-from", &members]);
    must_succeed(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nodes 1, 2, 3"));
    c.wait_voters(&[1, 2, 3]).await;
    put_service(&c, 2, "web", 8080).await.expect("writes after init");

    // Initializing again is refused with a clear error.
    let out = c.cli(&["cluster", "init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"), "{}", String::from_utf8_lossy(&out.stderr));

    let started = std::time::Instant::now();
    let out = c.cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("READY"), "{text}");
    assert!(out.status.success());
    assert_eq!(text.matches("voter").count(), 3, "{text}");
    assert_eq!(text.matches("leader").count(), 2, "one leader line and one leader row:\n{text}");

    // Readiness is the same check as /readyz; a follower may take a moment
    // to hear from the new leader.
    let v = loop {
        let out = c.cli(&["cluster", "status", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json status");
        let ready = v["members"].as_array().unwrap().iter().all(|m| m["ready"] == true);
        if ready || started.elapsed() > std::time::Duration::from_secs(30) {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for m in v["members"].as_array().unwrap() {
        assert_eq!(m["ready"], true, "{m}");
    }
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    assert!(v["leader_id"].as_u64().unwrap() > 0);
    for m in v["members"].as_array().unwrap() {
        assert_eq!(m["region"], "us-east");
        assert!(m["applied_index"].as_u64().unwrap() > 0);
    }
}
