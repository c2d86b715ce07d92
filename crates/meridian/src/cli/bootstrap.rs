//! `meridian bootstrap`: the flags and the cluster's answers (controllers,
//! the region's failover order) become a `BootstrapSpec`; the bootstrap
//! itself is `meridian_translate::bootstrap`, which tests and benchmarks use
//! too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meridian_pki::{bundle_trust_domain, TrustDomain};
use meridian_proto::v1 as pb;
use meridian_translate::bootstrap::{bootstrap, AdsVariant, BootstrapSpec, XdsTls};
use serde_json::Value;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// The Envoy's node id (unique per Envoy).
    #[arg(long)]
    pub node_id: String,
    /// The Envoy's region: its own region's controllers come first.
    #[arg(long)]
    pub region: String,
    #[arg(long, default_value = "")]
    pub zone: String,
    /// Proxy group (Envoy node.cluster): selects which listeners it gets.
    #[arg(long, default_value = "default")]
    pub group: String,
    /// Incremental xDS (the default).
    #[arg(long, conflicts_with = "sotw")]
    pub delta: bool,
    /// State-of-the-world xDS.
    #[arg(long)]
    pub sotw: bool,
    /// Envoy's admin listener port (on --admin-address).
    #[arg(long, default_value_t = 9901)]
    pub admin_port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_address: String,
    /// Controllers' xDS addresses as REGION=HOST:PORT,...; default: asked from the cluster
    /// (which also gives their admin addresses, so Envoy checks their /readyz; with this
    /// flag it checks the xDS port by TCP).
    #[arg(long, value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// With --controllers: the port of every controller's admin listener, on the host of its
    /// xDS address, so Envoy checks their /readyz (a controller not ready yet is skipped)
    /// rather than the xDS port by TCP.
    #[arg(long, requires = "controllers")]
    pub controller_admin_port: Option<u16>,
    /// How often Envoy pushes its counters to the controllers (1s to 300s), which rollouts
    /// read for the canary's 5xx rate; `off`: no stats sink.
    #[arg(long, default_value = "5s", value_parser = flush_interval)]
    pub stats_flush_interval: FlushInterval,
    /// Write to this file instead of stdout.
    #[arg(long = "out", short = 'O')]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub tls: EnvoyTlsArgs,
}

/// Mutual TLS between the Envoy and the controllers. Paths are as the Envoy
/// sees them; they are read here only to learn the CA's trust domain.
#[derive(clap::Args, Debug, Default)]
pub struct EnvoyTlsArgs {
    /// The Envoy's certificate (identity proxy/GROUP, GROUP = --group), PEM.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<String>,
    /// The Envoy's private key, PEM.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<String>,
    /// The CA bundle that issued the controllers' certificates, PEM.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<String>,
    /// Trust domain of the controllers' identities (spiffe://DOMAIN/node/ID);
    /// default: read from --tls-ca when that file is readable here, else
    /// meridian.local.
    #[arg(long, requires = "tls_ca")]
    pub tls_trust_domain: Option<String>,
}

/// `--stats-flush-interval`: a duration, or `off`.
#[derive(Clone, Copy, Debug)]
pub struct FlushInterval(Option<Duration>);

fn flush_interval(s: &str) -> Result<FlushInterval, String> {
    if s == "off" {
        return Ok(FlushInterval(None));
    }
    let d = super::parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(300) {
        return Err(format!(
            "{s}: must be between 1s and 300s (Envoy's bound), or off"
        ));
    }
    Ok(FlushInterval(Some(d)))
}

