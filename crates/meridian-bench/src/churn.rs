//! `meridian-bench endpoint-churn`: endpoint changes reported by agents (the
//! real upward protocol, in process) at a fixed rate, against a 3-node
//! loopback cluster, with a real Envoy watching EDS. Measures committed
//! changes per second, agent-side ACK latency, Raft entries per second, and
//! the time until a sampled change shows in the Envoy (its
//! `membership_healthy` gauge for the changed service).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_testkit::envoy::Envoy;
use meridian_testkit::{percentile, Cluster, ClusterOpts};
use meridian_translate::bootstrap::BootstrapSpec;
use rand::Rng as _;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::metrics::{get, scrape};
use crate::output::{print_value, table, Format};
use crate::Global;

#[derive(clap::Args, Debug, Clone)]
pub struct ChurnArgs {
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints per service (spread over the clusters).
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Clusters (one agent each), in regions us-east, eu-west, ap-south.
    #[arg(long, default_value_t = 3)]
    pub clusters: usize,
    /// Endpoint changes per second offered by all agents together.
    #[arg(long, default_value_t = 10_000)]
    pub rate: usize,
    #[arg(long, default_value = "10s", value_parser = crate::output::parse_duration)]
    pub duration: Duration,
}

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
/// Services whose sampler endpoint is flipped and timed.
const SAMPLED: usize = 10;
/// Index of the sampler's endpoint (outside the load's indexes).
const SAMPLE_EP: usize = 199;

/// The test kit's nearest rank, NaN (JSON null) when nothing was measured.
fn pct(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or(f64::NAN)
}

fn endpoint(svc: usize, i: usize, weight: u32, healthy: bool) -> pb::AgentEndpoint {
    pb::AgentEndpoint {
        service: format!("svc-{svc}"),
        // Distinct addresses per endpoint; Envoy never connects (no traffic).
        address: format!("127.{}.{}.{}", 1 + i % 200, svc / 250, 1 + svc % 250),
        port: 8080,
        zone: String::new(),
        weight,
        health: if healthy { pb::EndpointHealth::Healthy } else { pb::EndpointHealth::Unhealthy } as i32,
    }
}

