//! Property: the CLI finds controllers through its config file's contexts
//! (like kubeconfig) when neither --server nor MERIDIAN_SERVER is given, and
//! tries the next address of a context when one is down.

use std::process::Command;

use meridian_tests::{meridian_bin, Cluster, ClusterOpts};

use super::support::must_succeed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_select_the_cluster_and_fail_over() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let cfg = c.dir().join("cli-config.yaml");
    let cli = |args: &[&str]| {
        Command::new(meridian_bin())
            .env("MERIDIAN_CONFIG", &cfg)
            .env_remove("MERIDIAN_SERVER")
            .args(args)
            .output()
            .unwrap()
    };
    // A dead address first: the CLI moves on to the live one.
    let servers = format!("127.0.0.1:1,{}", c.node(1).api_addr());
    let out = cli(&["config", "set-context", "test", "--server", &servers]);
    must_succeed(&out);
    let out = cli(&["config", "set-context", "nowhere", "--server", "127.0.0.1:1"]);
    assert!(out.status.success());
    let out = cli(&["config", "get-contexts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with('*') && l.contains("test")), "{text}");

    let out = cli(&["put", "service", "web", "--value", r#"{"port":8080}"#]);
    must_succeed(&out);
    let out = cli(&["--context", "nowhere", "get", "service"]);
    assert_eq!(out.status.code(), Some(6), "unreachable context: exit 6");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "the error names the addresses tried: {err}");
    let out = cli(&["--context", "missing", "get", "service"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));

    let out = cli(&["config", "use-context", "nowhere"]);
    assert!(out.status.success());
    let out = cli(&["--context", "test", "get", "service", "web", "-o", "json"]);
    must_succeed(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"port\": 8080"));
}
