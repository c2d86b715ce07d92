//! Envoy traffic stats pushed to the controllers: Envoys stream their
//! counters (`envoy.stat_sinks.metrics_service`, on the xDS listener) and
//! each controller keeps, per Envoy, a bounded window of upstream requests
//! and 5xx summed over its clusters. [`TrafficStats`] answers "how many
//! requests and 5xx since T" for this node's Envoys or, asking every member
//! (`GetTrafficErrors`), for the whole cluster's: what a rollout gates on
//! without a Prometheus.
//!
//! `window` is the pure table and its delta math, `decode` picks the
//! counters out of a message, `service` is the gRPC sink, `fanout` asks the
//! other members.

mod decode;
mod fanout;
mod service;
mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use meridian_proto::v1 as pb;
use meridian_store::NodeId;

use crate::membership::Membership;
use crate::metrics::WriteMetrics;
use crate::routing::Router;

pub(crate) use service::MetricsSink;
pub(crate) use window::Limits;
use window::{Refused, Report, Table};

/// Upstream requests and 5xx of a set of Envoys over a window, and how
/// many distinct Envoys reported in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorCounts {
    pub requests: u64,
    pub errors: u64,
    pub envoys: u32,
}

/// The pushed stats of this node's Envoys, and the way to everyone else's.
#[derive(Clone)]
pub(crate) struct TrafficStats {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    region: String,
    limits: Limits,
    table: Mutex<Table>,
    metrics: Arc<WriteMetrics>,
    /// The other members, for the fan-out; `None` answers locally only.
    peers: Option<(Router, Membership)>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TrafficStats {
    pub(crate) fn new(
        node_id: NodeId,
        region: String,
        limits: Limits,
        metrics: Arc<WriteMetrics>,
        peers: Option<(Router, Membership)>,
    ) -> TrafficStats {
        TrafficStats {
            inner: Arc::new(Inner {
                node_id,
                region,
                limits,
                table: Mutex::new(Table::new(limits)),
                metrics,
                peers,
            }),
        }
    }

    /// Cluster-wide: every Envoy of `region` (and `proxy_group` if given) connected to ANY
    /// controller; counter deltas since `since_unix_ms`. Asks the other controllers (fan-out).
    ///
    /// A member that does not answer makes this an error (retryable): a
    /// sum without its Envoys could hide the very errors a gate looks for.
    #[allow(dead_code)] // the rollout's gate (issue 16) calls it
    pub(crate) async fn region_errors(
        &self,
        region: &str,
        proxy_group: Option<&str>,
        since_unix_ms: u64,
    ) -> Result<ErrorCounts, crate::error::ApiError> {
        if region.is_empty() {
            return Err(crate::error::ApiError::Invalid("region: required".into()));
        }
        let r = self
            .traffic(&pb::TrafficErrorsRequest {
                region: region.to_string(),
                proxy_group: proxy_group.unwrap_or_default().to_string(),
                since_unix_ms,
                local_only: false,
            })
            .await;
        if !r.unanswered.is_empty() {
            return Err(crate::error::ApiError::Unavailable(format!(
                "traffic stats of region {region} are incomplete: {}",
                r.unanswered.join("; ")
            )));
        }
        Ok(ErrorCounts {
            requests: r.requests,
            errors: r.errors,
            envoys: r.envoys,
        })
    }

    /// This controller's Envoys only.
    #[allow(dead_code)] // the rollout's gate (issue 16) calls it
    pub(crate) fn local_errors(
        &self,
        region: &str,
        proxy_group: Option<&str>,
        since_unix_ms: u64,
    ) -> ErrorCounts {
        sum(&self.local(Some(region), proxy_group, since_unix_ms))
    }

    /// Each Envoy whose stats reach this node, of `region` and `group`
    /// (`None`: any), with its counts since `since_ms`.
    pub(crate) fn local(
        &self,
        region: Option<&str>,
        group: Option<&str>,
        since_ms: u64,
    ) -> Vec<pb::EnvoyTraffic> {
        let mut t = self.table();
        t.maybe_sweep(now_ms());
        self.set_envoys(&t);
        t.since(region, group, since_ms)
            .into_iter()
            .map(|w| pb::EnvoyTraffic {
                node_id: w.node_id,
                controller_id: self.inner.node_id,
                region: w.region,
                proxy_group: w.group,
                requests: w.counts.requests,
                errors: w.counts.errors,
                last_report_unix_ms: w.last_report_ms,
                connected: w.connected,
            })
            .collect()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_envoys(&self, t: &Table) {
        let m = &self.inner.metrics.envoy_stats;
        m.envoys.store(t.len() as u64, Ordering::Relaxed);
    }

    fn open(&self, node_id: &str, region: &str, group: &str) -> Result<OpenStream, Refused> {
        let mut t = self.table();
        t.open(node_id, region, group, now_ms())?;
        self.set_envoys(&t);
        self.inner
            .metrics
            .envoy_stats
            .streams
            .fetch_add(1, Ordering::Relaxed);
        Ok(OpenStream {
            stats: self.clone(),
            node_id: node_id.to_string(),
        })
    }

    fn report(&self, node_id: &str, report: Report) -> Result<(), Refused> {
        self.table().report(node_id, report, now_ms())?;
        self.inner
            .metrics
            .envoy_stats
            .reports
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The per-Envoy counts summed; an Envoy that several controllers hold
/// (it moved during the window) counts once.
pub(crate) fn sum(per_envoy: &[pb::EnvoyTraffic]) -> ErrorCounts {
    let ids: BTreeSet<&str> = per_envoy.iter().map(|e| e.node_id.as_str()).collect();
    ErrorCounts {
        requests: per_envoy.iter().map(|e| e.requests).sum(),
        errors: per_envoy.iter().map(|e| e.errors).sum(),
        envoys: ids.len() as u32,
    }
}

/// A stats stream in the table; dropping it (the stream ended, however)
/// marks the Envoy disconnected.
struct OpenStream {
    stats: TrafficStats,
    node_id: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let now = now_ms();
        let mut t = self.stats.table();
        t.close(&self.node_id, now);
        t.maybe_sweep(now);
        self.stats.set_envoys(&t);
        self.stats
            .inner
            .metrics
            .envoy_stats
            .streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}
