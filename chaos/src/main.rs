//! `meridian-chaos`: seeded chaos runs against real `meridian` processes in
//! network namespaces (needs root). `chaos/run` builds and runs it; see
//! docs/CHAOS.md. Exit status: 0 all checks held, 1 a check failed (an
//! anomaly, a lost write, no recovery, a panic), 2 the run could not start.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_chaos::checker::CheckOptions;
use meridian_chaos::clients::{Broken, Workload};
use meridian_chaos::dataplane::DataPlane;
use meridian_chaos::nemesis::{self, Fault};
use meridian_chaos::nodes::{NodeOpts, Nodes};
use meridian_chaos::scenario::{self, Row, Scenario, Settings};
use meridian_chaos::Error;

#[derive(Parser, Debug)]
#[command(about = "Seeded chaos runs against real meridian processes")]
struct Args {
    /// The fixed set of scenarios and seeds CI runs (about 4 minutes).
    #[arg(long, conflicts_with_all = ["soak", "scenario"])]
    quick: bool,
    /// Mixed faults for this long (`20m`, `1h`), in 60 s scenarios of
    /// consecutive seeds.
    #[arg(long, value_parser = parse_duration, conflicts_with = "scenario")]
    soak: Option<Duration>,
    /// One scenario: a fault's name, or `mixed` (every fault).
    #[arg(long)]
    scenario: Option<String>,
    /// The seed of `--scenario`, or the first seed of `--soak`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long `--scenario` runs.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    duration: Duration,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Deliberately broken, to show the checks fail: `local-reads` (the
    /// clients record local reads as linearizable) or `pinned-agent` (the
    /// agent knows node 1 only and has a 5 s lease: while node 1 is down
    /// its endpoints are dropped and requests through Envoy fail).
    #[arg(long)]
    broken: Option<String>,
    /// Treat a CAS answered "precondition failed" as an observation (the
    /// value differed at some point during the op) instead of as one that
    /// did not happen, as Jepsen does. Off by default: a deposed leader
    /// answers such a conflict from its stale state (docs/CHAOS.md,
    /// scenario `stale-conflict`).
    #[arg(long)]
    strict_cas: bool,
    /// Run without the Envoy, the agent and their traffic (the store's
    /// checks only).
    #[arg(long)]
    no_data_plane: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (30s, 10m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// The quick suite: every fault once, fixed seeds.
fn quick() -> Vec<Scenario> {
    nemesis::ALL
        .iter()
        .enumerate()
        .map(|(i, f)| Scenario {
            name: f.name().to_string(),
            faults: vec![*f],
            seed: 1000 + i as u64,
            duration: Duration::from_secs(15),
            strict_cas: false,
        })
        .collect()
}

fn scenarios(a: &Args) -> Result<Vec<Scenario>, String> {
    if a.quick {
        return Ok(quick());
    }
    if let Some(d) = a.soak {
        let n = d.as_secs().div_ceil(60).max(1);
        return Ok((0..n)
            .map(|i| Scenario {
                name: "mixed".into(),
                faults: nemesis::ALL.to_vec(),
                seed: a.seed + i,
                duration: Duration::from_secs(60),
                strict_cas: false,
            })
            .collect());
    }
    let Some(name) = &a.scenario else {
        return Err("say --quick, --soak DURATION or --scenario NAME".into());
    };
    // The regression scenario of the first finding: a deposed leader
    // answers "precondition failed" from its stale state (docs/CHAOS.md).
    if name == "stale-conflict" {
        return Ok(vec![Scenario {
            name: name.clone(),
            faults: vec![Fault::IsolateLeaderLink],
            seed: a.seed,
            duration: a.duration.max(Duration::from_secs(30)),
            strict_cas: true,
        }]);
    }
    let faults = match name.as_str() {
        "mixed" => nemesis::ALL.to_vec(),
        n => vec![Fault::parse(n).ok_or_else(|| {
            let names: Vec<&str> = nemesis::ALL.iter().map(|f| f.name()).collect();
            format!(
                "--scenario {n:?}: not a scenario; one of mixed, stale-conflict, {}",
                names.join(", ")
            )
        })?],
    };
    Ok(vec![Scenario {
        name: name.clone(),
        faults,
        seed: a.seed,
        duration: a.duration,
        strict_cas: false,
    }])
}

async fn run(a: &Args, list: &[Scenario]) -> Result<Vec<Row>, Error> {
    let (broken, pinned) = match a.broken.as_deref() {
        None => (None, false),
        Some("local-reads") => (Some(Broken::LocalReads), false),
        Some("pinned-agent") if !a.no_data_plane => (None, true),
        Some(b) => {
            return Err(Error::Setup(format!(
                "--broken {b:?}: the broken modes are local-reads and pinned-agent (with the data plane)"
            )))
        }
    };
    let settings = Settings {
        workload: Workload {
            clients: a.clients,
            keys: a.keys,
            epoch: Duration::from_secs(10),
            op_timeout: Duration::from_secs(3),
            broken,
            key_prefix: String::new(),
        },
        check: CheckOptions {
            failed_cas_observes: a.strict_cas,
            ..CheckOptions::default()
        },
        recovery_bound: Duration::from_secs(60),
    };
    let skews = list.iter().any(|s| {
        s.faults.contains(&Fault::ClockSkew) || s.faults.contains(&Fault::SkewedSuccessor)
    });
    let faketime = match (skews, meridian_chaos::nodes::find_faketime()) {
        (false, _) => None,
        (true, Some(lib)) => Some(lib),
        (true, None) => {
            return Err(Error::Setup(
                "clock-skew needs libfaketime (chaos/run installs Debian's libfaketime)".into(),
            ))
        }
    };
    let opts = NodeOpts {
        write_timeout: Duration::from_secs(2),
        snapshot_logs: 500,
        extra_args: Vec::new(),
        faketime,
    };
    let started = Instant::now();
    // One spare slot, for the membership faults to add a node in.
    let mut nodes = Nodes::start(a.nodes, 1, opts).await?;
    println!(
        "cluster of {} nodes up in {:.1}s; data and logs in {}",
        a.nodes,
        started.elapsed().as_secs_f64(),
        nodes.dir().display()
    );
    let mut dp = if a.no_data_plane {
        None
    } else {
        let started = Instant::now();
        let dp = DataPlane::start(&nodes, pinned).await?;
        println!(
            "data plane up in {:.1}s: Envoy {} and an agent, traffic through it at 20 req/s",
            started.elapsed().as_secs_f64(),
            meridian_chaos::dataplane::ENVOY_NODE
        );
        Some(dp)
    };
    let mut rows = Vec::new();
    for (i, s) in list.iter().enumerate() {
        rows.push(scenario::run(&mut nodes, s, &settings, i, dp.as_mut()).await?);
    }
    drop(dp);
    if rows.iter().any(Row::failed) {
        let kept = nodes.keep()?;
        println!("logs kept in {}", kept.display());
    }
    Ok(rows)
}

fn cleanup() {
    meridian_chaos::nodes::kill_all_started();
    meridian_chaos::nodes::unmount_all();
    meridian_chaos::net::destroy_all_made();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let a = Args::parse();
    let list = match scenarios(&a) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meridian-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    // Namespaces outlive the process unless deleted: clean up on Ctrl-C,
    // SIGTERM and panics as well as on the normal path (the destructors).
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        cleanup();
        eprintln!("meridian-chaos: interrupted; servers killed, namespaces deleted");
        std::process::exit(130);
    });
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cleanup();
        default_hook(info);
    }));
    let started = Instant::now();
    let rows = match run(&a, &list).await {
        Ok(r) => r,
        Err(e) => {
            cleanup();
            eprintln!("meridian-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    scenario::print_table(&rows);
    let failed = rows.iter().filter(|r| r.failed()).count();
    println!(
        "\n{} scenarios, {} failed, in {:.0}s",
        rows.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
