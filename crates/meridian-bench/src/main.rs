//! `meridian-bench`: Meridian's benchmarks, a binary of their own so that
//! the product binary carries none of their load generators. `store` and
//! `etcd` measure write throughput and latency of the replicated store and
//! of etcd under the same load; `xds` the fan-out of a route change to many
//! simulated Envoys; `endpoints` and `endpoint-churn` endpoint changes from
//! agents until Envoys see them. Each starts its own loopback cluster of
//! real `meridian` processes (found next to this binary, or at
//! `$MERIDIAN_BIN`) through the test kit.

mod churn;
mod compare;
mod endpoints;
mod etcd;
mod etcd_local;
mod failover;
mod load;
mod metrics;
mod output;
mod setup;
mod store;
mod xds;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::output::{parse_duration, Format};

#[derive(Parser, Debug)]
#[command(
    name = "meridian-bench",
    version,
    about = "Benchmarks of Meridian against real meridian processes"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Per-request timeout.
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Write throughput and latency of the replicated store. Starts its own
    /// 3-node loopback cluster unless --cluster names one.
    Store(store::StoreArgs),
    /// The same write load against an etcd v3 cluster (KV.Put over gRPC).
    Etcd(store::EtcdArgs),
    /// `store` and `etcd` back to back in alternating rounds, each on a
    /// fresh 3-node cluster (etcd from the PATH or $ETCD_BIN); reports the
    /// median of each figure.
    Compare(compare::CompareArgs),
    /// xDS fan-out: starts its own controller(s), connects many simulated
    /// Envoys, measures memory per idle stream and the time until a route
    /// change is ACKed by every stream.
    Xds(xds::XdsArgs),
    /// Endpoint churn: agents report endpoint changes at a fixed rate; measures
    /// committed changes per second, Raft entries, and visibility in a real Envoy.
    EndpointChurn(churn::ChurnArgs),
    /// Endpoint churn seen by simulated Envoys: in-process agents report
    /// changes at a fixed rate; measures commits, Raft entries, and the time
    /// until each sampled change's CLA reaches every simulated Envoy.
    Endpoints(endpoints::EndpointsArgs),
    /// Traffic failover between regions through a real Envoy (static
    /// endpoints, or `--agents` in three regions): time from a fault (503,
    /// refused connections, a hang) to sustained 99 % success.
    Failover(failover::FailoverArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, &cli.global)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: BenchCmd, g: &Global) -> Result<()> {
    // The local cluster lives inside the future: on Ctrl-C the future is
    // dropped, and with it the guard that kills the children.
    tokio::select! {
        r = bench(cmd, g) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; cluster stopped"),
    }
}

async fn bench(cmd: BenchCmd, g: &Global) -> Result<()> {
    let report = match cmd {
        BenchCmd::Store(a) => store::store(a, g).await?,
        BenchCmd::Etcd(a) => store::etcd_bench(a, g).await?,
        BenchCmd::Compare(a) => return compare::run(a, g).await,
        BenchCmd::Xds(a) => return xds::run(a, g).await,
        BenchCmd::Endpoints(a) => return endpoints::run(a, g).await,
        BenchCmd::EndpointChurn(a) => return churn::run(a, g).await,
        BenchCmd::Failover(a) => return failover::run(a, g).await,
    };
    load::print_report(&report, g.output)
}
