//! `meridian-bench xds`, black-box and small: it starts its own controller,
//! connects 200 simulated Envoys, makes one route change, and reports every
//! stream synced and ACKing the change.

use std::process::Command;

use meridian_tests::workspace_root;

/// `meridian-bench`, built next to the `meridian` it starts.
fn bench_bin() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("debug").join("meridian-bench");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build -p meridian-bench` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

#[test]
fn bench_xds_200_streams_one_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(bench_bin())
        // The cluster it starts runs the `meridian` under test.
        .env("MERIDIAN_BIN", meridian_tests::meridian_bin())
        .args([
            "xds",
            "--streams",
            "200",
            "--services",
            "20",
            "--changes",
            "1",
            "-o",
            "json",
        ])
        .arg("--data-root")
        .arg(dir.path())
        .output()
        .expect("run meridian-bench xds");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status.code()
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(r["synced"], 200, "{r}");
    assert_eq!(r["failed_streams"], 0, "{r}");
    // 20 clusters, 20 endpoint sets, 2 listeners, 2 route configurations.
    assert_eq!(r["resources_per_envoy"], 44, "{r}");
    let c = &r["changes"][0];
    assert_eq!(c["acked"], 200, "{r}");
    assert!(c["bytes"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(
        r["rss_after_bytes"].as_u64() > r["rss_before_bytes"].as_u64(),
        "{r}"
    );
}
