//! `meridian bench endpoints`: endpoint churn through the agents' upward
//! protocol, and how soon Envoys see it (issue 5).
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

use super::{put, txn};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meridian_proto::v1 as pb;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_xds::testing::fixtures::eds_name;
use meridian_xds::testing::{node, DeltaClient};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER};
use prost::Message;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{channel, local, meridian_sut, metrics};
use crate::output::Format;

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
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
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
    #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub drain_timeout: Duration,
    /// Where the cluster keeps its data (a temp dir inside it).
    #[arg(long)]
    pub data_root: Option<std::path::PathBuf>,
}

fn svc_name(s: u32) -> String {
    format!("svc-{s:05}")
}

fn cluster_name(c: u32) -> String {
    format!("bench-c{c}")
}

fn addr_of(k: u32) -> String {
    format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255)
}

/// Endpoint `k` in the agent protocol.
fn agent_ep(k: u32, per_svc: u32, health: i32, weight: u32) -> pb::AgentEndpoint {
    pb::AgentEndpoint {
        service: svc_name(k / per_svc),
        address: addr_of(k),
        port: 0,
        zone: String::new(),
        weight,
        health,
    }
}

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

struct Change {
    k: u32,
    health: i32,
    weight: u32,
    generated: Instant,
    sample: Option<usize>,
}

struct Sample {
    k: u32,
    address: String,
    health: i32,
    weight: u32,
    generated: Instant,
    sent: Option<Instant>,
    acked: Option<Instant>,
    seen: Vec<Option<Instant>>,
}

#[derive(Default)]
struct Book {
    samples: Vec<Sample>,
    /// Service -> samples not yet seen by every Envoy.
    pending: HashMap<String, Vec<usize>>,
    /// Probe endpoints with a sample in flight.
    busy: HashSet<u32>,
}

impl Book {
    /// Envoy `e` got this CLA at `now`.
    fn check(&mut self, e: usize, cla: &ClusterLoadAssignment, now: Instant) {
        let Some(ids) = self.pending.get(&cla.cluster_name) else {
            return;
        };
        let mut done = Vec::new();
        for &id in ids {
            let s = &mut self.samples[id];
            if s.seen[e].is_some() {
                continue;
            }
            let found = cla
                .endpoints
                .iter()
                .flat_map(|l| &l.lb_endpoints)
                .find(|lb| match &lb.host_identifier {
                    Some(HostIdentifier::Endpoint(ep)) => matches!(
                        ep.address.as_ref().and_then(|a| a.address.as_ref()),
                        Some(address::Address::SocketAddress(sa)) if sa.address == s.address
                    ),
                    _ => false,
                });
            if let Some(lb) = found {
                let w = lb
                    .load_balancing_weight
                    .as_ref()
                    .map(|w| w.value)
                    .unwrap_or(1);
                // Envoy's HealthStatus numbers HEALTHY 1 and UNHEALTHY 2,
                // as the agent protocol does.
                if lb.health_status == s.health && w == s.weight {
                    s.seen[e] = Some(now);
                    if s.seen.iter().all(Option::is_some) {
                        done.push(id);
                    }
                }
            }
        }
        if !done.is_empty() {
            let svc = cla.cluster_name.clone();
            for id in done {
                let k = self.samples[id].k;
                self.busy.remove(&k);
                if let Some(v) = self.pending.get_mut(&svc) {
                    v.retain(|&x| x != id);
                }
            }
            if self.pending.get(&svc).is_some_and(Vec::is_empty) {
                self.pending.remove(&svc);
            }
        }
    }
}

/// Per Envoy counters.
#[derive(Default)]
struct EnvoyStats {
    bytes: AtomicU64,
    responses: AtomicU64,
    eds_resources: AtomicU64,
    /// Endpoints held over all CLAs (kept only while warming up).
    held: AtomicU64,
}

