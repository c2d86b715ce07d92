//! The report of `xds`: memory per idle stream, the initial sync, and per
//! route change the spread of ACK times; and its table form.

use anyhow::Result;
use serde::Serialize;

use super::XdsVariant;
use crate::output::{table, Format};

#[derive(Serialize, Debug)]
pub(super) struct NodeMemory {
    pub(super) node: usize,
    pub(super) xds: String,
    pub(super) streams: f64,
    pub(super) rss_before_bytes: u64,
    pub(super) rss_after_bytes: u64,
}

#[derive(Serialize, Debug)]
pub(super) struct ChangeResult {
    pub(super) change: usize,
    pub(super) route: String,
    pub(super) what: String,
    /// Txn sent → answered.
    pub(super) commit_ms: f64,
    /// Streams that ACKed a push after the commit.
    pub(super) acked: usize,
    /// Per stream: Txn answered → ACK of the last response of the push.
    /// `min_ms` is the first stream's.
    pub(super) min_ms: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
    /// Responses received by the clients for this change (all streams).
    pub(super) responses: u64,
    /// Protobuf bytes of those responses (no gRPC/HTTP/2 framing).
    pub(super) bytes: u64,
    pub(super) bytes_per_stream: f64,
    /// The controllers' own count (meridian_xds_responses_total, summed).
    pub(super) server_responses: Option<u64>,
}

#[derive(Serialize, Debug)]
pub(super) struct XdsReport {
    pub(super) nodes: usize,
    pub(super) variant: XdsVariant,
    pub(super) services: usize,
    pub(super) routes: usize,
    pub(super) listeners: usize,
    /// Resources one Envoy holds once synced (all types).
    pub(super) resources_per_envoy: usize,
    pub(super) streams: usize,
    pub(super) connections: usize,
    pub(super) streams_per_connection: usize,
    pub(super) nofile_limit: u64,
    pub(super) synced: usize,
    pub(super) sync_p50_ms: f64,
    pub(super) sync_p99_ms: f64,
    pub(super) sync_max_ms: f64,
    /// Bytes received by all clients for the initial sync.
    pub(super) sync_bytes: u64,
    pub(super) memory: Vec<NodeMemory>,
    pub(super) rss_before_bytes: u64,
    pub(super) rss_after_bytes: u64,
    /// (after - before) summed over nodes / streams.
    pub(super) bytes_per_idle_stream: f64,
    /// This process (the simulated Envoys), for scale.
    pub(super) loadgen_rss_bytes: Option<u64>,
    pub(super) changes: Vec<ChangeResult>,
    /// Median over changes of each change's p99 / max.
    pub(super) median_p99_ms: f64,
    pub(super) median_max_ms: f64,
    pub(super) failed_streams: usize,
    pub(super) first_error: Option<String>,
}

pub(super) fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0))
}

pub(super) fn print(r: &XdsReport, format: Format) -> Result<()> {
    if matches!(format, Format::Json | Format::Yaml) {
        return Ok(crate::output::print_value(&serde_json::to_value(r)?, format)?);
    }
    println!(
        "xds: {} node(s), {:?}, {} streams on {} connections ({} per connection), \
         {} services / {} routes / {} listeners = {} resources per Envoy",
        r.nodes,
        r.variant,
        r.streams,
        r.connections,
        r.streams_per_connection,
        r.services,
        r.routes,
        r.listeners,
        r.resources_per_envoy
    );
    println!(
        "synced {}/{}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} MiB received",
        r.synced,
        r.streams,
        r.sync_p50_ms,
        r.sync_p99_ms,
        r.sync_max_ms,
        mib(r.sync_bytes)
    );
    let rows: Vec<Vec<String>> = r
        .memory
        .iter()
        .map(|m| {
            vec![
                m.node.to_string(),
                format!("{:.0}", m.streams),
                mib(m.rss_before_bytes),
                mib(m.rss_after_bytes),
                format!(
                    "{:.1}",
                    (m.rss_after_bytes as f64 - m.rss_before_bytes as f64)
                        / m.streams.max(1.0)
                        / 1024.0
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NODE",
                "STREAMS",
                "RSS BEFORE MIB",
                "RSS SYNCED MIB",
                "KIB/STREAM"
            ],
            &rows
        )
    );
    println!(
        "controller memory per idle stream: {:.1} KiB (all nodes); load generator RSS {} MiB",
        r.bytes_per_idle_stream / 1024.0,
        r.loadgen_rss_bytes.map(mib).unwrap_or_else(|| "-".into())
    );
    let rows: Vec<Vec<String>> = r
        .changes
        .iter()
        .map(|c| {
            vec![
                c.change.to_string(),
                format!("{} {}", c.route, c.what),
                format!("{:.1}", c.commit_ms),
                c.acked.to_string(),
                format!("{:.0}", c.min_ms),
                format!("{:.0}", c.p50_ms),
                format!("{:.0}", c.p99_ms),
                format!("{:.0}", c.max_ms),
                c.responses.to_string(),
                format!("{:.0}", c.bytes_per_stream),
                format!("{:.1}", c.bytes as f64 / (1024.0 * 1024.0)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "CHANGE",
                "WHAT",
                "COMMIT MS",
                "ACKED",
                "MIN MS",
                "P50 MS",
                "P99 MS",
                "MAX MS",
                "RESPONSES",
                "B/STREAM",
                "MIB TOTAL",
            ],
            &rows
        )
    );
    println!(
        "median over changes: p99 {:.0} ms, max {:.0} ms (commit answered -> ACK by each stream)",
        r.median_p99_ms, r.median_max_ms
    );
    if r.failed_streams > 0 {
        println!(
            "failed streams: {} (first error: {})",
            r.failed_streams,
            r.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

