//! `meridian server` and `meridian dev`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use meridian_node::{Listeners, Node, NodeConfig, RaftTimings, TlsConfig};
use tracing::{info, warn};

use super::{Global, LogFormat};

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// YAML config file with the same fields as the flags (flags win).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// This node's id: unique in the cluster, never reused.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// This node's region.
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    #[arg(long, value_name = "ADDR")]
    pub xds_listen: Option<SocketAddr>,
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Host name or IP other nodes and clients use to reach this node, when it
    /// differs from the listen address (containers, NAT).
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// Raft timings: `lan` (one region) or `wan` (voters across regions).
    #[arg(long)]
    pub raft_profile: Option<String>,
    /// Snapshot and purge the log every this many entries.
    #[arg(long)]
    pub snapshot_logs: Option<u64>,
    /// Answer "no quorum" when a write is not committed within this time.
    #[arg(long, value_parser = super::parse_duration)]
    pub write_timeout: Option<std::time::Duration>,
    /// Start a new single-node cluster if the data dir is new.
    #[arg(long)]
    pub bootstrap: bool,
    /// API addresses of members to ask to admit this node (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// Serve PUT /debug/faults on the admin listener (tests and chaos only).
    #[arg(long)]
    pub enable_fault_injection: bool,
    /// xDS: push once changes were quiet this long.
    #[arg(long, value_parser = super::parse_duration)]
    pub xds_debounce: Option<std::time::Duration>,
    /// xDS: push at the latest once the first unpushed change is this old.
    #[arg(long, value_parser = super::parse_duration)]
    pub xds_debounce_max: Option<std::time::Duration>,
    /// xDS: the same bound while only endpoints changed (agents' reports), so churn reaches Envoy fast.
    #[arg(long, value_parser = super::parse_duration)]
    pub xds_debounce_max_endpoints: Option<std::time::Duration>,
    /// xDS: end Envoy connections after this age so they rebalance across controllers (0s: never).
    #[arg(long, value_parser = super::parse_duration)]
    pub xds_max_connection_age: Option<std::time::Duration>,
    /// Mutual TLS on every listener: this node's certificate (`meridian certs node`).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA bundle clients' and other nodes' certificates must chain to.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Run without TLS: anyone who reaches a port can read and change everything. Trusted networks only.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub insecure: bool,
}

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    #[arg(long, default_value = "./meridian-data")]
    pub data_dir: PathBuf,
    /// First of four consecutive ports: API, peer, xDS, admin.
    #[arg(long, default_value_t = 7400)]
    pub base_port: u16,
}

#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    region: Option<String>,
    data_dir: Option<PathBuf>,
    peer_listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    xds_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    advertise_host: Option<String>,
    raft_profile: Option<String>,
    raft: Option<RaftTimings>,
    snapshot_logs: Option<u64>,
    write_timeout_ms: Option<u64>,
    bootstrap: Option<bool>,
    join: Option<Vec<String>>,
    xds: Option<meridian_node::XdsOptions>,
    tls: Option<TlsConfig>,
    insecure: Option<bool>,
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // openraft's replication logs every failed RPC to a peer at ERROR, one
    // line per retry; the peer transport logs them at WARN, rate-limited,
    // and counts them (`meridian_peer_unreachable_total`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,openraft=warn,openraft::replication=off,sled=warn,h2=warn,tower=warn",
        )
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour_logs())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(QuietPeerErrors))
        .init();
}

/// Drops the ERROR lines openraft's core writes for each vote request (and
/// leadership confirmation) a down peer did not answer: a peer that is down
/// is an expected state, which the peer transport already logs at WARN,
/// rate-limited, and counts. Matched by message, so an ERROR openraft adds
/// for anything else still shows.
struct QuietPeerErrors;

impl QuietPeerErrors {
    const TARGET: &'static str = "openraft::core::raft_core";
    const MESSAGES: [&'static str; 3] = [
        "while requesting vote",
        "timeout",
        "timeout while confirming leadership for read request",
    ];
}

impl<S> tracing_subscriber::layer::Filter<S> for QuietPeerErrors {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::ERROR || meta.target() != Self::TARGET {
            return true;
        }
        struct Message(Option<String>);
        impl tracing::field::Visit for Message {
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "message" {
                    self.0 = Some(v.to_string());
                }
            }
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = Some(format!("{v:?}"));
                }
            }
        }
        let mut m = Message(None);
        event.record(&mut m);
        !m.0.is_some_and(|m| Self::MESSAGES.contains(&m.as_str()))
    }
}

/// Colour codes only help a person at a terminal; in a log file or a pipe
/// they are noise. `NO_COLOR` (set and not empty, per no-color.org) turns
/// them off even there.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn advertise(addr: SocketAddr, host: &Option<String>) -> Result<SocketAddr> {
    match host {
        None => Ok(addr),
        Some(h) => {
            use std::net::ToSocketAddrs;
            (h.as_str(), addr.port())
                .to_socket_addrs()
                .with_context(|| format!("--advertise-host {h:?}: cannot resolve"))?
                .next()
                .with_context(|| format!("--advertise-host {h:?}: no address"))
        }
    }
}

