//! Peers this node could not reach: counted per peer (the node exports
//! `meridian_peer_unreachable_total{peer}`) and logged at WARN, at most once
//! per [`LOG_EVERY`] per peer with the count the quiet period hid. A peer
//! that is down (a restart, maintenance, a chaos test) is an expected state
//! of a cluster, not a broken invariant, and openraft retries it several
//! times a second: one line per retry would bury everything else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_store::NodeId;

/// The least time between two WARN lines about one peer.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
pub struct Unreachables {
    peers: Arc<Mutex<BTreeMap<NodeId, Peer>>>,
}

#[derive(Default)]
struct Peer {
    total: u64,
    logged_at: Option<Instant>,
    hidden: u64,
}

impl Unreachables {
    /// Records one failed RPC to `peer`; logs it unless one was logged less
    /// than [`LOG_EVERY`] ago.
    pub fn note(&self, peer: NodeId, addr: &str, rpc: &'static str, error: &str) {
        let now = Instant::now();
        let hidden = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let p = peers.entry(peer).or_default();
            p.total += 1;
            if p.logged_at
                .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
            {
                p.hidden += 1;
                return;
            }
            p.logged_at = Some(now);
            std::mem::take(&mut p.hidden)
        };
        tracing::warn!(
            peer,
            addr,
            rpc,
            error,
            suppressed = hidden,
            "peer unreachable; retrying"
        );
    }

    /// Failed RPCs so far, by peer.
    pub fn totals(&self) -> Vec<(NodeId, u64)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.iter().map(|(id, p)| (*id, p.total)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_failure_and_logs_at_most_once_per_period() {
        let u = Unreachables::default();
        for _ in 0..100 {
            u.note(2, "127.0.0.1:1", "append", "connection refused");
        }
        u.note(3, "127.0.0.1:2", "vote", "connection refused");
        assert_eq!(u.totals(), vec![(2, 100), (3, 1)]);
        let peers = u.peers.lock().unwrap();
        // 99 of peer 2's failures came within the period of the first line.
        assert_eq!(peers[&2].hidden, 99);
        assert_eq!(peers[&3].hidden, 0);
    }
}
