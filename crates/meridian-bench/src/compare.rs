//! `compare`: the store's write load against meridian and etcd, back to back
//! in one process, in alternating rounds (round 1 meridian first, round 2
//! etcd first, ...), each round on a fresh 3-node cluster of each. A single
//! pair of runs on a shared machine says little: the order, the page cache
//! and whatever else runs move either system by 10-20 %. The median of each
//! figure over the rounds is what docs/BENCHMARKS.md records.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::etcd_local::EtcdCluster;
use crate::load::{check_load, LoadArgs, Report, Target};
use crate::output::{table, Format};
use crate::store::{etcd_bench, store, EtcdArgs, StoreArgs};
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Rounds; each runs both systems, the order alternating.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where both systems keep their data (a real disk, for fsync to count).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

/// One system's figures at one client count: the median over rounds, and
/// each round's value so the spread shows.
#[derive(Serialize, Debug)]
pub(crate) struct Medians {
    writes_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    writes_per_sec_by_round: Vec<f64>,
    p99_ms_by_round: Vec<f64>,
}

#[derive(Serialize, Debug)]
pub(crate) struct Row {
    clients: usize,
    meridian: Medians,
    etcd: Medians,
    /// meridian / etcd, of the medians.
    throughput_ratio: f64,
    p99_ratio: f64,
}

#[derive(Serialize, Debug)]
pub(crate) struct CompareReport {
    rounds: usize,
    duration_secs: f64,
    target: Target,
    /// Which system ran first in each round.
    order: Vec<[&'static str; 2]>,
    rows: Vec<Row>,
    /// Every run, as `store` and `etcd` report them.
    runs: Vec<Report>,
}

pub async fn run(a: CompareArgs, g: &Global) -> Result<()> {
    check_load(&a.load)?;
    if a.rounds == 0 {
        bail!("--rounds: must be at least 1");
    }
    let mut order = Vec::new();
    let mut meridian = Vec::new();
    let mut etcd = Vec::new();
    for round in 0..a.rounds {
        let systems = if round % 2 == 0 {
            ["meridian", "etcd"]
        } else {
            ["etcd", "meridian"]
        };
        order.push(systems);
        for system in systems {
            eprintln!("round {}/{}: {system}", round + 1, a.rounds);
            if system == "meridian" {
                let args = StoreArgs {
                    load: a.load.clone(),
                    cluster: Vec::new(),
                    data_root: a.data_root.clone(),
                };
                meridian.push(store(args, g).await?);
            } else {
                // Dropped at the end of the block: members killed, data gone.
                let cluster = EtcdCluster::start(a.data_root.as_deref()).await?;
                let args = EtcdArgs {
                    load: a.load.clone(),
                    endpoints: cluster.endpoints.clone(),
                };
                etcd.push(etcd_bench(args, g).await?);
            }
        }
    }
    let rows = a
        .load
        .clients
        .iter()
        .map(|&clients| {
            let m = medians(&meridian, clients);
            let e = medians(&etcd, clients);
            Row {
                clients,
                throughput_ratio: ratio(m.writes_per_sec, e.writes_per_sec),
                p99_ratio: ratio(m.p99_ms, e.p99_ms),
                meridian: m,
                etcd: e,
            }
        })
        .collect();
    let report = CompareReport {
        rounds: a.rounds,
        duration_secs: a.load.duration.as_secs_f64(),
        target: a.load.target,
        order,
        rows,
        runs: meridian.into_iter().chain(etcd).collect(),
    };
    print(&report, g.output)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The median; of an even count, the mean of the two middle values.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn medians(reports: &[Report], clients: usize) -> Medians {
    let runs: Vec<_> = reports
        .iter()
        .flat_map(|r| r.runs.iter().filter(|x| x.clients == clients))
        .collect();
    let of = |f: fn(&crate::load::RunResult) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
    Medians {
        writes_per_sec: median(of(|r| r.writes_per_sec)),
        p50_ms: median(of(|r| r.p50_ms)),
        p99_ms: median(of(|r| r.p99_ms)),
        errors: runs.iter().map(|r| r.errors).sum(),
        writes_per_sec_by_round: of(|r| r.writes_per_sec),
        p99_ms_by_round: of(|r| r.p99_ms),
    }
}

fn print(r: &CompareReport, format: Format) -> Result<()> {
    if matches!(format, Format::Json | Format::Yaml) {
        return Ok(crate::output::print_value(
            &serde_json::to_value(r)?,
            format,
        )?);
    }
    println!(
        "meridian vs etcd: {} rounds of {:.0} s per client count, order alternating, target {:?}; medians over rounds",
        r.rounds, r.duration_secs, r.target
    );
    let rounds = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|x| {
            vec![
                x.clients.to_string(),
                format!("{:.0}", x.meridian.writes_per_sec),
                rounds(&x.meridian.writes_per_sec_by_round),
                format!("{:.2}", x.meridian.p99_ms),
                format!("{:.0}", x.etcd.writes_per_sec),
                rounds(&x.etcd.writes_per_sec_by_round),
                format!("{:.2}", x.etcd.p99_ms),
                format!("{:.2}x", x.throughput_ratio),
                format!("{:.2}x", x.p99_ratio),
                (x.meridian.errors + x.etcd.errors).to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "CLIENTS",
                "MERIDIAN W/S",
                "BY ROUND",
                "P99 MS",
                "ETCD W/S",
                "BY ROUND",
                "P99 MS",
                "W/S RATIO",
                "P99 RATIO",
                "ERRORS",
            ],
            &rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
