//! `meridian-bench xds`: xDS fan-out of a route change to many idle Envoys.
//!
//! Starts its own controller(s), writes a config (services with static
//! endpoints, one route per service, one listener per ten routes) in one
//! transaction, connects simulated Envoys (`meridian_xds::testing`, which
//! ACK like Envoy) spread over the nodes' xDS listeners, waits until all are
//! synced, reads the controllers' RSS before and after, then commits route
//! changes one at a time and measures, per stream, the time from the
//! transaction's answer to the stream's ACK of the push.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_testkit::{percentile, Cluster, ClusterOpts};
use meridian_xds::testing::bench::{Fleet, FleetConfig, Mark};
use meridian_xds::Variant;
use serde::Serialize;
use serde_json::json;

use crate::metrics;
use crate::setup::{channel, put, txn};

mod report;

use report::{print, ChangeResult, NodeMemory, XdsReport};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdsVariant {
    Delta,
    Sotw,
}

#[derive(clap::Args, Debug)]
pub struct XdsArgs {
    /// Controllers to start (1, or 3 for a cluster); streams are spread
    /// over their xDS listeners.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Services in the config (one route each, one listener per 10 routes).
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Simulated Envoys (one ADS stream each).
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    /// ADS streams multiplexed on one HTTP/2 connection (the server allows
    /// 100 by default).
    #[arg(long, default_value_t = 100)]
    pub streams_per_connection: usize,
    #[arg(long, value_enum, default_value_t = XdsVariant::Delta)]
    pub variant: XdsVariant,
    /// Route changes to measure, one after the other.
    #[arg(long, default_value_t = 5)]
    pub changes: usize,
    /// Give up waiting for the initial sync after this long.
    #[arg(long, default_value = "300s", value_parser = crate::output::parse_duration)]
    pub sync_timeout: Duration,
    /// Give up waiting for one change's ACKs after this long.
    #[arg(long, default_value = "60s", value_parser = crate::output::parse_duration)]
    pub change_timeout: Duration,
    /// Where the controllers keep their data (a temp dir inside it).
    #[arg(long)]
    pub data_root: Option<std::path::PathBuf>,
}

pub async fn run(a: XdsArgs, g: &crate::Global) -> Result<()> {
    let r = bench(a, g.timeout).await?;
    print(&r, g.output)
}