pub async fn run(a: BootstrapArgs, g: &Global) -> Result<()> {
    crate::cli::check_name("--region", &a.region)?;
    if a.node_id.is_empty() {
        bail!("--node-id: must not be empty");
    }
    let mut admin = BTreeMap::new();
    let controllers: Vec<(String, String)> = if a.controllers.is_empty() {
        let st = g
            .servers()
            .cluster_call(
                |mut c| async move { c.get_cluster_status(pb::ClusterStatusRequest {}).await },
            )
            .await
            .context("asking the cluster for its controllers")?;
        let nodes: Vec<pb::NodeInfo> = st
            .members
            .into_iter()
            .filter_map(|m| m.node)
            .filter(|n| !n.xds_addr.is_empty())
            .collect();
        for n in nodes.iter().filter(|n| !n.admin_addr.is_empty()) {
            admin.insert(n.xds_addr.clone(), n.admin_addr.clone());
        }
        nodes.into_iter().map(|n| (n.region, n.xds_addr)).collect()
    } else {
        let given: Vec<(String, String)> = a
            .controllers
            .iter()
            .map(|c| {
                c.split_once('=')
                    .filter(|(r, addr)| !r.is_empty() && addr.rsplit_once(':').is_some())
                    .map(|(r, addr)| (r.to_string(), addr.to_string()))
                    .with_context(|| format!("--controllers {c:?}: expected REGION=HOST:PORT"))
            })
            .collect::<Result<_>>()?;
        if let Some(port) = a.controller_admin_port {
            for (_, addr) in &given {
                // Checked above: every address has a port after its host.
                let (host, _) = addr.rsplit_once(':').expect("HOST:PORT");
                admin.insert(addr.clone(), format!("{host}:{port}"));
            }
        }
        given
    };
    if controllers.is_empty() {
        bail!("no controllers with an xDS address are known; pass --controllers REGION=HOST:PORT");
    }
    let failover = if a.controllers.is_empty() {
        region_failover(g, &a.region).await
    } else {
        Vec::new()
    };
    let mut spec = spec(&a, &controllers, &failover);
    spec.controller_admin = admin;
    spec.tls = xds_tls(&a.tls)?;
    let yaml = serde_yaml_ng::to_string(&bootstrap(&spec)?)?;
    match &a.out {
        Some(p) => std::fs::write(p, yaml).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{yaml}"),
    }
    Ok(())
}

/// The failover order of the Envoy's region, from its Region object if any.
async fn region_failover(g: &Global, region: &str) -> Vec<String> {
    let key = pb::ObjectKey {
        kind: "region".into(),
        name: region.into(),
    };
    let got = g
        .servers()
        .config_call(|mut c| {
            let key = key.clone();
            async move {
                c.get(pb::GetRequest {
                    key: Some(key),
                    consistency: pb::Consistency::Local as i32,
                })
                .await
            }
        })
        .await;
    got.ok()
        .and_then(|r| r.object)
        .and_then(|o| serde_json::from_slice::<Value>(&o.value).ok())
        .and_then(|v| v["failover"].as_array().cloned())
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The TLS settings of the bootstrap, or `None` without `--tls-*` flags. A
/// trust domain given by hand must agree with a CA file readable here: a
/// mismatch would leave Envoy refusing every controller, silently.
fn xds_tls(a: &EnvoyTlsArgs) -> Result<Option<XdsTls>> {
    let (Some(cert), Some(key), Some(ca)) = (&a.tls_cert, &a.tls_key, &a.tls_ca) else {
        return Ok(None);
    };
    let given = a
        .tls_trust_domain
        .as_deref()
        .map(|d| TrustDomain::new(d).map_err(|e| anyhow::anyhow!("--tls-trust-domain: {e}")))
        .transpose()?;
    let local = Path::new(ca);
    let from_ca = if local.exists() {
        Some(bundle_trust_domain(local).with_context(|| format!("--tls-ca {ca}"))?)
    } else {
        None
    };
    let domain = match (given, from_ca) {
        (Some(g), Some(f)) if g != f => {
            bail!("--tls-trust-domain {g} does not match the trust domain of --tls-ca {ca} ({f})")
        }
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => {
            eprintln!(
                "note: --tls-ca {ca} is not readable here; assuming trust domain {} (set --tls-trust-domain)",
                TrustDomain::default()
            );
            TrustDomain::default()
        }
    };
    Ok(Some(XdsTls {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
        trust_domain: domain.as_str().to_string(),
    }))
}

/// The typed input of the generator, from the flags.
fn spec(a: &BootstrapArgs, controllers: &[(String, String)], failover: &[String]) -> BootstrapSpec {
    BootstrapSpec {
        node_id: a.node_id.clone(),
        region: a.region.clone(),
        zone: a.zone.clone(),
        group: a.group.clone(),
        variant: if a.sotw {
            AdsVariant::Sotw
        } else {
            AdsVariant::Delta
        },
        admin_address: a.admin_address.clone(),
        admin_port: a.admin_port,
        controllers: controllers.to_vec(),
        controller_admin: BTreeMap::new(),
        failover: failover.to_vec(),
        stats_flush_interval: a.stats_flush_interval.0,
        tls: None,
    }
}
