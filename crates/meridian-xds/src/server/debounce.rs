use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::metrics::XdsMetrics;

/// Turns source changes into pushes: a push goes out once the source was
/// quiet for `quiet`, or once the oldest unpushed change is `max` old, so a
/// steady trickle of writes cannot starve proxies.
pub(super) async fn run(
    mut changes: watch::Receiver<u64>,
    push: watch::Sender<u64>,
    mut drain: watch::Receiver<bool>,
    quiet: Duration,
    max: Duration,
    metrics: Arc<XdsMetrics>,
) {
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
            let deadline = (Instant::now() + quiet).min(first + max);
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
        let revision = *changes.borrow_and_update();
        push.send_replace(revision);
        tracing::debug!(revision, merged, "push");
    }
}
