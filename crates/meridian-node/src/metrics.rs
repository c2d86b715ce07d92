//! Counters and histograms the node keeps for `/metrics`. Plain atomics: the
//! hot path pays one relaxed add, and rendering reads a consistent-enough view.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct WriteMetrics {
    pub proposal_latency: meridian_xds::Histogram,
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
    /// Rollouts halted and rolled back by this node as leader.
    pub rollout_halts: AtomicU64,
    pub snapshots: AtomicU64,
    pub purges: AtomicU64,
    /// The node's TLS sources, set once at start (none when plaintext):
    /// their expiry and reload counters print with these.
    pub tls: std::sync::OnceLock<Vec<std::sync::Arc<meridian_tls::TlsSource>>>,
    /// The peer transport's failed RPCs by peer, set once at start.
    pub peers: std::sync::OnceLock<meridian_peer::Unreachables>,
    pub envoy_stats: EnvoyStatsMetrics,
}

/// Why pushed Envoy stats were refused (`reason` label of
/// `meridian_envoy_stats_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatsRejection {
    /// Bytes that are not a StreamMetricsMessage.
    Malformed,
    /// A message above the size limit.
    Oversized,
    /// Well-formed but unusable: no node on the first message, a counter
    /// that is not a count, too many clusters.
    Invalid,
    /// A proxy certificate for another group than the node claims.
    Identity,
    /// The table of Envoys is full.
    Capacity,
}

impl StatsRejection {
    const ALL: [StatsRejection; 5] = [
        StatsRejection::Malformed,
        StatsRejection::Oversized,
        StatsRejection::Invalid,
        StatsRejection::Identity,
        StatsRejection::Capacity,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            StatsRejection::Malformed => "malformed",
            StatsRejection::Oversized => "oversized",
            StatsRejection::Invalid => "invalid",
            StatsRejection::Identity => "identity",
            StatsRejection::Capacity => "capacity",
        }
    }
}

/// The stats sink's own numbers.
#[derive(Default)]
pub(crate) struct EnvoyStatsMetrics {
    pub streams: AtomicU64,
    pub envoys: AtomicU64,
    pub reports: AtomicU64,
    rejected: [AtomicU64; 5],
}

impl EnvoyStatsMetrics {
    pub(crate) fn rejected(&self, why: StatsRejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected_count(&self, why: StatsRejection) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        for (name, help, kind, v) in [
            (
                "meridian_envoy_stats_streams",
                "Open stats streams from Envoys (envoy.stat_sinks.metrics_service) on this node.",
                "gauge",
                &self.streams,
            ),
            (
                "meridian_envoy_stats_envoys",
                "Envoys whose pushed stats this node keeps (connected, or disconnected within the window).",
                "gauge",
                &self.envoys,
            ),
            (
                "meridian_envoy_stats_reports_total",
                "Stats messages from Envoys taken into the window.",
                "counter",
                &self.reports,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "meridian_envoy_stats_rejected_total";
        let _ = writeln!(
            out,
            "# HELP {name} Stats streams or messages from Envoys refused, by reason.\n# TYPE {name} counter"
        );
        for why in StatsRejection::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                why.name(),
                self.rejected_count(why)
            );
        }
    }
}

/// The two lanes of the write path, counted apart.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lane {
    Config,
    Endpoint,
}

impl Lane {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Lane::Config => "config",
            Lane::Endpoint => "endpoint",
        }
    }
}

/// One lane's counters.
pub(crate) struct LaneCounters<'a> {
    pub batches: &'a AtomicU64,
    pub txns: &'a AtomicU64,
    /// The endpoint lane's failures were never counted: the series means
    /// config batches.
    pub failures: Option<&'a AtomicU64>,
}

impl LaneCounters<'_> {
    pub(crate) fn failed(&self) {
        if let Some(f) = self.failures {
            f.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WriteMetrics {
    pub(crate) fn lane(&self, lane: Lane) -> LaneCounters<'_> {
        match lane {
            Lane::Config => LaneCounters {
                batches: &self.proposals,
                txns: &self.txns_committed,
                failures: Some(&self.proposal_failures),
            },
            Lane::Endpoint => LaneCounters {
                batches: &self.endpoint_batches,
                txns: &self.endpoint_txns,
                failures: None,
            },
        }
    }

    pub(crate) fn render(&self, out: &mut String) {
        if let Some(tls) = self.tls.get() {
            crate::tls::render(tls, out);
        }
        if let Some(peers) = self.peers.get() {
            let name = "meridian_peer_unreachable_total";
            let _ = writeln!(
                out,
                "# HELP {name} Raft RPCs to a peer that could not be reached (refused, reset, no answer in time).\n# TYPE {name} counter"
            );
            for (peer, n) in peers.totals() {
                let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {n}");
            }
        }
        self.envoy_stats.render(out);
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
            (
                "meridian_endpoint_batches_total",
                "Endpoint-lane batches proposed by this node as leader.",
                &self.endpoint_batches,
            ),
            (
                "meridian_endpoint_txns_total",
                "Endpoint-lane transactions committed through this node as leader.",
                &self.endpoint_txns,
            ),
            (
                "meridian_agent_sessions_total",
                "Agent sessions accepted by this node.",
                &self.agent_sessions,
            ),
            (
                "meridian_agent_updates_total",
                "Endpoint updates acknowledged to agents by this node.",
                &self.agent_updates,
            ),
            (
                "meridian_agent_nacks_total",
                "Endpoint updates refused (NACKed) by this node.",
                &self.agent_nacks,
            ),
            (
                "meridian_lease_expiries_total",
                "Agent leases this node expired as leader.",
                &self.lease_expiries,
            ),
            (
                "meridian_raft_snapshots_total",
                "Snapshots this node built or installed since it started.",
                &self.snapshots,
            ),
            (
                "meridian_raft_purges_total",
                "Log purges on this node since it started.",
                &self.purges,
            ),
        ] {
            counter(name, help, v);
        }
    }
}
