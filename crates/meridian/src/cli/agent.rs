//! `meridian agent`: discover one cluster's endpoints and report them to
//! the controllers of its region (crates/meridian-agent does the work).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meridian_agent::{AgentConfig, HealthConfig, Probe, Source, Token};
use tracing::info;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The cluster this agent reports for, as registered with `meridian clusters add`.
    #[arg(long)]
    pub cluster: String,
    /// The cluster's region.
    #[arg(long)]
    pub region: String,
    /// Zone of endpoints that do not name one.
    #[arg(long, default_value = "")]
    pub zone: String,
    /// The controllers' API addresses (host:port, comma-separated), own region first.
    #[arg(long, value_delimiter = ',', required = true)]
    pub controllers: Vec<String>,
    /// The cluster's token (prefer --token-file or MERIDIAN_AGENT_TOKEN: flags show in `ps`).
    #[arg(long, env = "MERIDIAN_AGENT_TOKEN", hide_env_values = true, value_parser = parse_token, conflicts_with = "token_file")]
    pub token: Option<Token>,
    /// File holding the cluster's token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where endpoints come from: `file:PATH` (a file or directory of
    /// declarations) or `kubernetes[:NAMESPACE]` (EndpointSlices).
    #[arg(long)]
    pub source: String,
    /// Probe file-declared endpoints: `http:/PATH` or `tcp`.
    #[arg(long, value_parser = parse_probe)]
    pub health_check: Option<Probe>,
    /// Time between health checks of one endpoint.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub health_interval: Duration,
    /// Time a health check may take.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub health_timeout: Duration,
    /// Consecutive failed checks that make an endpoint UNHEALTHY.
    #[arg(long, default_value_t = 3)]
    pub unhealthy_threshold: u32,
    /// Consecutive passed checks that make it HEALTHY again.
    #[arg(long, default_value_t = 2)]
    pub healthy_threshold: u32,
    /// How often declaration files are checked for changes.
    #[arg(long, default_value = "500ms", value_parser = super::parse_duration)]
    pub poll_interval: Duration,
    /// While reporting to another region's controller, how often the
    /// controllers listed before it are asked whether they are ready again
    /// (plus up to 25% jitter); the agent moves back to the first that is.
    /// At least 1s; 0 disables failback.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub failback_interval: Duration,
}

fn parse_token(s: &str) -> Result<Token, String> {
    Ok(Token::new(s))
}

fn parse_probe(s: &str) -> Result<Probe, String> {
    Probe::parse(s).map_err(|e| e.to_string())
}

pub async fn run(args: AgentArgs, g: &Global) -> Result<()> {
    super::server::init_logging(g.log_format);
    super::check_name("--cluster", &args.cluster)?;
    super::check_name("--region", &args.region)?;
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => Token::new(
            std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?,
        ),
        (None, None) => bail!("no token: give --token-file FILE, MERIDIAN_AGENT_TOKEN or --token"),
    };
    let health = HealthConfig {
        probe: args.health_check.clone(),
        interval: args.health_interval,
        timeout: args.health_timeout,
        unhealthy_threshold: args.unhealthy_threshold,
        healthy_threshold: args.healthy_threshold,
    };
    let source = Source::parse(&args.source, args.poll_interval, health)?;
    if args.health_check.is_some() && !matches!(source, Source::File { .. }) {
        bail!("--health-check applies to file sources only (Kubernetes readiness is the health there)");
    }
    let mut config = AgentConfig::new(args.cluster, args.region, args.controllers, token);
    config.zone = args.zone;
    config.failback_interval = args.failback_interval;
    // The agent's `cluster/NAME` certificate, if given, from the same
    // --ca/--cert/--key (or MERIDIAN_CA/CERT/KEY) as the rest of the CLI.
    config.tls = g.tls()?;
    if let Some(t) = &config.tls {
        let sources = vec![t.clone()];
        tokio::spawn(meridian_tls::reload_loop(
            sources,
            std::time::Duration::from_secs(5),
            std::future::pending(),
        ));
    }
    info!(
        cluster = %config.cluster,
        region = %config.region,
        session = %config.session,
        controllers = %config.controllers.join(","),
        failback_interval_ms = config.failback_interval.as_millis() as u64,
        source = %args.source,
        "starting agent"
    );
    meridian_agent::run_agent_until(config, source, shutdown_signal()).await?;
    Ok(())
}

pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => info!("terminate signal received; stopping"),
            _ = tokio::signal::ctrl_c() => info!("interrupt received; stopping"),
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
