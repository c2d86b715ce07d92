//! `meridian clusters` and `meridian endpoints`: registered clusters, their
//! agents and leases, and the endpoints they report.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::Subcommand;
use meridian_model::reported::{
    split_endpoints_name, Claim, Lease, ReportedEndpoint, KIND_CLAIM, KIND_ENDPOINTS, KIND_LEASE,
};
use meridian_proto::v1 as pb;
use serde_json::json;

use super::Global;
use crate::output::{age, print_value, table, Format};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClustersArgs {
    #[command(subcommand)]
    pub cmd: Option<ClustersCmd>,
}

#[derive(Subcommand, Debug)]
pub enum ClustersCmd {
    /// List clusters, their agents, leases and endpoint counts (the default).
    List,
    /// Register a cluster and print its agent token (shown once).
    Add {
        name: String,
        #[arg(long)]
        region: String,
        #[arg(long, default_value = "")]
        zone: String,
        /// How long endpoints outlive their agent's silence (5s-10m).
        #[arg(long, default_value = "30s")]
        lease_ttl: String,
        /// drop: endpoints leave EDS when the lease expires; keep: last known stay.
        #[arg(long, default_value = "drop", value_parser = ["drop", "keep"])]
        on_lease_expiry: String,
        /// Use this token instead of a random one (for scripted setups).
        #[arg(long, env = "MERIDIAN_CLUSTER_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct EndpointsArgs {
    /// The Meridian service.
    pub service: String,
}

async fn list_kind(g: &Global, kind: &str) -> Result<Vec<pb::Object>> {
    let kind = kind.to_string();
    Ok(g.servers()
        .config_call(|mut c| {
            let kind = kind.clone();
            async move {
                c.list(pb::ListRequest {
                    kind,
                    consistency: pb::Consistency::Local as i32,
                })
                .await
            }
        })
        .await?
        .objects)
}

pub async fn run(a: ClustersArgs, g: &Global) -> Result<()> {
    match a.cmd.unwrap_or(ClustersCmd::List) {
        ClustersCmd::Add {
            name,
            region,
            zone,
            lease_ttl,
            on_lease_expiry,
            token,
        } => {
            crate::cli::check_name("NAME", &name)?;
            crate::cli::check_name("--region", &region)?;
            let token = token.unwrap_or_else(|| {
                format!(
                    "mrd_{:032x}{:032x}",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                )
            });
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
            let mut spec = json!({"region": region, "tokenSha256": digest, "leaseTtl": lease_ttl, "onLeaseExpiry": on_lease_expiry});
            if !zone.is_empty() {
                spec["zone"] = json!(zone);
            }
            let req = pb::TxnRequest {
                request_id: crate::cli::objects::request_id(None),
                ops: vec![pb::TxnOp {
                    op: Some(pb::txn_op::Op::Put(pb::PutOp {
                        key: Some(pb::ObjectKey {
                            kind: "cluster".into(),
                            name: name.clone(),
                        }),
                        value: serde_json::to_vec(&spec)?,
                        expected_revision: None,
                    })),
                }],
                dry_run: false,
            };
            g.servers()
                .config_request(&req, |mut c, req| async move { c.txn(req).await })
                .await?;
            eprintln!("cluster/{name} registered in region {region}. Its agent token (shown once, keep it secret):");
            println!("{token}");
        }
        ClustersCmd::List => {
            let clusters = list_kind(g, "cluster").await?;
            let claims: BTreeMap<String, Claim> = list_kind(g, KIND_CLAIM)
                .await?
                .into_iter()
                .filter_map(|o| Some((o.name.clone(), serde_json::from_slice(&o.value).ok()?)))
                .collect();
            let leases: BTreeMap<String, (Lease, u64)> = list_kind(g, KIND_LEASE)
                .await?
                .into_iter()
                .filter_map(|o| {
                    Some((
                        o.name.clone(),
                        (serde_json::from_slice(&o.value).ok()?, o.updated_at_ms),
                    ))
                })
                .collect();
            let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            for o in list_kind(g, KIND_ENDPOINTS).await? {
                let Some((cluster, _)) = split_endpoints_name(&o.name) else {
                    continue;
                };
                let eps: Vec<ReportedEndpoint> =
                    serde_json::from_slice(&o.value).unwrap_or_default();
                let c = counts.entry(cluster.to_string()).or_default();
                c.0 += eps.len();
                c.1 += eps
                    .iter()
                    .filter(|e| e.health == meridian_model::reported::ReportedHealth::Healthy)
                    .count();
            }
            let rows: Vec<serde_json::Value> = clusters
                .iter()
                .map(|c| {
                    let spec: serde_json::Value = serde_json::from_slice(&c.value).unwrap_or_default();
                    let claim = claims.get(&c.name);
                    let lease = leases.get(&c.name);
                    let (total, healthy) = counts.get(&c.name).copied().unwrap_or_default();
                    json!({
                        "cluster": c.name,
                        "region": spec["region"],
                        "agent": claim.map(|c| c.agent.clone()),
                        "session": claim.map(|c| c.session.clone()),
                        "controller": lease.map(|l| l.0.controller),
                        "lease": match lease {
                            None => "none".to_string(),
                            Some((l, _)) if l.expired => "expired".to_string(),
                            Some(_) => "active".to_string(),
                        },
                        "lease_renewed_ms": lease.map(|l| l.1),
                        "on_lease_expiry": lease.map(|l| format!("{:?}", l.0.on_expiry).to_lowercase()),
                        "endpoints": total,
                        "healthy": healthy,
                    })
                })
                .collect();
            match g.output {
                Format::Json | Format::Yaml => print_value(&json!({"clusters": rows}), g.output)?,
                _ => {
                    let table_rows: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            let s = |k: &str| cell(&r[k]);
                            vec![
                                s("cluster"),
                                s("region"),
                                s("agent"),
                                s("controller"),
                                s("lease"),
                                r["lease_renewed_ms"]
                                    .as_u64()
                                    .map(age)
                                    .unwrap_or_else(|| "-".into()),
                                format!("{}/{}", s("healthy"), s("endpoints")),
                            ]
                        })
                        .collect();
                    if table_rows.is_empty() {
                        eprintln!("no clusters registered; add one with `meridian clusters add NAME --region R`");
                    } else {
                        print!(
                            "{}",
                            table(
                                &[
                                    "CLUSTER",
                                    "REGION",
                                    "AGENT",
                                    "CONTROLLER",
                                    "LEASE",
                                    "RENEWED",
                                    "HEALTHY/ENDPOINTS"
                                ],
                                &table_rows
                            )
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

pub async fn endpoints(a: EndpointsArgs, g: &Global) -> Result<()> {
    crate::cli::check_name("SERVICE", &a.service)?;
    let clusters: BTreeMap<String, serde_json::Value> = list_kind(g, "cluster")
        .await?
        .into_iter()
        .map(|o| {
            (
                o.name.clone(),
                serde_json::from_slice(&o.value).unwrap_or_default(),
            )
        })
        .collect();
    let leases: BTreeMap<String, Lease> = list_kind(g, KIND_LEASE)
        .await?
        .into_iter()
        .filter_map(|o| Some((o.name.clone(), serde_json::from_slice(&o.value).ok()?)))
        .collect();
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for o in list_kind(g, KIND_ENDPOINTS).await? {
        let Some((cluster, svc)) = split_endpoints_name(&o.name) else {
            continue;
        };
        if svc != a.service {
            continue;
        }
        let spec = clusters.get(cluster).cloned().unwrap_or_default();
        let lease = leases.get(cluster);
        let eps: Vec<ReportedEndpoint> =
            serde_json::from_slice(&o.value).context("stored endpoints")?;
        for e in eps {
            let zone = if e.zone.is_empty() {
                spec["zone"].as_str().unwrap_or("").to_string()
            } else {
                e.zone.clone()
            };
            rows.push(json!({
                "region": spec["region"], "zone": zone, "cluster": cluster, "address": e.address, "port": e.port,
                "weight": e.weight, "health": format!("{:?}", e.health).to_uppercase(),
                "lease": lease.map(|l| if l.expired { "expired" } else { "active" }).unwrap_or("none"),
            }));
        }
    }
    // Endpoints declared in the Service itself.
    let svc = g
        .servers()
        .config_call(|mut c| {
            let name = a.service.clone();
            async move {
                c.get(pb::GetRequest {
                    key: Some(pb::ObjectKey {
                        kind: "service".into(),
                        name,
                    }),
                    consistency: pb::Consistency::Local as i32,
                })
                .await
            }
        })
        .await;
    if let Ok(r) = svc {
        if let Some(o) = r.object {
            let spec: serde_json::Value = serde_json::from_slice(&o.value).unwrap_or_default();
            for e in spec["endpoints"].as_array().cloned().unwrap_or_default() {
                rows.push(json!({
                    "region": e["region"], "zone": e["zone"].as_str().unwrap_or(""), "cluster": "static",
                    "address": e["address"], "port": e["port"].as_u64().or(spec["port"].as_u64()),
                    "weight": e["weight"].as_u64().unwrap_or(1), "health": "HEALTHY", "lease": "-",
                }));
            }
        }
    }
    rows.sort_by_key(|r| {
        (
            r["region"].to_string(),
            r["zone"].to_string(),
            r["cluster"].to_string(),
            r["address"].to_string(),
        )
    });
    match g.output {
        Format::Json | Format::Yaml => {
            print_value(&json!({"service": a.service, "endpoints": rows}), g.output)?
        }
        _ => {
            if rows.is_empty() {
                eprintln!("no endpoints for service {}", a.service);
                return Ok(());
            }
            let t: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let s = |k: &str| cell(&r[k]);
                    vec![
                        s("region"),
                        s("zone"),
                        s("cluster"),
                        s("address"),
                        s("port"),
                        s("health"),
                        s("weight"),
                        s("lease"),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["REGION", "ZONE", "CLUSTER", "ADDRESS", "PORT", "HEALTH", "WEIGHT", "LEASE"],
                    &t
                )
            );
        }
    }
    Ok(())
}

/// A table cell from a JSON row field: its text or number, `-` when absent.
fn cell(v: &serde_json::Value) -> String {
    v.as_str()
        .map(String::from)
        .or_else(|| v.as_u64().map(|n| n.to_string()))
        .unwrap_or_else(|| "-".into())
}
