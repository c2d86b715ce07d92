//! The command tree.

mod agent;
mod apply;
mod bootstrap;
mod certs;
mod cluster;
mod clusters;
mod context;
mod diff;
mod files;
mod history;
pub(crate) mod objects;
mod proxy;
mod rollout;
mod server;
mod snapshot;
mod ui;
mod wait;

use std::time::Duration;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use crate::client::Servers;
use crate::output::Format;
pub use meridian_cli_output::parse_duration;

#[derive(Parser, Debug)]
#[command(
    name = "meridian",
    version,
    about = "A multi-region control plane for Envoy",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Controller API addresses to try in order (host:port, comma-separated).
    #[arg(long, global = true, env = "MERIDIAN_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// Use this context of the CLI config file instead of the current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Per-request timeout.
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Log format of `server` and `dev`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Mutual TLS: the CA bundle the controllers' certificates must chain to.
    #[arg(long, global = true, env = "MERIDIAN_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's certificate (`meridian certs operator`, or an agent's).
    #[arg(long, global = true, env = "MERIDIAN_CERT", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// Mutual TLS: the key of --cert.
    #[arg(long, global = true, env = "MERIDIAN_KEY", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Global {
    /// The controllers to talk to: `--server`/`MERIDIAN_SERVER`, else the
    /// CLI config file's context, else the local default.
    pub fn servers(&self) -> Servers {
        let list = if !self.server.is_empty() {
            self.server.clone()
        } else {
            match context::context_for(self.context.as_deref()) {
                Ok(ctx) => ctx.map(|c| c.servers).unwrap_or_default(),
                // Never fall back to another cluster than the one asked for.
                Err(e) => usage_exit(e),
            }
        };
        self.servers_at(&list)
    }

    /// These controllers, with the TLS settings of the flags or context.
    pub fn servers_at(&self, list: &[String]) -> Servers {
        let servers = Servers::new(list, self.timeout);
        match self.tls().and_then(|tls| servers.with_tls(tls)) {
            Ok(s) => s,
            Err(e) => usage_exit(e),
        }
    }

    /// The client TLS files: each of `--ca`/`--cert`/`--key` (or its
    /// environment variable), else the context's; none at all is plaintext.
    pub fn tls_files(&self) -> Result<Option<meridian_tls::TlsFiles>> {
        let ctx = context::context_for(self.context.as_deref())?;
        let pick =
            |flag: &Option<std::path::PathBuf>,
             f: fn(&context::NamedContext) -> &Option<std::path::PathBuf>| {
                flag.clone()
                    .or_else(|| ctx.as_ref().and_then(|c| f(c).clone()))
            };
        let (ca, cert, key) = (
            pick(&self.ca, |c| &c.ca),
            pick(&self.cert, |c| &c.cert),
            pick(&self.key, |c| &c.key),
        );
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(meridian_tls::TlsFiles { cert, key, ca })),
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    ("--ca", ca.is_none()),
                    ("--cert", cert.is_none()),
                    ("--key", key.is_none()),
                ]
                .into_iter()
                .filter_map(|(f, m)| m.then_some(f))
                .collect();
                anyhow::bail!("mutual TLS needs --ca, --cert and --key together; {} missing (flags, MERIDIAN_CA/CERT/KEY, or the context)", missing.join(" and "))
            }
        }
    }

    pub fn tls(&self) -> Result<Option<std::sync::Arc<meridian_tls::TlsSource>>> {
        match self.tls_files()? {
            None => Ok(None),
            Some(files) => Ok(Some(meridian_tls::TlsSource::client(files)?)),
        }
    }
}

fn usage_exit(e: anyhow::Error) -> ! {
    eprintln!("error: {e:#}");
    std::process::exit(2);
}

