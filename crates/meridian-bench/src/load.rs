//! The closed-loop write load of `store` and `etcd`: each client sends one
//! single-put write, waits for the answer, and sends the next. Every write
//! creates a new object (unique name, unique request id), so nothing is
//! de-duplicated or conflicts. Latencies are kept in full and sorted at the
//! end: a run is at most a few hundred thousand samples, so a histogram
//! would buy nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_testkit::percentile;
use serde::Serialize;
use tonic::transport::Channel;

use crate::etcd;
use crate::metrics;
use crate::output::{table, Format};
use crate::setup::channel;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Concurrent clients, one run per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Length of each run.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// `any`: client i is pinned to node i mod N (followers forward to the
    /// leader); `leader`: every client talks to the leader.
    #[arg(long, value_enum, default_value_t = Target::Any)]
    pub target: Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Any,
    Leader,
}

/// One run's outcome.
#[derive(Serialize, Debug)]
pub(crate) struct RunResult {
    pub(crate) clients: usize,
    pub(crate) writes: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) writes_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// Leader's batches (meridian: proposals; etcd: WAL fsyncs) during the run.
    pub(crate) leader_batches: Option<u64>,
    pub(crate) writes_per_batch: Option<f64>,
    pub(crate) first_error: Option<String>,
}

#[derive(Serialize, Debug)]
pub(crate) struct Report {
    pub(crate) system: &'static str,
    pub(crate) target: Target,
    /// How clients map to nodes, in words.
    pub(crate) routing: String,
    pub(crate) nodes: Vec<String>,
    pub(crate) leader: String,
    /// What `leader_batches` counts.
    pub(crate) batch_metric: &'static str,
    pub(crate) duration_secs: f64,
    pub(crate) runs: Vec<RunResult>,
}

/// A client's connection to one node, for one system.
pub(crate) enum Writer {
    Meridian(ConfigServiceClient<Channel>),
    Etcd(etcd::KvClient),
}

impl Writer {
    async fn write(&mut self, name: &str, request_id: &str) -> Result<(), tonic::Status> {
        const VALUE: &[u8] = br#"{"port": 8080}"#;
        match self {
            Writer::Meridian(c) => {
                let put = pb::PutOp {
                    key: Some(pb::ObjectKey {
                        kind: "service".into(),
                        name: name.into(),
                    }),
                    value: VALUE.to_vec(),
                    expected_revision: None,
                };
                c.txn(pb::TxnRequest {
                    request_id: request_id.into(),
                    ops: vec![pb::TxnOp {
                        op: Some(pb::txn_op::Op::Put(put)),
                    }],
                    dry_run: false,
                })
                .await
                .map(|_| ())
            }
            Writer::Etcd(c) => c
                .put(name.as_bytes().to_vec(), VALUE.to_vec())
                .await
                .map(|_| ()),
        }
    }
}

