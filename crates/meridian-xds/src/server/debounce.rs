use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::metrics::XdsMetrics;
use crate::source::SnapshotSource;

/// Turns source changes into pushes: a push goes out once the source was
/// quiet for `quiet`, or once the oldest unpushed change is `max` old
/// (`max_endpoints` while only endpoints changed), so a steady trickle of
/// writes cannot starve proxies.
pub(super) struct Debounce {
    pub quiet: Duration,
    pub max: Duration,
    pub max_endpoints: Duration,
}

pub(super) async fn run(
    source: Arc<dyn SnapshotSource>,
    push: watch::Sender<u64>,
    mut drain: watch::Receiver<bool>,
    d: Debounce,
    metrics: Arc<XdsMetrics>,
) {
    let mut changes = source.changes();
    let mut generation = source.config_generation();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = drain.wait_for(|d| *d) => return,
            // Every server handle and stream is gone: nobody to push to.
            _ = push.closed() => return,
        }
        let first = Instant::now();
        let mut merged = 0u64;
        loop {
            let config = source.config_generation() != generation;
            let max = if config {
                d.max
            } else {
                d.max_endpoints.min(d.max)
            };
            let deadline = (Instant::now() + d.quiet).min(first + max);
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    merged += 1;
                    if Instant::now() >= first + max {
                        break;
                    }
                }
                _ = sleep_until(deadline) => break,
            }
        }
        metrics.debounce_merges.fetch_add(merged, Ordering::Relaxed);
        generation = source.config_generation();
        let revision = *changes.borrow_and_update();
        push.send_replace(revision);
        tracing::debug!(revision, merged, "push");
    }
}
