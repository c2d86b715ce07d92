//! The test kit: everything the black-box tests (`tests/`), the xDS
//! conformance tests and `meridian-bench` need to run Meridian for real:
//! clusters of real `meridian` processes on loopback (`cluster`), real Envoy
//! processes started from Meridian's own bootstrap (`envoy`), real agents
//! (`agent`), tiny HTTP upstreams (`upstream`), free ports (`ports`),
//! transaction ops written straight to the API (`ops`) and the one
//! percentile estimator every report uses (`percentile`).
//!
//! The `meridian` binary is found at `$MERIDIAN_BIN`, else next to the
//! running executable (where `meridian-bench` finds it), else at
//! `<target>/debug/meridian`; README's test command builds it first. A
//! missing binary fails the test with instructions, it never skips.

pub mod agent;
pub mod cluster;
pub mod envoy;
pub mod http;
pub mod ops;
pub mod percentile;
pub mod pki;
pub mod ports;
pub mod upstream;

pub use cluster::{Cluster, ClusterOpts};
/// The bootstrap every test Envoy starts from (the product's own).
pub use meridian_translate::bootstrap;
pub use percentile::percentile;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/crates/meridian-testkit`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/meridian-testkit has a grandparent")
        .to_path_buf()
}

/// Path of the `meridian` binary, or why there is none.
pub fn try_meridian_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("MERIDIAN_BIN") {
        return Ok(PathBuf::from(p));
    }
    // `meridian-bench` is built into the same directory as `meridian`
    // (target/release or target/debug); test binaries live one level down,
    // in deps/, so they fall through to the target dir.
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("meridian")))
        .filter(|p| p.is_file())
    {
        return Ok(sibling);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("debug").join("meridian");
    anyhow::ensure!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --bin meridian` (scripts/test.sh does), or set MERIDIAN_BIN",
        bin.display()
    );
    Ok(bin)
}

/// Path of the `meridian` binary under test.
pub fn meridian_bin() -> PathBuf {
    try_meridian_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A finished command, for a failed assertion: its exit code, stdout and
/// stderr.
pub fn show(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    try_eventually(what, timeout, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `f` until it returns `Some`, or fails with `what` after `timeout`.
pub async fn try_eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
