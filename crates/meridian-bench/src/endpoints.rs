//! `meridian-bench endpoints`: endpoint churn through the agents' upward
//! protocol, and how soon Envoys see it (issue 5). This file is long because
//! it is the run's whole timeline (setup, load, measure, teardown) in order;
//! the agent, the Envoys, the ledger and the report are in `endpoints/`.
//!
//! Starts its own 3-node loopback cluster, registers `--clusters` clusters
//! (one per region, round robin over us-east, eu-west, ap-south) and
//! `--services` services, and runs one in-process simulated agent per cluster
//! that speaks the real protocol (`AgentService.Report`: Hello, Welcome, a
//! full update with `replace`, then deltas, one in flight, ACK per version).
//! Endpoint `k` (service `k / endpoints`) belongs to cluster `k mod clusters`.
//!
//! A generator makes `--rate` changes per second (a health flip or a weight
//! change of one random endpoint) for `--duration`; each change goes to its
//! cluster's agent, which folds whatever accumulates while an update is in
//! flight into its next delta, like the real agent.
//!
//! `--envoys` simulated Envoys (delta ADS, region us-east) follow CDS and
//! every service's EDS on the nodes' xDS listeners. Every `--sample-every`th
//! change is a probe: it goes to an endpoint of a reserved pool (every tenth
//! endpoint) that no other change touches, and is not changed again before
//! every Envoy has seen the probe, so the first CLA that carries the probed
//! health and weight is the push of that change and of nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_testkit::{Cluster, ClusterOpts};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics;
use crate::setup::{channel, put, txn};
use crate::store::meridian_sut;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
const INITIAL_WEIGHT: u32 = 10;
const HEALTHY: i32 = pb::EndpointHealth::Healthy as i32;
const UNHEALTHY: i32 = pb::EndpointHealth::Unhealthy as i32;
/// Every POOL-th endpoint is a probe endpoint, changed only by samples.
const POOL: u32 = 10;

#[derive(clap::Args, Debug)]
pub struct EndpointsArgs {
    /// Services (each with --endpoints endpoints).
    #[arg(long, default_value_t = 1000)]
    pub services: u32,
    /// Endpoints per service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    /// Registered clusters, one simulated agent each; cluster i is in region
    /// us-east, eu-west, ap-south (i mod 3).
    #[arg(long, default_value_t = 3)]
    pub clusters: u32,
    /// Target endpoint changes per second (all agents together).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// How long changes are generated.
    #[arg(long, default_value = "10s", value_parser = crate::output::parse_duration)]
    pub duration: Duration,
    /// Simulated Envoys (delta ADS, region us-east), over the nodes' xDS
    /// listeners round robin.
    #[arg(long, default_value_t = 10)]
    pub envoys: usize,
    /// Every n-th change is a probe whose arrival at every Envoy is timed.
    #[arg(long, default_value_t = 100)]
    pub sample_every: u64,
    /// After the run, wait this long at most for the backlog to be committed
    /// and the probes to arrive.
    #[arg(long, default_value = "60s", value_parser = crate::output::parse_duration)]
    pub drain_timeout: Duration,
    /// Where the cluster keeps its data (a temp dir inside it).
    #[arg(long)]
    pub data_root: Option<std::path::PathBuf>,
}

mod agent;
mod book;
mod envoys;
mod report;

use agent::{addr_of, cluster_name, run_agent, svc_name, AgentCfg};
use book::{Book, Change, Sample};
use envoys::{run_envoy, EnvoyStats};
use report::{cpu_secs, pcts, print, us, Report};

/// xorshift64*: no dependency on the rand API for the hot loop.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }
}

async fn scrape_opt(addr: &str, name: &str) -> Option<u64> {
    match metrics::scrape(addr, name).await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("warning: reading {name} from {addr}: {e:#}");
            None
        }
    }
}

/// The counters a run is measured by, read before and after it.
struct Totals {
    /// The leader's endpoint-lane batches and transactions, when it answers.
    batches: Option<u64>,
    txns: Option<u64>,
    /// Over all simulated Envoys.
    bytes: u64,
    responses: u64,
    resources: u64,
}

