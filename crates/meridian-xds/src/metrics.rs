use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    pub debounce_merges: AtomicU64,
    pub pushes_in_flight: AtomicI64,
    /// Highest `pushes_in_flight` seen: shows the concurrency limit holds.
    pub pushes_in_flight_max: AtomicI64,
    streams: [AtomicI64; 4],
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
