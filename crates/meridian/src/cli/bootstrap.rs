//! `meridian bootstrap`: an Envoy bootstrap whose xDS cluster lists the
//! controllers of the Envoy's region first and those of the other regions as
//! lower priorities, with active health checks so Envoy moves off a dead
//! controller (and off a dead region) on its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use serde_json::{json, Value};

use super::Global;

/// Name of the static cluster Envoy reaches the controllers through.
pub const XDS_CLUSTER: &str = "meridian_xds";

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
    /// Controllers' xDS addresses as REGION=HOST:PORT,...; default: asked from the cluster.
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
    let controllers: Vec<(String, String)> = if a.controllers.is_empty() {
        let st = g
            .servers()
            .cluster_call(|mut c| async move { c.get_cluster_status(pb::ClusterStatusRequest {}).await })
            .await
            .context("asking the cluster for its controllers")?;
        st.members
            .into_iter()
            .filter_map(|m| m.node)
            .filter(|n| !n.xds_addr.is_empty())
            .map(|n| (n.region, n.xds_addr))
            .collect()
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
    let yaml = serde_yaml_ng::to_string(&bootstrap(&a, &controllers, &failover)?)?;
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

/// Priority of each region: own first, then its failover order, then the
/// rest by name.
fn priorities(own: &str, failover: &[String], regions: impl Iterator<Item = String>) -> BTreeMap<String, u32> {
    let mut order: Vec<String> = vec![own.to_string()];
    order.extend(failover.iter().cloned());
    let mut rest: Vec<String> = regions.collect();
    rest.sort();
    rest.dedup();
    for r in rest {
        if !order.contains(&r) {
            order.push(r);
        }
    }
    order.into_iter().enumerate().map(|(i, r)| (r, i as u32)).collect()
}

pub fn bootstrap(a: &BootstrapArgs, controllers: &[(String, String)], failover: &[String]) -> Result<Value> {
    let prio = priorities(&a.region, failover, controllers.iter().map(|(r, _)| r.clone()));
    let mut by_prio: BTreeMap<u32, (String, Vec<Value>)> = BTreeMap::new();
    let mut all_ips = true;
    for (region, addr) in controllers {
        let (host, port) = addr.rsplit_once(':').with_context(|| format!("controller address {addr:?} has no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().with_context(|| format!("controller address {addr:?}: bad port"))?;
        all_ips &= host.parse::<std::net::IpAddr>().is_ok();
        let p = prio[region];
        by_prio.entry(p).or_insert_with(|| (region.clone(), Vec::new())).1.push(json!({
            "endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}
        }));
    }
    // Priorities must be contiguous from 0 (Envoy rejects gaps): renumber.
    let endpoints: Vec<Value> = by_prio
        .into_values()
        .enumerate()
        .map(|(i, (region, lb))| json!({"priority": i, "locality": {"region": region}, "lb_endpoints": lb}))
        .collect();
    let api_type = if a.sotw { "GRPC" } else { "DELTA_GRPC" };
    let mut locality = json!({"region": a.region});
    if !a.zone.is_empty() {
        locality["zone"] = json!(a.zone);
    }
    Ok(json!({
        "node": {"id": a.node_id, "cluster": a.group, "locality": locality},
        "admin": {"address": {"socket_address": {"address": a.admin_address, "port_value": a.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            // gRPC keepalive: a silently dead controller is noticed in seconds.
                            "connection_keepalive": {"interval": "10s", "timeout": "5s"}
                        }}
                    }
                },
                // Active checks move Envoy off a dead controller, and off a
                // whole dead region to the next priority.
                "health_checks": [{
                    "timeout": "1s",
                    "interval": "2s",
                    "no_traffic_interval": "2s",
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 1,
                    "tcp_health_check": {},
                }],
                "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": endpoints},
            }],
        },
    }))
}