/// What a run needs to know about the system under test.
pub(crate) struct Sut {
    pub system: &'static str,
    pub nodes: Vec<String>,
    pub leader_index: usize,
    /// The leader, in words.
    pub leader: String,
    /// Where and what to scrape for the leader's batch counter.
    pub leader_metrics: Option<(String, &'static str)>,
}

impl Sut {
    fn node_for(&self, client: usize, target: Target) -> usize {
        match target {
            Target::Any => client % self.nodes.len(),
            Target::Leader => self.leader_index,
        }
    }
}

pub(crate) fn check_load(l: &LoadArgs) -> Result<()> {
    if l.clients.is_empty() || l.clients.contains(&0) {
        bail!("--clients: give one or more positive counts, e.g. 1,16,64");
    }
    if l.duration.is_zero() {
        bail!("--duration must be more than zero");
    }
    Ok(())
}

/// Runs the load once per client count.
pub(crate) async fn drive(
    system: &'static str,
    sut: &Sut,
    load: &LoadArgs,
    timeout: Duration,
    make: impl Fn(Channel) -> Writer,
) -> Result<Report> {
    debug_assert_eq!(system, sut.system);
    // Names differ between invocations, so runs against a long-lived cluster
    // never collide with an earlier run's objects.
    let nonce = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut runs = Vec::new();
    for &clients in &load.clients {
        eprintln!("{system}: {clients} client(s) for {:?} ...", load.duration);
        let r = run_once(sut, clients, load, timeout, &nonce, &make).await?;
        eprintln!(
            "  {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            r.writes_per_sec, r.p50_ms, r.p99_ms, r.errors
        );
        runs.push(r);
    }
    let routing = match load.target {
        Target::Any => format!(
            "pinned: client i talks to node i mod {} over its own connection",
            sut.nodes.len()
        ),
        Target::Leader => "every client talks to the leader, one connection each".to_string(),
    };
    Ok(Report {
        system,
        target: load.target,
        routing,
        nodes: sut.nodes.clone(),
        leader: sut.leader.clone(),
        batch_metric: sut.leader_metrics.as_ref().map(|m| m.1).unwrap_or(""),
        duration_secs: load.duration.as_secs_f64(),
        runs,
    })
}

/// What one client task brings back.
struct ClientOutcome {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn run_once(
    sut: &Sut,
    clients: usize,
    load: &LoadArgs,
    timeout: Duration,
    nonce: &str,
    make: &impl Fn(Channel) -> Writer,
) -> Result<RunResult> {
    // Connect everyone first: connection set-up is not part of the load.
    let mut writers = Vec::with_capacity(clients);
    for c in 0..clients {
        let addr = &sut.nodes[sut.node_for(c, load.target)];
        writers.push(make(channel(addr, timeout).await?));
    }
    let before = leader_counter(sut).await;
    // A common start shortly ahead, so every client starts together.
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = start + load.duration;
    let tag = Arc::new(format!("svc-{nonce}-{clients}"));
    let mut tasks = Vec::with_capacity(clients);
    for (c, mut w) in writers.into_iter().enumerate() {
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut out = ClientOutcome {
                latencies_us: Vec::with_capacity(4096),
                errors: 0,
                first_error: None,
            };
            let mut seq = 0u64;
            while tokio::time::Instant::now() < deadline {
                seq += 1;
                let name = format!("{tag}-{c}-{seq}");
                let request_id = format!("bench-{name}");
                let t = Instant::now();
                match w.write(&name, &request_id).await {
                    Ok(()) => {
                        let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        out.latencies_us.push(us);
                    }
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!("{:?}: {}", e.code(), e.message()));
                        }
                        // Back off a little so a dead node does not turn the
                        // client into a busy loop that starves the others.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let o = t.await.context("a client task panicked")?;
        all.extend_from_slice(&o.latencies_us);
        errors += o.errors;
        if first_error.is_none() {
            first_error = o.first_error;
        }
    }
    // Wall time includes the requests still in flight at the deadline, whose
    // writes are counted too.
    let seconds = (tokio::time::Instant::now() - start).as_secs_f64();
    let after = leader_counter(sut).await;
    all.sort_unstable();
    let writes = all.len() as u64;
    let leader_batches = match (before, after) {
        (Some(b), Some(a)) if a >= b => Some(a - b),
        _ => None,
    };
    Ok(RunResult {
        clients,
        writes,
        errors,
        seconds,
        writes_per_sec: writes as f64 / seconds,
        p50_ms: percentile_ms(&all, 0.50),
        p99_ms: percentile_ms(&all, 0.99),
        p999_ms: percentile_ms(&all, 0.999),
        max_ms: all.last().map(|&us| us as f64 / 1000.0).unwrap_or(0.0),
        writes_per_batch: leader_batches
            .filter(|&b| b > 0)
            .map(|b| writes as f64 / b as f64),
        leader_batches,
        first_error,
    })
}

/// The leader's batch counter, or None when it cannot be read (the report
/// then leaves the column empty rather than failing the benchmark).
async fn leader_counter(sut: &Sut) -> Option<u64> {
    let (addr, name) = sut.leader_metrics.as_ref()?;
    match metrics::scrape(addr, name).await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("warning: reading {name} from {addr}: {e:#}");
            None
        }
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    percentile(sorted_us, p).map(|us| us as f64 / 1000.0).unwrap_or(0.0)
}

pub(crate) fn print_report(r: &Report, format: Format) -> Result<()> {
    match format {
        Format::Json | Format::Yaml => {
            Ok(crate::output::print_value(&serde_json::to_value(r)?, format)?)
        }
        Format::Table | Format::Wide => {
            println!(
                "{}: {} nodes, leader {}, target {:?} ({}), {}s per run",
                r.system,
                r.nodes.len(),
                r.leader,
                r.target,
                r.routing,
                r.duration_secs
            );
            let rows: Vec<Vec<String>> = r
                .runs
                .iter()
                .map(|x| {
                    vec![
                        x.clients.to_string(),
                        format!("{:.0}", x.writes_per_sec),
                        format!("{:.2}", x.p50_ms),
                        format!("{:.2}", x.p99_ms),
                        format!("{:.2}", x.p999_ms),
                        format!("{:.2}", x.max_ms),
                        x.errors.to_string(),
                        x.writes_per_batch
                            .map(|w| format!("{w:.1}"))
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "CLIENTS",
                        "WRITES/S",
                        "P50 MS",
                        "P99 MS",
                        "P99.9 MS",
                        "MAX MS",
                        "ERRORS",
                        "WRITES/BATCH",
                    ],
                    &rows
                )
            );
            println!(
                "WRITES/BATCH: writes / delta of the leader's {}",
                r.batch_metric
            );
            for x in &r.runs {
                if let Some(e) = &x.first_error {
                    println!("{} clients, first error: {e}", x.clients);
                }
            }
            Ok(())
        }
    }
}


#[cfg(test)]
mod tests {
    use super::percentile_ms;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 500.0);
        assert_eq!(percentile_ms(&v, 0.99), 990.0);
        assert_eq!(percentile_ms(&v, 0.999), 999.0);
        assert_eq!(percentile_ms(&[7000], 0.999), 7.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