impl Totals {
    async fn read<T>(leader_admin: Option<&str>, envoys: &[(Arc<EnvoyStats>, T)]) -> Totals {
        let (batches, txns) = match leader_admin {
            Some(ad) => (
                scrape_opt(ad, "meridian_endpoint_batches_total").await,
                scrape_opt(ad, "meridian_endpoint_txns_total").await,
            ),
            None => (None, None),
        };
        let sum = |f: fn(&EnvoyStats) -> &AtomicU64| -> u64 {
            envoys.iter().map(|(s, _)| f(s).load(Ordering::Relaxed)).sum()
        };
        Totals {
            batches,
            txns,
            bytes: sum(|s| &s.bytes),
            responses: sum(|s| &s.responses),
            resources: sum(|s| &s.eds_resources),
        }
    }
}

/// How much a leader counter grew; unknown if either read failed or it went
/// back (a new leader counts from zero).
fn growth(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    match (before, after) {
        (Some(x), Some(y)) if y >= x => Some(y - x),
        _ => None,
    }
}

pub async fn run(a: EndpointsArgs, g: &crate::Global) -> Result<()> {
    let r = bench(a, g.timeout).await?;
    print(&r, g.output)
}

async fn bench(a: EndpointsArgs, timeout: Duration) -> Result<Report> {
    if a.services == 0 || a.endpoints == 0 || a.clusters == 0 || a.rate == 0 || a.envoys == 0 {
        bail!("--services, --endpoints, --clusters, --rate and --envoys must be positive");
    }
    let total = a.services * a.endpoints;
    if total < 2 * POOL || total > 1 << 24 {
        bail!("services x endpoints must be between {} and 2^24", 2 * POOL);
    }
    let sample_every = a.sample_every.max(1);
    eprintln!("starting a 3-node loopback cluster (fsync on) ...");
    let cluster = Cluster::try_start(3, ClusterOpts::bench(a.data_root.as_deref())).await?;
    cluster.announce();
    let apis = cluster.api_addrs();
    let xds: Vec<SocketAddr> = cluster.xds_socket_addrs();
    let sut = meridian_sut(&apis, timeout).await?;
    let leader_admin = sut.leader_metrics.as_ref().map(|m| m.0.clone());

    // Config: regions, clusters, services.
    let mut api = ConfigServiceClient::new(channel(&apis[0], timeout).await?)
        .max_encoding_message_size(64 << 20);
    let mut ops: Vec<pb::TxnOp> = REGIONS
        .iter()
        .map(|r| put("region", r, &json!({})))
        .collect();
    let mut tokens = Vec::new();
    for c in 0..a.clusters {
        let token = format!("mrd_bench_{:032x}", rand::random::<u128>());
        ops.push(put(
            "cluster",
            &cluster_name(c),
            &json!({
                "region": REGIONS[c as usize % 3],
                "tokenSha256": hex::encode(Sha256::digest(token.as_bytes())),
                "leaseTtl": "30s",
            }),
        ));
        tokens.push(token);
    }
    txn(&mut api, "bench-endpoints-clusters", ops).await?;
    let t = Instant::now();
    for (i, chunk) in (0..a.services).collect::<Vec<_>>().chunks(1000).enumerate() {
        let ops = chunk
            .iter()
            .map(|&s| put("service", &svc_name(s), &json!({"port": 8080})))
            .collect();
        txn(&mut api, &format!("bench-endpoints-services-{i}"), ops).await?;
    }
    eprintln!(
        "config: {} clusters, {} services committed in {:.0} ms",
        a.clusters,
        a.services,
        t.elapsed().as_secs_f64() * 1000.0
    );

    // Envoys first, so they also see the initial full updates arrive.
    let book = Arc::new(Mutex::new(Book::default()));
    let warming = Arc::new(AtomicBool::new(true));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut envoys = Vec::new();
    for e in 0..a.envoys {
        let stats = Arc::new(EnvoyStats::default());
        let task = tokio::spawn(run_envoy(
            e,
            xds[e % xds.len()],
            book.clone(),
            stats.clone(),
            warming.clone(),
            stop_rx.clone(),
        ));
        envoys.push((stats, task));
    }

    // Agents: full sets.
    let acked = Arc::new(AtomicU64::new(0));
    let mut agent_tx = Vec::new();
    let mut agents = Vec::new();
    let mut readies = Vec::new();
    for c in 0..a.clusters {
        let (tx, rx) = mpsc::unbounded_channel();
        let (rtx, rrx) = oneshot::channel();
        let cfg = AgentCfg {
            cluster: c,
            clusters: a.clusters,
            services: a.services,
            per_svc: a.endpoints,
            api: apis[c as usize % apis.len()].clone(),
            token: tokens[c as usize].clone(),
        };
        agents.push(tokio::spawn(run_agent(
            cfg,
            rx,
            rtx,
            book.clone(),
            acked.clone(),
        )));
        agent_tx.push(tx);
        readies.push(rrx);
    }
    for r in readies {
        r.await.context("an agent task ended")??;
    }
    eprintln!(
        "{} agents sent their full sets; waiting for the Envoys ...",
        a.clusters
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held: Vec<u64> = envoys
            .iter()
            .map(|(s, _)| s.held.load(Ordering::Relaxed))
            .collect();
        if held.iter().all(|&h| h == total as u64) {
            break;
        }
        if let Some((_, t)) = envoys.iter().find(|(_, t)| t.is_finished()) {
            let _ = t;
            bail!("a simulated Envoy ended before syncing");
        }
        if Instant::now() > deadline {
            bail!("the Envoys did not get every endpoint within 120 s: held {held:?} of {total}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    warming.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "{} Envoys hold all {total} endpoints; {} changes/s for {:?} ...",
        a.envoys, a.rate, a.duration
    );

    // Baselines.
    let before = Totals::read(leader_admin.as_deref(), &envoys).await;
    let pids = cluster.pids();
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let cpu_self0 = cpu_secs(std::process::id());
    let acked0 = acked.load(Ordering::Relaxed);

    // The generator.
    let mut health = vec![HEALTHY; total as usize];
    let mut weight = vec![INITIAL_WEIGHT; total as usize];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ rand::random::<u64>() | 1);
    let mut generated = 0u64;
    let mut skipped = 0u64;
    let start = Instant::now();
    let end = start + a.duration;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = ((now - start).as_secs_f64() * a.rate as f64) as u64;
        while generated < due {
            generated += 1;
            let mut sample = None;
            let k = if generated % sample_every == 0 {
                // A free probe endpoint, or an ordinary change.
                let mut b = book.lock().expect("book");
                let mut pk = None;
                for _ in 0..16 {
                    let k = rng.below(total / POOL) * POOL;
                    if !b.busy.contains(&k) {
                        pk = Some(k);
                        break;
                    }
                }
                match pk {
                    Some(k) => {
                        b.busy.insert(k);
                        sample = Some((k, b.samples.len()));
                        k
                    }
                    None => {
                        skipped += 1;
                        drop(b);
                        loop {
                            let k = rng.below(total);
                            if k % POOL != 0 {
                                break k;
                            }
                        }
                    }
                }
            } else {
                loop {
                    let k = rng.below(total);
                    if k % POOL != 0 {
                        break k;
                    }
                }
            };
            let i = k as usize;
            if rng.next() & 1 == 0 {
                health[i] = if health[i] == HEALTHY {
                    UNHEALTHY
                } else {
                    HEALTHY
                };
            } else {
                weight[i] = weight[i] % 128 + 1;
            }
            let generated_at = Instant::now();
            let sample = sample.map(|(k, id)| {
                let mut b = book.lock().expect("book");
                let service = svc_name(k / a.endpoints);
                b.samples.push(Sample {
                    k,
                    address: addr_of(k),
                    health: health[i],
                    weight: weight[i],
                    generated: generated_at,
                    sent: None,
                    acked: None,
                    seen: vec![None; a.envoys],
                });
                b.pending.entry(service).or_default().push(id);
                id
            });
            let _ = agent_tx[(k % a.clusters) as usize].send(Change {
                k,
                health: health[i],
                weight: weight[i],
                generated: generated_at,
                sample,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let run_secs = start.elapsed().as_secs_f64();
    let acked_at_end = acked.load(Ordering::Relaxed) - acked0;
    eprintln!(
        "generated {generated} in {run_secs:.2} s; {acked_at_end} acked by then; draining ..."
    );
    drop(agent_tx);

    // Drain: the agents finish their backlog, then the probes arrive.
    let drain_start = Instant::now();
    let drain_end = drain_start + a.drain_timeout;
    let mut outs = Vec::new();
    let mut errors = Vec::new();
    for t in agents {
        match tokio::time::timeout_at(drain_end.into(), t).await {
            Ok(Ok(o)) => outs.push(o),
            Ok(Err(e)) => errors.push(format!("agent task: {e}")),
            Err(_) => errors.push("an agent did not drain in time".into()),
        }
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    while Instant::now() < drain_end && !book.lock().expect("book").pending.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last pushes land before counting bytes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu1: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let cpu_self1 = cpu_secs(std::process::id());
    let after = Totals::read(leader_admin.as_deref(), &envoys).await;
    let bytes = after.bytes - before.bytes;
    let eds_responses = after.responses - before.responses;
    let eds_resources = after.resources - before.resources;
    stop_tx.send_replace(true);
    for (_, t) in envoys {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(s)) => errors.push(format!("envoy: {:?}: {}", s.code(), s.message())),
            Err(e) => errors.push(format!("envoy task: {e}")),
        }
    }
    drop(cluster);

    let mut update_ack = Vec::new();
    let mut commit = Vec::new();
    let mut committed_in_run = 0u64;
    let mut committed_total = 0u64;
    let mut updates = 0u64;
    for o in outs {
        for &(at, n, lat) in &o.updates {
            updates += 1;
            committed_total += n as u64;
            if at <= end {
                committed_in_run += n as u64;
            }
            update_ack.push(lat);
        }
        commit.extend(o.commit_us);
        if let Some(e) = o.error {
            errors.push(e);
        }
    }
    let b = book.lock().expect("book");
    let mut from_send = Vec::new();
    let mut from_change = Vec::new();
    let mut from_ack = Vec::new();
    let mut unseen = 0;
    for s in &b.samples {
        for seen in &s.seen {
            match seen {
                Some(t) => {
                    from_change.push(us(t.saturating_duration_since(s.generated)));
                    if let Some(sent) = s.sent {
                        from_send.push(us(t.saturating_duration_since(sent)));
                    }
                    if let Some(ack) = s.acked {
                        from_ack.push(us(t.saturating_duration_since(ack)));
                    }
                }
                None => unseen += 1,
            }
        }
    }
    let entries = growth(before.batches, after.batches);
    let txns = growth(before.txns, after.txns);
    let measured = run_secs + drain_secs;
    Ok(Report {
        services: a.services,
        endpoints: a.endpoints,
        clusters: a.clusters,
        envoys: a.envoys,
        target_rate: a.rate,
        duration_secs: run_secs,
        generated,
        generated_per_sec: generated as f64 / run_secs,
        committed_in_run,
        committed_per_sec: committed_in_run as f64 / run_secs,
        committed_total,
        backlog_at_end: generated.saturating_sub(acked_at_end),
        drain_secs,
        updates,
        changes_per_update: committed_total as f64 / updates.max(1) as f64,
        update_ack: pcts(update_ack),
        change_commit: pcts(commit),
        raft_entries: entries,
        raft_entries_per_sec: entries.map(|e| e as f64 / measured),
        endpoint_txns: txns,
        txns_per_entry: match (txns, entries) {
            (Some(t), Some(e)) if e > 0 => Some(t as f64 / e as f64),
            _ => None,
        },
        changes_per_entry: entries
            .filter(|&e| e > 0)
            .map(|e| committed_total as f64 / e as f64),
        samples: b.samples.len(),
        samples_skipped: skipped,
        unseen,
        eds_from_send: pcts(from_send),
        eds_from_change: pcts(from_change),
        eds_from_ack: pcts(from_ack),
        eds_responses,
        eds_resources,
        bytes,
        bytes_per_change: bytes as f64 / committed_total.max(1) as f64,
        bytes_per_change_per_envoy: bytes as f64 / committed_total.max(1) as f64 / a.envoys as f64,
        cpu_secs_nodes: cpu0.iter().zip(&cpu1).map(|(x, y)| y - x).collect(),
        cpu_secs_loadgen: cpu_self1 - cpu_self0,
        leader: sut.leader,
        errors,
    })
}

