use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::types;

/// The four ways to talk xDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    SotwAds,
    DeltaAds,
    SotwPerType,
    DeltaPerType,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::SotwAds,
        Variant::DeltaAds,
        Variant::SotwPerType,
        Variant::DeltaPerType,
    ];

    pub fn is_delta(self) -> bool {
        matches!(self, Variant::DeltaAds | Variant::DeltaPerType)
    }

    pub fn is_ads(self) -> bool {
        matches!(self, Variant::SotwAds | Variant::DeltaAds)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters and gauges the node renders for Prometheus. Plain atomics so
/// reading them never contends with a push.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    pub pushes: AtomicU64,
    pub responses: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub stale_requests: AtomicU64,
    /// New streams (and fetches) refused with UNAVAILABLE because the
    /// source was not ready (`SnapshotSource::ready`).
    pub refused_streams: AtomicU64,
    /// New streams (and fetches) refused with PERMISSION_DENIED by the
    /// [`StreamAuthorizer`](crate::StreamAuthorizer).
    pub denied_streams: AtomicU64,
    pub debounce_merges: AtomicU64,
    pub pushes_in_flight: AtomicI64,
    /// Highest `pushes_in_flight` seen: shows the concurrency limit holds.
    pub pushes_in_flight_max: AtomicI64,
    streams: [AtomicI64; 4],
    /// From the commit of a change (the leader's clock, as the source reports
    /// it) to each stream's first ACK of a type at that revision.
    pub push_to_ack: Histogram,
    /// Streams subscribed to a type, by [`types::metric_index`] then variant.
    subscribed: [[AtomicI64; 4]; 6],
}

impl XdsMetrics {
    /// Connected streams of one variant.
    pub fn streams(&self, variant: Variant) -> i64 {
        self.streams[variant.index()].load(Ordering::Relaxed)
    }

    /// Connected streams of one variant that subscribed to `type_url`.
    pub fn subscribed(&self, type_url: &str, variant: Variant) -> i64 {
        self.subscribed[types::metric_index(type_url)][variant.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn stream_opened(&self, v: Variant) {
        self.streams[v.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_closed(&self, v: Variant) {
        self.streams[v.index()].fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn type_subscribed(&self, type_url: &str, v: Variant, delta: i64) {
        self.subscribed[types::metric_index(type_url)][v.index()]
            .fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn push_started(&self) {
        let now = self.pushes_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.pushes_in_flight_max.fetch_max(now, Ordering::SeqCst);
    }

    pub(crate) fn push_finished(&self) {
        self.pushes_in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl XdsMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
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

    /// Appends the histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
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
