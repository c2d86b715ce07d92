//! Counters and histograms the node keeps for `/metrics`. Plain atomics: the
//! hot path pays one relaxed add, and rendering reads a consistent-enough view.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Default)]
pub(crate) struct WriteMetrics {
    pub proposal_latency: Histogram,
    pub proposals: AtomicU64,
    pub txns_committed: AtomicU64,
    pub txns_rejected: AtomicU64,
    pub proposal_failures: AtomicU64,
    pub endpoint_batches: AtomicU64,
    pub endpoint_txns: AtomicU64,
    pub agent_sessions: AtomicU64,
    pub agent_updates: AtomicU64,
    pub agent_nacks: AtomicU64,
    pub lease_expiries: AtomicU64,
}

impl WriteMetrics {
    pub(crate) fn render(&self, out: &mut String) {
        self.proposal_latency.render(
            out,
            "meridian_raft_proposal_duration_seconds",
            "Time from proposing a batch to its commit and apply, on the leader.",
        );
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            "meridian_raft_proposals_total",
            "Batches proposed by this node as leader.",
            &self.proposals,
        );
        counter(
            "meridian_store_txns_committed_total",
            "Client transactions committed through this node as leader.",
            &self.txns_committed,
        );
        counter(
            "meridian_store_txns_rejected_total",
            "Client transactions rejected by validation or preconditions.",
            &self.txns_rejected,
        );
        counter(
            "meridian_raft_proposal_failures_total",
            "Batches that failed or timed out.",
            &self.proposal_failures,
        );
        for (name, help, v) in [
            ("meridian_endpoint_batches_total", "Endpoint-lane batches proposed by this node as leader.", &self.endpoint_batches),
            ("meridian_endpoint_txns_total", "Endpoint-lane transactions committed through this node as leader.", &self.endpoint_txns),
            ("meridian_agent_sessions_total", "Agent sessions accepted by this node.", &self.agent_sessions),
            ("meridian_agent_updates_total", "Endpoint updates acknowledged to agents by this node.", &self.agent_updates),
            ("meridian_agent_nacks_total", "Endpoint updates refused (NACKed) by this node.", &self.agent_nacks),
            ("meridian_lease_expiries_total", "Agent leases this node expired as leader.", &self.lease_expiries),
        ] {
            counter(name, help, v);
        }
    }
}
