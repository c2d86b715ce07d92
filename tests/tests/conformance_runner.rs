//! The standalone xDS conformance runner (`xds-conformance`, in
//! crates/meridian-xds-conformance) against a real `meridian` controller, as
//! an operator would run it: every check passes, the push checks included,
//! with `meridian apply` as the way to change the config.

use std::process::Command;

use meridian_tests::{meridian_bin, Cluster, ClusterOpts};

const SERVICE: &str = r#"
kind: service
name: hello
spec:
  port: 8081
  connectTimeout: CONNECT
  endpoints:
    - address: 127.0.0.1
      region: us-east
---
kind: route
name: hello
spec:
  hosts: ["*"]
  rules:
    - backends:
        - service: hello
---
kind: listener
name: public
spec:
  address: 127.0.0.1
  port: 10000
  routes: [hello]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meridian_controller_passes_the_standalone_conformance_run() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // Step 0 changes the cluster's connect timeout (a new CDS version),
    // step 1 puts it back.
    for (step, timeout) in [(0, "700ms"), (1, "500ms")] {
        std::fs::write(
            dir.path().join(format!("step{step}.yaml")),
            SERVICE.replace("CONNECT", timeout),
        )
        .unwrap();
    }
    let out = c.cli(&[
        "apply",
        "-f",
        dir.path().join("step1.yaml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let change = format!(
        "{} --server {} apply -f {}/step$XDS_CONFORMANCE_STEP.yaml",
        meridian_bin().display(),
        c.servers(),
        dir.path().display()
    );
    let runner = meridian_bin().with_file_name("xds-conformance");
    assert!(
        runner.is_file(),
        "{} is missing: `cargo build -p meridian-xds-conformance` (scripts/test.sh does)",
        runner.display()
    );
    let xds = c.xds_addrs()[0].clone();
    let out = Command::new(&runner)
        .args(["--server", &xds, "--region", "us-east", "-o", "json"])
        .args(["--change-cmd", &change])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let not_passed: Vec<&serde_json::Value> =
        results.iter().filter(|r| r["result"] != "pass").collect();
    assert!(
        not_passed.is_empty(),
        "every check applies to this config and passes: {not_passed:#?}"
    );
    assert!(results.len() >= 15, "{results:#?}");
}