async fn run_envoy(
    e: usize,
    addr: SocketAddr,
    book: Arc<Mutex<Book>>,
    stats: Arc<EnvoyStats>,
    warming: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let n = node(&format!("bench-endpoints-{e}"), "", "us-east");
    let mut c = DeltaClient::ads(addr, n).await?;
    c.subscribe(CLUSTER, &[], &[], "").await;
    c.subscribe(LISTENER, &[], &[], "").await;
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    loop {
        let resp = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = c.next() => match r? { Some(r) => r, None => return Ok(()) },
        };
        let now = Instant::now();
        stats
            .bytes
            .fetch_add(resp.encoded_len() as u64, Ordering::Relaxed);
        stats.responses.fetch_add(1, Ordering::Relaxed);
        if resp.type_url == ENDPOINT {
            stats
                .eds_resources
                .fetch_add(resp.resources.len() as u64, Ordering::Relaxed);
            if warming.load(Ordering::Relaxed) {
                for r in &resp.resources {
                    if let Some(a) = &r.resource {
                        if let Ok(cla) = ClusterLoadAssignment::decode(a.value.as_slice()) {
                            let n: usize = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
                            counts.insert(r.name.clone(), n as u64);
                        }
                    }
                }
                stats.held.store(counts.values().sum(), Ordering::Relaxed);
            } else {
                let mut b = book.lock().expect("book");
                if !b.pending.is_empty() {
                    for r in &resp.resources {
                        if !b.pending.contains_key(&r.name) {
                            continue;
                        }
                        if let Some(a) = &r.resource {
                            if let Ok(cla) = ClusterLoadAssignment::decode(a.value.as_slice()) {
                                b.check(e, &cla, now);
                            }
                        }
                    }
                }
            }
        }
        c.ack(&resp).await;
        if resp.type_url == CLUSTER {
            let names: Vec<String> = resp
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref().and_then(eds_name))
                .filter(|n| !subscribed.contains(n))
                .collect();
            if !names.is_empty() {
                let list: Vec<&str> = names.iter().map(String::as_str).collect();
                c.subscribe(ENDPOINT, &list, &[], "").await;
                subscribed.extend(names);
            }
        }
    }
}

/// What an agent brings back.
#[derive(Default)]
struct AgentOut {
    /// Per update: (acked at, changes in it, send -> ack µs).
    updates: Vec<(Instant, u32, u32)>,
    /// Per change: generated -> ack µs.
    commit_us: Vec<u32>,
    nacks: u64,
    error: Option<String>,
}

struct AgentCfg {
    cluster: u32,
    clusters: u32,
    services: u32,
    per_svc: u32,
    api: String,
    token: String,
}

async fn run_agent(
    cfg: AgentCfg,
    mut changes: mpsc::UnboundedReceiver<Change>,
    ready: oneshot::Sender<Result<()>>,
    book: Arc<Mutex<Book>>,
    acked: Arc<AtomicU64>,
) -> AgentOut {
    let mut out = AgentOut::default();
    let mut ready = Some(ready);
    let r = agent_loop(&cfg, &mut changes, &mut ready, &book, &acked, &mut out).await;
    if let Err(e) = r {
        let msg = format!("agent {}: {e:#}", cluster_name(cfg.cluster));
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(anyhow::anyhow!(msg.clone())));
        }
        out.error = Some(msg);
    }
    out
}

