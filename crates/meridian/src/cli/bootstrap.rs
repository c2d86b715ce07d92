//! `meridian bootstrap`: the flags and the cluster's answers (controllers,
//! the region's failover order) become a `BootstrapSpec`; the bootstrap
//! itself is `meridian_translate::bootstrap`, which tests and benchmarks use
//! too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use meridian_translate::bootstrap::{bootstrap, AdsVariant, BootstrapSpec};
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
    /// Write to this file instead of stdout.
    #[arg(long = "out", short = 'O')]
    pub out: Option<PathBuf>,
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
            .cluster_call(|mut c| async move { c.get_cluster_status(pb::ClusterStatusRequest {}).await })
            .await
            .context("asking the cluster for its controllers")?;
        let nodes: Vec<pb::NodeInfo> = st.members.into_iter().filter_map(|m| m.node).filter(|n| !n.xds_addr.is_empty()).collect();
        for n in nodes.iter().filter(|n| !n.admin_addr.is_empty()) {
            admin.insert(n.xds_addr.clone(), n.admin_addr.clone());
        }
        nodes.into_iter().map(|n| (n.region, n.xds_addr)).collect()
    } else {
        a.controllers
            .iter()
            .map(|c| {
                c.split_once('=')
                    .map(|(r, addr)| (r.to_string(), addr.to_string()))
                    .with_context(|| format!("--controllers {c:?}: expected REGION=HOST:PORT"))
            })
            .collect::<Result<_>>()?
    };
    if controllers.is_empty() {
        bail!("no controllers with an xDS address are known; pass --controllers REGION=HOST:PORT");
    }
    let failover = if a.controllers.is_empty() { region_failover(g, &a.region).await } else { Vec::new() };
    let mut spec = spec(&a, &controllers, &failover);
    spec.controller_admin = admin;
    let yaml = serde_yaml_ng::to_string(&bootstrap(&spec)?)?;
    match &a.out {
        Some(p) => std::fs::write(p, yaml).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{yaml}"),
    }
    Ok(())
}

/// The failover order of the Envoy's region, from its Region object if any.
async fn region_failover(g: &Global, region: &str) -> Vec<String> {
    let key = pb::ObjectKey { kind: "region".into(), name: region.into() };
    let got = g
        .servers()
        .config_call(|mut c| {
            let key = key.clone();
            async move { c.get(pb::GetRequest { key: Some(key), consistency: pb::Consistency::Local as i32 }).await }
        })
        .await;
    got.ok()
        .and_then(|r| r.object)
        .and_then(|o| serde_json::from_slice::<Value>(&o.value).ok())
        .and_then(|v| v["failover"].as_array().cloned())
        .map(|a| a.iter().filter_map(|r| r.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The typed input of the generator, from the flags.
fn spec(a: &BootstrapArgs, controllers: &[(String, String)], failover: &[String]) -> BootstrapSpec {
    BootstrapSpec {
        node_id: a.node_id.clone(),
        region: a.region.clone(),
        zone: a.zone.clone(),
        group: a.group.clone(),
        variant: if a.sotw { AdsVariant::Sotw } else { AdsVariant::Delta },
        admin_address: a.admin_address.clone(),
        admin_port: a.admin_port,
        controllers: controllers.to_vec(),
        controller_admin: BTreeMap::new(),
        failover: failover.to_vec(),
    }
}
