//! Test support for black-box tests: start real `meridian` processes on
//! loopback, kill and restart them, and talk to them over the real APIs.
//!
//! The binary is found at `$MERIDIAN_BIN`, else `<target>/debug/meridian`;
//! README's test command builds it first. A missing binary fails the test
//! with instructions, it never skips.

pub mod agent;
pub mod cluster;
pub mod envoy;
pub mod ports;
pub mod upstream;

pub use cluster::{Cluster, ClusterOpts};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of the `meridian` binary under test.
pub fn meridian_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MERIDIAN_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("debug").join("meridian");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --bin meridian` (scripts/test.sh does), or set MERIDIAN_BIN",
        bin.display()
    );
    bin
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