impl Global {}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a controller node.
    Server(server::ServerArgs),
    /// Run a single-node controller on localhost with its data in ./meridian-data.
    Dev(server::DevArgs),
    /// The controllers: members, roles, leader, term, lag, regions, Envoys served.
    Status,
    /// Manage the Raft cluster of controllers.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Show objects: `get KIND [NAME]`.
    Get(objects::GetArgs),
    /// Create or replace one object from a JSON spec.
    Put(objects::PutArgs),
    /// Delete one object (`delete KIND NAME`), or every object in files (`delete -f FILE`).
    Delete(objects::DeleteArgs),
    /// Create or update every object in files, all in one transaction.
    Apply(apply::ApplyArgs),
    /// The retained changes, newest first: `history [KIND[/NAME]]`.
    History(history::HistoryArgs),
    /// Restore one object (`KIND/NAME`) or the whole config to a revision, as a new write.
    Rollback(history::RollbackArgs),
    /// Show how the files' objects differ from the cluster's (exit 1 if they do).
    Diff(diff::DiffArgs),
    /// Back up and restore the replicated state.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Development CA and certificates for nodes, agents, Envoys and operators.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print an Envoy bootstrap that points at this cluster's controllers.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Progressive rollouts started by `apply --rollout`: status, promote, pause, resume, abort.
    #[command(subcommand)]
    Rollout(rollout::RolloutCmd),
    /// Every connected Envoy and its per-type sync state.
    ProxyStatus(proxy::ProxyStatusArgs),
    /// The resources served to one Envoy (`-o json` for the decoded resources).
    ProxyConfig(proxy::ProxyConfigArgs),
    /// Registered clusters, their agents, leases and endpoint counts.
    Clusters(clusters::ClustersArgs),
    /// Endpoints of one service, by region, zone and cluster, with health.
    Endpoints(clusters::EndpointsArgs),
    /// Run a federation agent: report one cluster's endpoints to its region's controllers.
    Agent(agent::AgentArgs),
    /// Serve the status page on this machine's loopback, with your credentials (kubectl-proxy style).
    Ui(ui::UiArgs),
    /// Contexts of the CLI config file (like kubeconfig).
    #[command(subcommand)]
    Config(context::ConfigCmd),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Processes that run until stopped and write logs rather than output.
    pub fn is_long_running(&self) -> bool {
        matches!(
            self,
            Command::Server(_) | Command::Dev(_) | Command::Agent(_) | Command::Ui(_)
        )
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Server(a) => server::run(a, &g).await,
        Command::Dev(a) => server::dev(a, &g).await,
        Command::Cluster(c) => cluster::run(c, &g).await,
        Command::Status => cluster::overview(&g).await,
        Command::Get(a) => objects::get(a, &g).await,
        Command::Put(a) => objects::put(a, &g).await,
        Command::Delete(a) => objects::delete(a, &g).await,
        Command::Apply(a) => apply::run(a, &g).await,
        Command::Diff(a) => diff::run(a, &g).await,
        Command::History(a) => history::history(a, &g).await,
        Command::Rollback(a) => history::rollback(a, &g).await,
        Command::Snapshot(c) => snapshot::run(c, &g).await,
        Command::Certs(c) => certs::run(c, &g),
        Command::Bootstrap(a) => bootstrap::run(a, &g).await,
        Command::Rollout(c) => rollout::run(c, &g).await,
        Command::ProxyStatus(a) => proxy::run(a, &g).await,
        Command::ProxyConfig(a) => proxy::config(a, &g).await,
        Command::Clusters(a) => clusters::run(a, &g).await,
        Command::Endpoints(a) => clusters::endpoints(a, &g).await,
        Command::Agent(a) => agent::run(a, &g).await,
        Command::Ui(a) => ui::run(a, &g).await,
        Command::Config(c) => context::run(c, &g),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "meridian",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Checks a region or object name the way the server does, so a typo fails
/// before anything is sent.
pub fn check_name(flag: &str, name: &str) -> Result<()> {
    meridian_model::validate_name(name)
        .map_err(|reason| anyhow::anyhow!("{flag} {name:?}: {reason}"))
}
