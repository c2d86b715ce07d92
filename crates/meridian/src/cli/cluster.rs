//! `meridian cluster ...`: bootstrap, membership and status.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::Subcommand;
use meridian_proto::v1 as pb;
use serde_json::json;

use super::Global;
use crate::client::status;
use crate::output::{table, Format};

#[derive(clap::Args, Debug)]
pub struct AddNodeArgs {
    #[arg(long)]
    id: u64,
    #[arg(long)]
    region: String,
    #[arg(long)]
    peer_addr: String,
    #[arg(long)]
    api_addr: String,
    #[arg(long, default_value = "")]
    xds_addr: String,
    #[arg(long, default_value = "")]
    admin_addr: String,
    /// Keep it a learner (replicates, does not vote).
    #[arg(long)]
    learner: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Start a new cluster. Without --members-from, a single-node cluster of
    /// the node --server points at; with it, all the named nodes at once.
    Init {
        /// API addresses of every initial member (comma-separated).
        #[arg(long, value_delimiter = ',')]
        members_from: Vec<String>,
    },
    /// Add a node: first as a learner, promoted to voter once caught up.
    AddNode(AddNodeArgs),
    /// Remove a node. Its id can never join again.
    RemoveNode { id: u64 },
    /// Members, roles, leader, term, commit and applied index per node.
    Status,
}

pub async fn run(cmd: ClusterCmd, g: &Global) -> Result<()> {
    let servers = g.servers();
    match cmd {
        ClusterCmd::Init { members_from } => {
            let mut members = Vec::new();
            for addr in &members_from {
                let one = g.servers_at(std::slice::from_ref(addr));
                let st = one
                    .cluster()
                    .await?
                    .get_node_status(pb::NodeStatusRequest {})
                    .await
                    .map_err(status)
                    .with_context(|| format!("asking {addr} who it is"))?
                    .into_inner();
                members.push(st.node.context("node did not describe itself")?);
            }
            let target = if members_from.is_empty() {
                servers
            } else {
                g.servers_at(&members_from[..1])
            };
            target
                .cluster()
                .await?
                .init(pb::InitRequest {
                    members: members.clone(),
                })
                .await
                .map_err(status)?;
            if members.is_empty() {
                println!("initialized a single-node cluster");
            } else {
                let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
                println!("initialized a cluster of nodes {}", ids.join(", "));
            }
        }
        ClusterCmd::AddNode(a) => {
            let id = a.id;
            let req = pb::AddNodeRequest {
                learner_only: a.learner,
                node: Some(pb::NodeInfo {
                    id: a.id,
                    region: a.region,
                    peer_addr: a.peer_addr,
                    api_addr: a.api_addr,
                    xds_addr: a.xds_addr,
                    admin_addr: a.admin_addr,
                }),
            };
            let r = servers
                .cluster_request(&req, |mut c, req| async move { c.add_node(req).await })
                .await?;
            println!(
                "node {id} added; voters {:?}, learners {:?}",
                r.voters, r.learners
            );
        }
        ClusterCmd::RemoveNode { id } => {
            let r = servers
                .cluster_call(|mut c| async move {
                    c.remove_node(pb::RemoveNodeRequest { node_id: id }).await
                })
                .await?;
            println!(
                "node {id} removed; voters {:?}, learners {:?}",
                r.voters, r.learners
            );
        }
        ClusterCmd::Status => {
            let r = servers
                .cluster_call(|mut c| async move {
                    c.get_cluster_status(pb::ClusterStatusRequest {}).await
                })
                .await?;
            print_status(&r, &BTreeMap::new(), &[], g.output)?;
        }
    }
    Ok(())
}

/// `meridian status`: the Raft cluster plus how many Envoys each controller serves.
pub async fn overview(g: &Global) -> Result<()> {
    let servers = g.servers();
    let r = servers
        .cluster_call(
            |mut c| async move { c.get_cluster_status(pb::ClusterStatusRequest {}).await },
        )
        .await?;
    let proxies = servers
        .cluster_call(|mut c| async move {
            c.get_proxy_status(pb::ProxyStatusRequest { local_only: false })
                .await
        })
        .await?;
    let mut envoys: BTreeMap<u64, usize> = BTreeMap::new();
    for p in &proxies.proxies {
        *envoys.entry(p.controller_id).or_default() += 1;
    }
    // Rollouts are shown when the servers know them (an older build does not).
    let rollouts: Vec<pb::Rollout> = super::rollout::list(&servers, "")
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| matches!(r.state.as_str(), "progressing" | "paused" | "halted"))
        .collect();
    print_status(&r, &envoys, &rollouts, g.output)
}

