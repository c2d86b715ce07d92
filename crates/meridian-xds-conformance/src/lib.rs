//! The xDS conformance checks that need nothing but a server's address: each
//! opens its own ADS stream (SotW or delta) as an Envoy of the given node,
//! and checks one rule of the protocol that any management server must keep
//! (the xDS spec's, as crates/meridian-xds/PROTOCOL.md states them). Checks
//! that need the server's config to change run only when the caller gives a
//! way to change it ([`Change`]); Meridian's in-process suite
//! (`crates/meridian-xds/tests/conformance`) covers the rest with a source
//! it controls.
//!
//! A check never panics its caller: each runs in its own task, and a panic
//! (the test client's, on a stream the server closed) is a failure with its
//! message.

mod checks;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;

pub use checks::all;

/// What a check may do to the server's config: one change visible in the
/// clusters the node receives (a new version of at least one cluster).
/// `step` counts the calls, so a command can alternate between two states.
pub trait Change: Send + Sync {
    fn change(&self, step: u32) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// The server under test and how to speak to it.
pub struct Target {
    pub addr: SocketAddr,
    /// The node the streams present (its `cluster` is the proxy group).
    pub node: Node,
    /// How long a response may take.
    pub wait: Duration,
    /// Silence this long means "the server sent nothing".
    pub quiet: Duration,
    pub change: Option<Arc<dyn Change>>,
}

/// A check's verdict when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The server's config gives the check nothing to look at (no EDS
    /// cluster, no RDS listener), or it needs a [`Change`].
    Skip(String),
}

pub type CheckResult = Result<Verdict, String>;
type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;

/// One rule, and the function that checks it.
pub struct Check {
    /// Stable id, `variant.topic.rule` (used by `--only`).
    pub id: &'static str,
    /// The rule, as a sentence.
    pub rule: &'static str,
    pub needs_change: bool,
    pub(crate) run: fn(Arc<Target>) -> CheckFuture,
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: &'static str,
    pub rule: &'static str,
    pub result: CheckResult,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.result.is_err()
    }
}

/// Runs the checks whose id contains `only` (all when `None`), one after the
/// other: pushes caused by one check's change must not reach another's
/// stream.
pub async fn run(target: Arc<Target>, only: Option<&str>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for check in all() {
        if only.is_some_and(|o| !check.id.contains(o)) {
            continue;
        }
        let result = if check.needs_change && target.change.is_none() {
            Ok(Verdict::Skip(
                "needs a way to change the server's config (--change-cmd)".into(),
            ))
        } else {
            let fut = (check.run)(target.clone());
            match tokio::spawn(fut).await {
                Ok(r) => r,
                Err(e) => Err(panic_message(e)),
            }
        };
        out.push(Outcome {
            id: check.id,
            rule: check.rule,
            result,
        });
    }
    out
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the check panicked".into()),
        Err(e) => format!("the check did not finish: {e}"),
    }
}