async fn agent_loop(
    cfg: &AgentCfg,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
    book: &Mutex<Book>,
    acked: &AtomicU64,
    out: &mut AgentOut,
) -> Result<()> {
    use pb::agent_message::Msg as Out;
    use pb::controller_message::Msg as In;
    let ch = channel(&cfg.api, Duration::from_secs(3600)).await?;
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    let send = |m: Out| {
        let tx = tx.clone();
        async move {
            tx.send(pb::AgentMessage { msg: Some(m) })
                .await
                .map_err(|_| anyhow::anyhow!("request stream closed"))
        }
    };
    send(Out::Hello(pb::AgentHello {
        cluster: cluster_name(cfg.cluster),
        region: REGIONS[cfg.cluster as usize % 3].into(),
        zone: String::new(),
        token: cfg.token.clone(),
        session: format!("bench-{:016x}", rand::random::<u64>()),
        agent: "meridian bench endpoints".into(),
    }))
    .await?;
    let mut inbound = AgentServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
        .report(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("Report: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let welcome = match inbound.message().await? {
        Some(pb::ControllerMessage {
            msg: Some(In::Welcome(w)),
        }) => w,
        other => bail!("expected Welcome, got {other:?}"),
    };
    // The full set, replace.
    let upserts: Vec<pb::AgentEndpoint> = (0..cfg.services * cfg.per_svc)
        .filter(|k| k % cfg.clusters == cfg.cluster)
        .map(|k| agent_ep(k, cfg.per_svc, HEALTHY, INITIAL_WEIGHT))
        .collect();
    let mut version = 1u64;
    send(Out::Update(pb::EndpointUpdate {
        version,
        replace: true,
        upserts,
        removals: vec![],
    }))
    .await?;
    match inbound.message().await? {
        Some(pb::ControllerMessage {
            msg: Some(In::Ack(a)),
        }) if a.version == version => {}
        other => bail!("full update: expected Ack 1, got {other:?}"),
    }
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    }

    let mut heartbeat = tokio::time::interval(Duration::from_millis(
        welcome.heartbeat_interval_ms.max(100),
    ));
    heartbeat.tick().await;
    // Latest state of each changed endpoint, and the changes folded into it.
    let mut pending: HashMap<u32, (i32, u32)> = HashMap::new();
    let mut pending_changes: Vec<(Instant, Option<usize>)> = Vec::new();
    let mut in_flight: Option<(u64, Instant, Vec<(Instant, Option<usize>)>)> = None;
    let mut closed = false;
    loop {
        if in_flight.is_none() && !pending.is_empty() {
            version += 1;
            let upserts: Vec<pb::AgentEndpoint> = pending
                .drain()
                .map(|(k, (h, w))| agent_ep(k, cfg.per_svc, h, w))
                .collect();
            let batch = std::mem::take(&mut pending_changes);
            let now = Instant::now();
            if batch.iter().any(|c| c.1.is_some()) {
                let mut b = book.lock().expect("book");
                for id in batch.iter().filter_map(|c| c.1) {
                    b.samples[id].sent = Some(now);
                }
            }
            send(Out::Update(pb::EndpointUpdate {
                version,
                replace: false,
                upserts,
                removals: vec![],
            }))
            .await?;
            in_flight = Some((version, now, batch));
        }
        if closed && in_flight.is_none() && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            m = inbound.message() => {
                let m = m.map_err(|s| anyhow::anyhow!("stream: {:?}: {}", s.code(), s.message()))?;
                match m.and_then(|m| m.msg) {
                    Some(In::Ack(a)) => {
                        let now = Instant::now();
                        match in_flight.take() {
                            Some((v, sent, batch)) if v == a.version => {
                                out.updates.push((now, batch.len() as u32, us(now - sent)));
                                let mut samples = Vec::new();
                                for (generated, sample) in &batch {
                                    out.commit_us.push(us(now - *generated));
                                    samples.extend(*sample);
                                }
                                if !samples.is_empty() {
                                    let mut b = book.lock().expect("book");
                                    for id in samples {
                                        b.samples[id].acked = Some(now);
                                    }
                                }
                                acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            }
                            other => bail!("Ack {} while {:?} was in flight", a.version, other.map(|o| o.0)),
                        }
                    }
                    Some(In::Nack(n)) => {
                        out.nacks += 1;
                        bail!("Nack {}: {}", n.version, n.reason);
                    }
                    Some(In::Superseded(s)) => bail!("superseded by {}", s.by_session),
                    Some(In::Welcome(_)) => bail!("a second Welcome"),
                    None => bail!("the controller ended the stream"),
                }
            }
            c = changes.recv(), if !closed => match c {
                Some(c) => {
                    pending.insert(c.k, (c.health, c.weight));
                    pending_changes.push((c.generated, c.sample));
                    while let Ok(c) = changes.try_recv() {
                        pending.insert(c.k, (c.health, c.weight));
                        pending_changes.push((c.generated, c.sample));
                    }
                }
                None => closed = true,
            },
            _ = heartbeat.tick() => send(Out::Heartbeat(pb::AgentHeartbeat {})).await?,
        }
    }
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn ms_of(us: u32) -> f64 {
    us as f64 / 1000.0
}