pub async fn run(a: ChurnArgs, g: &Global) -> Result<()> {
    let clusters = a.clusters.clamp(1, 3);
    if a.services == 0 || a.endpoints < clusters {
        bail!("--services must be positive and --endpoints at least --clusters");
    }
    // Before the cluster: a missing Envoy should not cost a cluster start.
    meridian_testkit::envoy::try_envoy_bin()?;
    eprintln!("starting a 3-node loopback cluster ...");
    let lc = Cluster::try_start(3, ClusterOpts::bench(None)).await?;
    let api = lc.api_addrs();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", api[0]))?.connect().await?;
    let mut cfg = ConfigServiceClient::new(ch).max_encoding_message_size(64 << 20);

    // Services and registered clusters, in one transaction.
    let mut ops = Vec::new();
    let token = "bench-token";
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    for s in 0..a.services {
        ops.push(crate::setup::put("service", &format!("svc-{s}"), &json!({"port": 8080})));
    }
    for (c, region) in REGIONS.iter().enumerate().take(clusters) {
        ops.push(crate::setup::put("cluster", &format!("bench-{c}"), &json!({"region": region, "tokenSha256": digest})));
    }
    // A fourth cluster whose only job is the timed samples, so they travel
    // the same path as the load while it runs.
    ops.push(crate::setup::put("cluster", "bench-sample", &json!({"region": "us-east", "tokenSha256": digest})));
    cfg.txn(pb::TxnRequest { request_id: "bench-churn-setup".into(), ops, dry_run: false }).await?;

    // Agents: hello, welcome, full set. The last one is the sampler.
    let mut agents = Vec::new();
    for c in 0..=clusters {
        let sampler = c == clusters;
        let (name, region) = if sampler { ("bench-sample".to_string(), "us-east") } else { (format!("bench-{c}"), REGIONS[c]) };
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", api[c % api.len()]))?.connect().await?;
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
                cluster: name.clone(),
                region: region.into(),
                zone: String::new(),
                token: token.into(),
                session: format!("bench-{c}-{:x}", rand::random::<u64>()),
                agent: "bench".into(),
            })),
        })
        .await?;
        let mut stream = AgentServiceClient::new(ch).max_encoding_message_size(64 << 20).report(ReceiverStream::new(rx)).await?.into_inner();
        match stream.message().await? {
            Some(pb::ControllerMessage { msg: Some(pb::controller_message::Msg::Welcome(_)) }) => {}
            other => bail!("agent {c}: expected welcome, got {other:?}"),
        }
        let mut full = Vec::new();
        if sampler {
            for s in 0..SAMPLED.min(a.services) {
                full.push(endpoint(s, SAMPLE_EP, 1, true));
            }
        } else {
            for s in 0..a.services {
                for i in (c..a.endpoints).step_by(clusters) {
                    full.push(endpoint(s, i, 1, true));
                }
            }
        }
        tx.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Update(pb::EndpointUpdate { version: 1, replace: true, upserts: full, removals: vec![] })),
        })
        .await?;
        match stream.message().await? {
            Some(pb::ControllerMessage { msg: Some(pb::controller_message::Msg::Ack(_)) }) => {}
            other => bail!("agent {c}: full set not acknowledged: {other:?}"),
        }
        agents.push((tx, stream));
    }
    eprintln!("{} services x {} endpoints reported by {clusters} agents", a.services, a.endpoints);

    // A real Envoy in us-east watching everything.
    let spec = BootstrapSpec::new("bench-envoy", "us-east", Envoy::free_admin_port(), lc.controllers());
    let envoy = Envoy::from_spec(&spec, lc.dir(), "error")?;
    let admin_addr = envoy.admin_addr();
    let healthy_of = |svc: usize| {
        let admin_addr = admin_addr.clone();
        async move {
            let body = get(&admin_addr, &format!("/stats?filter=^cluster\\.svc-{svc}\\.membership_healthy$")).await.ok()?;
            body.lines().find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse::<u64>().ok()))
        }
    };
    let start = Instant::now();
    while healthy_of(a.services - 1).await != Some(a.endpoints as u64) || healthy_of(0).await != Some(a.endpoints as u64 + 1) {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("Envoy did not receive every endpoint within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("Envoy has all {} clusters after {:?}", a.services, start.elapsed());

    let leader_admin = lc.admin_addrs();
    let batches_before: u64 = {
        let mut sum = 0;
        for ad in &leader_admin {
            sum += scrape(ad, "meridian_endpoint_batches_total").await.unwrap_or(0);
        }
        sum
    };

    // Load: each agent sends deltas every 20 ms with its share of the rate;
    // one update in flight per agent, like the real agent.
    let tick = Duration::from_millis(20);
    let per_tick = (a.rate as f64 * tick.as_secs_f64() / clusters as f64).ceil() as usize;
    let deadline = Instant::now() + a.duration;
    let (sample_tx, mut sample_stream) = agents.pop().expect("sampler agent");
    let mut tasks = Vec::new();
    for (c, (tx, mut stream)) in agents.into_iter().enumerate() {
        let services = a.services;
        let endpoints = a.endpoints;
        tasks.push(tokio::spawn(async move {
            let mut version = 1u64;
            let mut weights: BTreeMap<(usize, usize), u32> = BTreeMap::new();
            let (mut changes, mut lat) = (0usize, Vec::new());
            let mut next = Instant::now();
            while Instant::now() < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += tick;
                let mut upserts = Vec::with_capacity(per_tick);
                for _ in 0..per_tick {
                    let s = rand::thread_rng().gen_range(0..services);
                    let i = c + clusters * rand::thread_rng().gen_range(0..endpoints.div_ceil(clusters).max(1));
                    if i >= endpoints || s >= services {
                        continue;
                    }
                    let w = weights.entry((s, i)).or_insert(1);
                    *w = if *w == 1 { 2 } else { 1 };
                    upserts.push(endpoint(s, i, *w, true));
                }
                version += 1;
                let n = upserts.len();
                let sent = Instant::now();
                let msg = pb::AgentMessage {
                    msg: Some(pb::agent_message::Msg::Update(pb::EndpointUpdate { version, replace: false, upserts, removals: vec![] })),
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
                match stream.message().await {
                    Ok(Some(pb::ControllerMessage { msg: Some(pb::controller_message::Msg::Ack(_)) })) => {
                        changes += n;
                        lat.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => break,
                }
            }
            drop((tx, stream, version));
            (changes, lat)
        }));
    }

    // Samples while the load runs: every 500 ms the sampler flips one
    // service's endpoint and times it until Envoy's membership_healthy for
    // that service moves by one.
    let mut vis = Vec::new();
    let mut sample_version = 1u64;
    let mut healthy = vec![true; SAMPLED.min(a.services)];
    let mut k = 0usize;
    while Instant::now() + Duration::from_millis(500) < deadline {
        let s = k % healthy.len();
        k += 1;
        let Some(before) = healthy_of(s).await else { continue };
        healthy[s] = !healthy[s];
        sample_version += 1;
        let sent = Instant::now();
        let u = pb::EndpointUpdate { version: sample_version, replace: false, upserts: vec![endpoint(s, SAMPLE_EP, 1, healthy[s])], removals: vec![] };
        sample_tx.send(pb::AgentMessage { msg: Some(pb::agent_message::Msg::Update(u)) }).await?;
        let _ = sample_stream.message().await?;
        let want = if healthy[s] { before + 1 } else { before.saturating_sub(1) };
        loop {
            if healthy_of(s).await == Some(want) {
                vis.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                vis.push(f64::INFINITY);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(500).saturating_sub(sent.elapsed())).await;
    }
    vis.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));

    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await?);
    }
    let elapsed = a.duration.as_secs_f64();
    let committed: usize = results.iter().map(|r| r.0).sum();
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.1.iter().copied()).collect();
    lat.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));
    let batches_after: u64 = {
        let mut sum = 0;
        for ad in &leader_admin {
            sum += scrape(ad, "meridian_endpoint_batches_total").await.unwrap_or(0);
        }
        sum
    };
    let entries = batches_after.saturating_sub(batches_before);

    let report = json!({
        "services": a.services, "endpoints_per_service": a.endpoints, "agents": clusters,
        "offered_changes_per_s": a.rate,
        "committed_changes_per_s": committed as f64 / elapsed,
        "agent_ack_ms": {"p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99)},
        "raft_entries_per_s": entries as f64 / elapsed,
        "changes_per_entry": if entries > 0 { committed as f64 / entries as f64 } else { 0.0 },
        "envoy_visible_ms": {"p50": pct(&vis, 0.5), "p99": pct(&vis, 0.99), "max": vis.last().copied().unwrap_or(f64::NAN), "samples": vis.len()},
    });
    match g.output {
        Format::Json | Format::Yaml => print_value(&report, g.output)?,
        _ => {
            let f = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
            print!(
                "{}",
                table(
                    &["OFFERED/S", "COMMITTED/S", "ACK P50 MS", "ACK P99 MS", "RAFT ENTRIES/S", "CHANGES/ENTRY", "ENVOY P50 MS", "ENVOY MAX MS"],
                    &[vec![
                        a.rate.to_string(),
                        f(&report["committed_changes_per_s"]),
                        f(&report["agent_ack_ms"]["p50"]),
                        f(&report["agent_ack_ms"]["p99"]),
                        f(&report["raft_entries_per_s"]),
                        f(&report["changes_per_entry"]),
                        f(&report["envoy_visible_ms"]["p50"]),
                        f(&report["envoy_visible_ms"]["max"]),
                    ]]
                )
            );
        }
    }
    Ok(())
}
