//! `xds-conformance`: runs the xDS conformance checks against a server
//! address. Exit code 0 when no check failed (skips are fine), 1 when one
//! did, 2 on bad flags (clap's).

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use meridian_cli_output::{parse_duration, table};
use meridian_xds::testing::node;
use meridian_xds_conformance::{run, Change, Outcome, Target, Verdict};

/// Checks an xDS management server against the protocol rules any server
/// must keep (SotW and delta over ADS). Plaintext gRPC only.
#[derive(Parser)]
#[command(name = "xds-conformance", version)]
struct Args {
    /// The server's xDS address, HOST:PORT.
    #[arg(long)]
    server: String,
    /// The Envoy node id the streams present.
    #[arg(long, default_value = "xds-conformance")]
    node_id: String,
    /// The node's cluster (Meridian: the proxy group).
    #[arg(long, default_value = "")]
    node_cluster: String,
    /// The node's locality region.
    #[arg(long, default_value = "")]
    region: String,
    /// A shell command that changes at least one cluster this node receives.
    /// Run with XDS_CONFORMANCE_STEP=0 to change it and 1 to put it back.
    /// Without it, the push checks are skipped.
    #[arg(long)]
    change_cmd: Option<String>,
    /// Only the checks whose id contains this.
    #[arg(long)]
    only: Option<String>,
    /// How long a response may take.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    wait: Duration,
    /// Silence this long means "not answered".
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    quiet: Duration,
    /// table or json.
    #[arg(short, long, default_value = "table")]
    output: String,
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
}

struct ShellChange(String);

impl Change for ShellChange {
    fn change(&self, step: u32) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let cmd = self.0.clone();
        Box::pin(async move {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .env("XDS_CONFORMANCE_STEP", step.to_string())
                .output()
                .await
                .map_err(|e| format!("running {cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
    }
}

/// `pass`, `skip` or `fail`, and why.
fn verdict(o: &Outcome) -> (&'static str, String) {
    match &o.result {
        Ok(Verdict::Pass) => ("pass", String::new()),
        Ok(Verdict::Skip(why)) => ("skip", why.clone()),
        Err(why) => ("fail", why.clone()),
    }
}

fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    server
        .to_socket_addrs()
        .with_context(|| format!("--server {server:?}: not HOST:PORT"))?
        .next()
        .with_context(|| format!("--server {server:?}: resolves to no address"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !matches!(args.output.as_str(), "table" | "json") {
        bail!("-o {:?}: expected table or json", args.output);
    }
    if args.list {
        let rows: Vec<Vec<String>> = meridian_xds_conformance::all()
            .iter()
            .map(|c| vec![c.id.to_string(), c.rule.to_string()])
            .collect();
        print!("{}", table(&["CHECK", "RULE"], &rows));
        return Ok(());
    }
    let target = Arc::new(Target {
        addr: resolve(&args.server)?,
        node: node(&args.node_id, &args.node_cluster, &args.region),
        wait: args.wait,
        quiet: args.quiet,
        change: args
            .change_cmd
            .map(|c| Arc::new(ShellChange(c)) as Arc<dyn Change>),
    });
    let outcomes = run(target, args.only.as_deref()).await;
    if outcomes.is_empty() {
        bail!(
            "--only {:?} matches no check (see --list)",
            args.only.unwrap_or_default()
        );
    }
    let failed = outcomes.iter().filter(|o| o.failed()).count();
    if args.output == "json" {
        let v: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                let (result, detail) = verdict(o);
                serde_json::json!({"check": o.id, "rule": o.rule, "result": result, "detail": detail})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let rows: Vec<Vec<String>> = outcomes
            .iter()
            .map(|o| {
                let (result, detail) = verdict(o);
                vec![o.id.to_string(), result.to_uppercase(), detail]
            })
            .collect();
        print!("{}", table(&["CHECK", "RESULT", "DETAIL"], &rows));
        eprintln!("{} checks, {failed} failed", outcomes.len());
    }
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
