//! When this node last heard from a leader, for readiness checks: openraft's
//! metrics only tell a leader when it last heard from a quorum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    last_append_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_append_ms: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

impl Activity {
    pub(crate) fn touch(&self) {
        self.last_append_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Milliseconds since the last accepted AppendEntries, `None` if never.
    pub fn millis_since_append(&self) -> Option<u64> {
        let last = self.last_append_ms.load(Ordering::Relaxed);
        (last != u64::MAX).then(|| (self.start.elapsed().as_millis() as u64).saturating_sub(last))
    }
}