pub fn build_config(a: ServerArgs) -> Result<NodeConfig> {
    let file: FileConfig = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?;
            serde_yaml_ng::from_str(&text).with_context(|| format!("--config {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let node_id = a
        .node_id
        .or(file.node_id)
        .context("--node-id is required (or node_id in --config)")?;
    let region = a
        .region
        .or(file.region)
        .context("--region is required (or region in --config)")?;
    let data_dir = a
        .data_dir
        .or(file.data_dir)
        .context("--data-dir is required (or data_dir in --config)")?;
    let need =
        |flag: &str, v: Option<SocketAddr>| v.with_context(|| format!("--{flag} is required"));
    let listen = Listeners {
        peer: need("peer-listen", a.peer_listen.or(file.peer_listen))?,
        api: need("api-listen", a.api_listen.or(file.api_listen))?,
        xds: need("xds-listen", a.xds_listen.or(file.xds_listen))?,
        admin: need("admin-listen", a.admin_listen.or(file.admin_listen))?,
    };
    let host = a.advertise_host.or(file.advertise_host);
    let advertise_l = match &host {
        None => None,
        Some(_) => Some(Listeners {
            peer: advertise(listen.peer, &host)?,
            api: advertise(listen.api, &host)?,
            xds: advertise(listen.xds, &host)?,
            admin: advertise(listen.admin, &host)?,
        }),
    };
    let raft = match a.raft_profile.or(file.raft_profile) {
        Some(p) => match RaftTimings::profile(&p) {
            Some(t) => t,
            None => bail!("--raft-profile {p:?}: must be lan or wan"),
        },
        None => file.raft.unwrap_or_default(),
    };
    let insecure = a.insecure || file.insecure.unwrap_or(false);
    let tls = match (a.tls_cert, a.tls_key, a.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let mut t = file
                .tls
                .unwrap_or_else(|| TlsConfig::shared(cert.clone(), key.clone(), ca.clone()));
            (t.cert, t.key, t.ca) = (Some(cert), Some(key), Some(ca));
            Some(t)
        }
        _ => file.tls,
    };
    if tls.is_some() && insecure {
        bail!("--insecure and TLS settings (--tls-* or tls: in --config) contradict each other; drop one");
    }
    let cfg = NodeConfig {
        tls,
        node_id,
        region,
        data_dir,
        listen,
        advertise: advertise_l,
        raft,
        snapshot_logs: a.snapshot_logs.or(file.snapshot_logs).unwrap_or(10_000),
        write_timeout_ms: a
            .write_timeout
            .map(|d| d.as_millis() as u64)
            .or(file.write_timeout_ms)
            .unwrap_or(5_000),
        bootstrap: a.bootstrap || file.bootstrap.unwrap_or(false),
        join: if a.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            a.join
        },
        enable_fault_injection: a.enable_fault_injection,
        xds: {
            let mut x = file.xds.unwrap_or_default();
            if let Some(d) = a.xds_debounce {
                x.debounce_ms = d.as_millis() as u64;
            }
            if let Some(d) = a.xds_debounce_max {
                x.debounce_max_ms = d.as_millis() as u64;
            }
            if let Some(d) = a.xds_debounce_max_endpoints {
                x.debounce_max_endpoints_ms = d.as_millis() as u64;
            }
            if let Some(d) = a.xds_max_connection_age {
                x.max_connection_age_s = d.as_secs();
            }
            x
        },
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    // After the other checks, so that a wrong setting is named first.
    if cfg.tls.is_none() && !insecure {
        bail!(
            "meridian server needs TLS: give --tls-cert, --tls-key and --tls-ca (from `meridian certs node`; see docs/SECURITY.md) or tls: in --config; \
             --insecure runs it plaintext, for trusted networks only"
        );
    }
    Ok(cfg)
}

pub async fn run(a: ServerArgs, g: &Global) -> Result<()> {
    init_logging(g.log_format);
    let cfg = build_config(a)?;
    if cfg.tls.is_none() {
        warn!(
            node = cfg.node_id,
            "INSECURE: --insecure given; the peer, API and xDS listeners are plaintext and unauthenticated. \
             Anyone who reaches them can rewrite the config, read every secret and speak Raft. Use TLS (docs/SECURITY.md)."
        );
    }
    serve(cfg).await
}

async fn serve(cfg: NodeConfig) -> Result<()> {
    let mut node = Node::start(cfg).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = node.wait() => { r?; }
        _ = tokio::signal::ctrl_c() => info!("interrupt received; shutting down"),
        _ = term.recv() => info!("SIGTERM received; shutting down"),
    }
    node.shutdown().await?;
    Ok(())
}

pub async fn dev(a: DevArgs, g: &Global) -> Result<()> {
    init_logging(g.log_format);
    let p = a.base_port;
    let addr = |off: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], p + off)) };
    let cfg = NodeConfig {
        node_id: 1,
        region: "local".into(),
        data_dir: a.data_dir.clone(),
        listen: Listeners {
            api: addr(0),
            peer: addr(1),
            xds: addr(2),
            admin: addr(3),
        },
        advertise: None,
        raft: RaftTimings::lan(),
        snapshot_logs: 10_000,
        write_timeout_ms: 5_000,
        bootstrap: true,
        join: vec![],
        enable_fault_injection: false,
        xds: Default::default(),
        // Plaintext, but every listener is bound to 127.0.0.1 only.
        tls: None,
    };
    println!(
        "meridian dev: a single-node controller, data in {}",
        a.data_dir.display()
    );
    println!("  API    {}   (meridian --server {} ...)", addr(0), addr(0));
    println!("  xDS    {}", addr(2));
    println!("  admin  http://{}/metrics", addr(3));
    println!("  peer   {}", addr(1));
    serve(cfg).await
}