/// Nearest rank over sorted values.
fn pick(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    ms_of(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Serialize, Debug, Default)]
struct Pcts {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn pcts(mut v: Vec<u32>) -> Pcts {
    v.sort_unstable();
    Pcts {
        n: v.len(),
        p50_ms: pick(&v, 0.5),
        p99_ms: pick(&v, 0.99),
        max_ms: v.last().map(|&x| ms_of(x)).unwrap_or(0.0),
    }
}

#[derive(Serialize, Debug, Default)]
struct Report {
    services: u32,
    endpoints: u32,
    clusters: u32,
    envoys: usize,
    target_rate: u32,
    duration_secs: f64,
    /// Changes generated during the run (the generator's own pace).
    generated: u64,
    generated_per_sec: f64,
    /// Changes whose update was ACKed before the end of the run.
    committed_in_run: u64,
    committed_per_sec: f64,
    /// All changes ACKed, including the backlog drained after the run.
    committed_total: u64,
    /// Generated but not ACKed at the end of the run.
    backlog_at_end: u64,
    drain_secs: f64,
    updates: u64,
    changes_per_update: f64,
    /// Agent side: update sent -> Ack.
    update_ack: Pcts,
    /// Agent side: change generated -> Ack (includes waiting for the
    /// update in flight).
    change_commit: Pcts,
    /// Leader: endpoint-lane batches (Raft entries) and transactions.
    raft_entries: Option<u64>,
    raft_entries_per_sec: Option<f64>,
    endpoint_txns: Option<u64>,
    txns_per_entry: Option<f64>,
    changes_per_entry: Option<f64>,
    samples: usize,
    samples_skipped: u64,
    /// (sample, Envoy) pairs that never saw the probe.
    unseen: usize,
    /// Per (sample, Envoy): agent sent the update -> CLA arrived.
    eds_from_send: Pcts,
    /// Per (sample, Envoy): change generated -> CLA arrived.
    eds_from_change: Pcts,
    /// Per (sample, Envoy): agent got the Ack -> CLA arrived (negative
    /// values clamp to 0: the push can beat the Ack).
    eds_from_ack: Pcts,
    eds_responses: u64,
    eds_resources: u64,
    bytes: u64,
    bytes_per_change: f64,
    bytes_per_change_per_envoy: f64,
    /// CPU seconds during the run + drain, per node and for this process.
    cpu_secs_nodes: Vec<f64>,
    cpu_secs_loadgen: f64,
    leader: String,
    errors: Vec<String>,
}

fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start at ')'.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
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

pub async fn run(a: EndpointsArgs, g: &crate::cli::Global) -> Result<()> {
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
    let cluster = local::LocalCluster::start(3, a.data_root.as_deref()).await?;
    cluster.announce();
    let apis = cluster.api_addrs();
    let xds: Vec<SocketAddr> = cluster.xds_socket_addrs()?;
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
    let entries0 = match &leader_admin {
        Some(ad) => scrape_opt(ad, "meridian_endpoint_batches_total").await,
        None => None,
    };
    let txns0 = match &leader_admin {
        Some(ad) => scrape_opt(ad, "meridian_endpoint_txns_total").await,
        None => None,
    };
    let bytes0: u64 = envoys
        .iter()
        .map(|(s, _)| s.bytes.load(Ordering::Relaxed))
        .sum();
    let resp0: u64 = envoys
        .iter()
        .map(|(s, _)| s.responses.load(Ordering::Relaxed))
        .sum();
    let res0: u64 = envoys
        .iter()
        .map(|(s, _)| s.eds_resources.load(Ordering::Relaxed))
        .sum();
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
    let entries1 = match &leader_admin {
        Some(ad) => scrape_opt(ad, "meridian_endpoint_batches_total").await,
        None => None,
    };
    let txns1 = match &leader_admin {
        Some(ad) => scrape_opt(ad, "meridian_endpoint_txns_total").await,
        None => None,
    };
    let bytes: u64 = envoys
        .iter()
        .map(|(s, _)| s.bytes.load(Ordering::Relaxed))
        .sum::<u64>()
        - bytes0;
    let eds_responses: u64 = envoys
        .iter()
        .map(|(s, _)| s.responses.load(Ordering::Relaxed))
        .sum::<u64>()
        - resp0;
    let eds_resources: u64 = envoys
        .iter()
        .map(|(s, _)| s.eds_resources.load(Ordering::Relaxed))
        .sum::<u64>()
        - res0;
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
    let entries = match (entries0, entries1) {
        (Some(x), Some(y)) if y >= x => Some(y - x),
        _ => None,
    };
    let txns = match (txns0, txns1) {
        (Some(x), Some(y)) if y >= x => Some(y - x),
        _ => None,
    };
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

fn print(r: &Report, format: Format) -> Result<()> {
    if matches!(format, Format::Json | Format::Yaml) {
        return crate::output::print_value(&serde_json::to_value(r)?, format);
    }
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    let p = |x: &Pcts| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            x.p50_ms, x.p99_ms, x.max_ms, x.n
        )
    };
    println!(
        "endpoints: {} services x {} endpoints over {} clusters/agents, {} delta-ADS Envoys (us-east), leader {}",
        r.services, r.endpoints, r.clusters, r.envoys, r.leader
    );
    println!(
        "target {} changes/s for {:.1} s: generated {} ({:.0}/s), committed in run {} ({:.0}/s), backlog at end {}, drained in {:.2} s, {} committed in all",
        r.target_rate, r.duration_secs, r.generated, r.generated_per_sec, r.committed_in_run, r.committed_per_sec, r.backlog_at_end, r.drain_secs, r.committed_total
    );
    println!(
        "agent updates: {} ({:.1} changes each)",
        r.updates, r.changes_per_update
    );
    println!("  update sent -> Ack:        {}", p(&r.update_ack));
    println!("  change made -> Ack:        {}", p(&r.change_commit));
    println!(
        "raft: {} endpoint entries ({}/s), {} txns/entry, {} changes/entry",
        r.raft_entries
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into()),
        opt(r.raft_entries_per_sec),
        opt(r.txns_per_entry),
        opt(r.changes_per_entry)
    );
    println!(
        "EDS: {} probes ({} skipped, {} probe x Envoy never seen)",
        r.samples, r.samples_skipped, r.unseen
    );
    println!("  agent sent -> Envoy has it: {}", p(&r.eds_from_send));
    println!("  change made -> Envoy has it: {}", p(&r.eds_from_change));
    println!("  agent Ack -> Envoy has it:  {}", p(&r.eds_from_ack));
    println!(
        "pushed: {} responses, {} CLAs, {:.1} MiB; {:.0} B per change ({:.0} B per change per Envoy)",
        r.eds_responses,
        r.eds_resources,
        r.bytes as f64 / (1024.0 * 1024.0),
        r.bytes_per_change,
        r.bytes_per_change_per_envoy
    );
    println!(
        "CPU s (run + drain): nodes {:?}, load generator {:.1}",
        r.cpu_secs_nodes
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>(),
        r.cpu_secs_loadgen
    );
    for e in &r.errors {
        println!("error: {e}");
    }
    Ok(())
}