async fn bench(a: XdsArgs, timeout: Duration) -> Result<XdsReport> {
    if a.nodes == 0 || a.services == 0 || a.streams == 0 {
        bail!("--nodes, --services and --streams must be positive");
    }
    let per = a.streams_per_connection.max(1);
    let connections = a.streams.div_ceil(per);
    // Both ends of every connection live on this machine; children inherit
    // the limit.
    let nofile = raise_nofile();
    let need = 2 * connections as u64 + 200;
    if nofile < need {
        bail!(
            "{} connections need about {need} file descriptors here (both ends) but \
             RLIMIT_NOFILE is {nofile}; raise it or --streams-per-connection",
            connections
        );
    }
    eprintln!("starting {} controller(s) ...", a.nodes);
    let cluster = Cluster::try_start(a.nodes, ClusterOpts::bench(a.data_root.as_deref())).await?;
    cluster.announce();
    let apis = cluster.api_addrs();
    let xds: Vec<SocketAddr> = cluster.xds_socket_addrs();
    let admins = cluster.admin_addrs();

    let mut api = ConfigServiceClient::new(channel(&apis[0], timeout).await?);
    let listeners = a.services.div_ceil(10);
    let t = Instant::now();
    txn(&mut api, "bench-xds-config", config_ops(a.services)).await?;
    eprintln!(
        "config: {} services, {} routes, {listeners} listeners, committed in {:.0} ms",
        a.services,
        a.services,
        t.elapsed().as_secs_f64() * 1000.0
    );

    let variant = match a.variant {
        XdsVariant::Delta => Variant::DeltaAds,
        XdsVariant::Sotw => Variant::SotwAds,
    };
    // One probe Envoy per node: every node serves the whole config before
    // the memory baseline is read.
    let resources = probe(&xds, variant, a.services + listeners).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss(&admins).await?;

    eprintln!(
        "connecting {} {:?} streams over {connections} connections ...",
        a.streams, a.variant
    );
    let fleet = Fleet::start(&FleetConfig {
        addrs: xds.clone(),
        streams: a.streams,
        streams_per_connection: per,
        variant,
        proxy_group: String::new(),
        region: "us-east".into(),
        id_prefix: "bench-".into(),
    })
    .await
    .context("connecting the simulated Envoys")?;
    let synced = fleet.wait_synced(a.sync_timeout).await;
    let marks = fleet.marks();
    let mut sync: Vec<Duration> = marks
        .iter()
        .filter_map(|m| m.first_synced)
        .map(|t| t.saturating_duration_since(fleet.started))
        .collect();
    sync.sort();
    let sync_bytes: u64 = marks.iter().map(|m| m.bytes).sum();
    eprintln!(
        "{synced}/{} synced in {:.2} s",
        a.streams,
        sync.last().copied().unwrap_or_default().as_secs_f64()
    );
    // Let allocators and buffers settle before the idle reading.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss(&admins).await?;
    let loadgen_rss_bytes = self_rss();

    let mut changes = Vec::new();
    for k in 0..a.changes {
        let i = (k * 37 + 11) % a.services;
        let route = format!("route-{i:04}");
        let (spec, what) = changed_route(i, a.services, k);
        let before_marks = fleet.marks();
        let server_before = server_responses(&admins).await;
        let sent = Instant::now();
        txn(
            &mut api,
            &format!("bench-xds-change-{k}-{}", rand::random::<u32>()),
            vec![put("route", &route, &spec)],
        )
        .await?;
        let committed = Instant::now();
        let end = fleet
            .wait_pushed(&before_marks, Duration::from_millis(500), a.change_timeout)
            .await;
        let server_after = server_responses(&admins).await;
        let r = change_result(k, route, what, sent, committed, &before_marks, &end);
        eprintln!(
            "change {k}: {} acked, min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {:.0} B/stream",
            r.acked, r.min_ms, r.p50_ms, r.p99_ms, r.max_ms, r.bytes_per_stream
        );
        changes.push(ChangeResult {
            server_responses: match (server_before, server_after) {
                (Some(b), Some(a)) if a >= b => Some(a - b),
                _ => None,
            },
            ..r
        });
    }
    let totals = fleet.stop().await;
    drop(cluster);

    let pick = |v: &[Duration], q: f64| ms(pick_q(v, q));
    let node_streams = |n: usize| {
        // Connection c goes to node c mod N; a connection holds `per`
        // streams (the last one the remainder).
        (0..connections)
            .filter(|c| c % a.nodes == n)
            .map(|c| per.min(a.streams - c * per))
            .sum::<usize>() as f64
    };
    let memory: Vec<NodeMemory> = (0..a.nodes)
        .map(|n| NodeMemory {
            node: n + 1,
            xds: xds[n].to_string(),
            streams: node_streams(n),
            rss_before_bytes: before[n],
            rss_after_bytes: after[n],
        })
        .collect();
    let rb: u64 = before.iter().sum();
    let ra: u64 = after.iter().sum();
    let median = |f: fn(&ChangeResult) -> f64| {
        let mut v: Vec<f64> = changes.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
    };
    Ok(XdsReport {
        nodes: a.nodes,
        variant: a.variant,
        services: a.services,
        routes: a.services,
        listeners,
        resources_per_envoy: resources,
        streams: a.streams,
        connections,
        streams_per_connection: per,
        nofile_limit: nofile,
        synced,
        sync_p50_ms: pick(&sync, 0.5),
        sync_p99_ms: pick(&sync, 0.99),
        sync_max_ms: ms(sync.last().copied().unwrap_or_default()),
        sync_bytes,
        memory,
        rss_before_bytes: rb,
        rss_after_bytes: ra,
        bytes_per_idle_stream: (ra as f64 - rb as f64) / a.streams as f64,
        loadgen_rss_bytes,
        median_p99_ms: median(|c| c.p99_ms),
        median_max_ms: median(|c| c.max_ms),
        changes,
        failed_streams: totals.failed,
        first_error: totals.first_error,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The test kit's nearest rank; zero when nothing was measured.
fn pick_q(sorted: &[Duration], q: f64) -> Duration {
    percentile(sorted, q).unwrap_or(Duration::ZERO)
}

fn change_result(
    k: usize,
    route: String,
    what: String,
    sent: Instant,
    committed: Instant,
    before: &[Mark],
    end: &[Mark],
) -> ChangeResult {
    let mut lat = Vec::new();
    let mut responses = 0;
    let mut bytes = 0;
    for (b, e) in before.iter().zip(end) {
        responses += e.responses - b.responses;
        bytes += e.bytes - b.bytes;
        if e.responses > b.responses {
            if let Some(t) = e.last_ack {
                // A push cannot precede the commit; saturate in case the
                // answer reached us after the push did.
                lat.push(t.saturating_duration_since(committed));
            }
        }
    }
    lat.sort();
    ChangeResult {
        change: k + 1,
        route,
        what,
        commit_ms: ms(committed - sent),
        acked: lat.len(),
        min_ms: ms(lat.first().copied().unwrap_or_default()),
        p50_ms: ms(pick_q(&lat, 0.5)),
        p99_ms: ms(pick_q(&lat, 0.99)),
        max_ms: ms(lat.last().copied().unwrap_or_default()),
        responses,
        bytes,
        bytes_per_stream: bytes as f64 / before.len().max(1) as f64,
        server_responses: None,
    }
}

/// Opens one stream per node and waits until each holds the same, non-empty
/// config with at least `min` resources; returns the count.
async fn probe(xds: &[SocketAddr], variant: Variant, min: usize) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fleet = Fleet::start(&FleetConfig {
            addrs: xds.to_vec(),
            streams: xds.len(),
            streams_per_connection: 1,
            variant,
            proxy_group: String::new(),
            region: "us-east".into(),
            id_prefix: "bench-probe-".into(),
        })
        .await
        .context("connecting the probe")?;
        let synced = fleet.wait_synced(Duration::from_secs(10)).await;
        // Followers can trail; give pushes a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counts: Vec<usize> = fleet.marks().iter().map(|m| m.resources).collect();
        fleet.stop().await;
        if synced == xds.len() && counts.iter().all(|&c| c >= min && c == counts[0]) {
            return Ok(counts[0]);
        }
        if Instant::now() > deadline {
            bail!("the controllers do not serve the config: resources per node {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}


fn route_spec(i: usize, services: usize, timeout_s: usize, weight: usize) -> serde_json::Value {
    let other = (i + 1) % services;
    let mut backends = vec![json!({"service": format!("svc-{i:04}"), "weight": 100 - weight})];
    if other != i && weight > 0 {
        backends.push(json!({"service": format!("svc-{other:04}"), "weight": weight}));
    }
    json!({
        "hosts": [format!("svc-{i:04}.bench.internal")],
        "rules": [
            {"matches": [{"path": {"prefix": "/api"}}], "backends": backends, "timeout": format!("{timeout_s}s"),
             "retries": {"attempts": 2}},
            {"backends": [{"service": format!("svc-{i:04}")}], "timeout": "15s"}
        ]
    })
}

/// Change `k` alternates between a new timeout and a new canary weight.
fn changed_route(i: usize, services: usize, k: usize) -> (serde_json::Value, String) {
    if k % 2 == 0 {
        let t = 6 + k;
        (
            route_spec(i, services, t, 10),
            format!("timeout 5s -> {t}s"),
        )
    } else {
        let w = 10 + k;
        (
            route_spec(i, services, 5, w),
            format!("weights 90/10 -> {}/{w}", 100 - w),
        )
    }
}

/// Region, services with one static endpoint each, one route per service
/// (two rules, a 90/10 split to the next service), one listener per ten
/// routes.
fn config_ops(services: usize) -> Vec<pb::TxnOp> {
    let mut ops = vec![put("region", "us-east", &json!({}))];
    for i in 0..services {
        ops.push(put(
            "service",
            &format!("svc-{i:04}"),
            &json!({
                "port": 8000 + i,
                "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]
            }),
        ));
    }
    for i in 0..services {
        ops.push(put(
            "route",
            &format!("route-{i:04}"),
            &route_spec(i, services, 5, 10),
        ));
    }
    for l in 0..services.div_ceil(10) {
        let routes: Vec<String> = (l * 10..(l * 10 + 10).min(services))
            .map(|i| format!("route-{i:04}"))
            .collect();
        ops.push(put(
            "listener",
            &format!("listener-{l:03}"),
            &json!({"port": 10000 + l, "routes": routes}),
        ));
    }
    ops
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit
/// in force.
fn raise_nofile() -> u64 {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

async fn rss(admins: &[String]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for a in admins {
        out.push(
            metrics::scrape(a, "process_resident_memory_bytes")
                .await
                .with_context(|| format!("RSS of the node at {a}"))?,
        );
    }
    Ok(out)
}

async fn server_responses(admins: &[String]) -> Option<u64> {
    let mut sum = 0.0;
    for a in admins {
        sum += metrics::scrape_sums(a, &["meridian_xds_responses_total"])
            .await
            .ok()?[0];
    }
    Some(sum as u64)
}

fn self_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_listener_per_ten_routes() {
        let ops = config_ops(25);
        assert_eq!(ops.len(), 1 + 25 + 25 + 3);
    }
}