fn print_status(
    r: &pb::ClusterStatusResponse,
    envoys: &BTreeMap<u64, usize>,
    rollouts: &[pb::Rollout],
    format: Format,
) -> Result<()> {
    let show_envoys = !envoys.is_empty() || format != Format::Table;
    // A plaintext cluster has no certificates to show.
    let show_certs = r
        .members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .any(|s| !s.certificates.is_empty());
    let members: Vec<serde_json::Value> = r
        .members
        .iter()
        .map(|m| {
            let n = m.node.clone().unwrap_or_default();
            let s = m.status.clone();
            json!({
                "id": n.id,
                "region": n.region,
                "api_addr": n.api_addr,
                "peer_addr": n.peer_addr,
                "xds_addr": n.xds_addr,
                "admin_addr": n.admin_addr,
                "voter": m.voter,
                "role": s.as_ref().map(|s| s.role.clone()),
                "ready": s.as_ref().map(|s| s.ready),
                "not_ready_reason": s.as_ref().map(|s| s.not_ready_reason.clone()).filter(|r| !r.is_empty()),
                "term": s.as_ref().map(|s| s.term),
                "leader_id": s.as_ref().map(|s| s.leader_id),
                "last_log_index": s.as_ref().map(|s| s.last_log_index),
                "commit_index": s.as_ref().map(|s| s.commit_index),
                "applied_index": s.as_ref().map(|s| s.applied_index),
                "snapshot_index": s.as_ref().map(|s| s.snapshot_index),
                "revision": s.as_ref().map(|s| s.revision),
                "error": if m.error.is_empty() { None } else { Some(m.error.clone()) },
                "envoys": envoys.get(&n.id).copied().unwrap_or(0),
                "certificates": s.as_ref().map(|s| s.certificates.iter().map(|c| json!({
                    "listener": c.listener,
                    "identity": c.identity,
                    "not_after": meridian_pki::format_utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.not_after_unix.max(0) as u64)),
                    "expires_in_seconds": c.expires_in_seconds,
                })).collect::<Vec<_>>()),
            })
        })
        .collect();
    match format {
        Format::Json | Format::Yaml => Ok(crate::output::print_value(
            &json!({"leader_id": r.leader_id, "term": r.term, "answered_by": r.answered_by, "members": members,
                "rollouts": rollouts.iter().map(super::rollout::to_json).collect::<Vec<_>>()}),
            format,
        )?),
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = r
                .members
                .iter()
                .map(|m| {
                    let n = m.node.clone().unwrap_or_default();
                    let ready = match &m.status {
                        Some(s) if s.ready => "yes".to_string(),
                        Some(_) => "no".to_string(),
                        None => "-".to_string(),
                    };
                    let (role, term, commit, applied, lag) = match &m.status {
                        Some(s) => {
                            let lag = r
                                .members
                                .iter()
                                .filter_map(|x| x.status.as_ref())
                                .find(|x| x.role == "leader")
                                .and_then(|l| l.replication_lag.get(&n.id).copied())
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "-".into());
                            (
                                s.role.clone(),
                                s.term.to_string(),
                                s.commit_index.to_string(),
                                s.applied_index.to_string(),
                                lag,
                            )
                        }
                        None => (
                            "unreachable".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                        ),
                    };
                    let mut row = vec![
                        n.id.to_string(),
                        n.region.clone(),
                        role,
                        ready,
                        if m.voter {
                            "voter".into()
                        } else {
                            "learner".into()
                        },
                        term,
                        commit,
                        applied,
                        lag,
                        n.api_addr.clone(),
                    ];
                    if show_envoys {
                        row.push(envoys.get(&n.id).copied().unwrap_or(0).to_string());
                    }
                    if show_certs {
                        row.push(
                            m.status
                                .as_ref()
                                .map(|s| cert_expiry(&s.certificates, format == Format::Wide))
                                .unwrap_or_else(|| "-".into()),
                        );
                    }
                    if format == Format::Wide {
                        row.push(n.peer_addr.clone());
                        row.push(n.admin_addr.clone());
                        let reason = m
                            .status
                            .as_ref()
                            .map(|s| s.not_ready_reason.as_str())
                            .unwrap_or("");
                        row.push(if m.error.is_empty() {
                            reason.to_string()
                        } else {
                            m.error.clone()
                        });
                    }
                    row
                })
                .collect();
            let mut headers = vec![
                "ID", "REGION", "ROLE", "READY", "MEMBER", "TERM", "COMMIT", "APPLIED", "LAG",
                "API",
            ];
            if show_envoys {
                headers.push("ENVOYS");
            }
            if show_certs {
                headers.push("CERT EXPIRY");
            }
            if format == Format::Wide {
                headers.extend(["PEER", "ADMIN", "ERROR"]);
            }
            let leader = if r.leader_id == 0 {
                "none (no quorum?)".to_string()
            } else {
                r.leader_id.to_string()
            };
            println!("leader: {leader}   term: {}", r.term);
            print!("{}", table(&headers, &rows));
            if !rollouts.is_empty() {
                println!("\nactive rollouts:");
                print!("{}", super::rollout::rows(rollouts));
            }
            Ok(())
        }
    }
}

/// The soonest expiry of a node's certificates and whose it is (`29d (xds)`),
/// or, wide, each listener's (`peer 364d, api 364d, ...`).
fn cert_expiry(certs: &[pb::CertificateStatus], every: bool) -> String {
    if certs.is_empty() {
        return "-".into();
    }
    if every {
        return certs
            .iter()
            .map(|c| format!("{} {}", c.listener, left(c.expires_in_seconds)))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let soonest = certs
        .iter()
        .min_by_key(|c| c.expires_in_seconds)
        .expect("not empty");
    let all_same = certs
        .iter()
        .all(|c| c.expires_in_seconds / 86400 == soonest.expires_in_seconds / 86400);
    if all_same {
        left(soonest.expires_in_seconds)
    } else {
        format!(
            "{} ({})",
            left(soonest.expires_in_seconds),
            soonest.listener
        )
    }
}

/// Time left, coarse: days, else hours, else minutes; `EXPIRED` once past.
fn left(seconds: i64) -> String {
    match seconds {
        s if s <= 0 => "EXPIRED".into(),
        s if s >= 2 * 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s => format!("{}m", (s / 60).max(1)),
    }
}
