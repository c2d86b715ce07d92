//! `store` and `etcd`: the write load of `load.rs` against the replicated
//! store (a 3-node loopback cluster of its own unless `--cluster` names
//! one), and against etcd, so the two can be read side by side.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_testkit::{Cluster, ClusterOpts};

use crate::etcd;
use crate::load::{check_load, drive, LoadArgs, Report, Sut, Writer};
use crate::setup::channel;
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// API addresses of an existing cluster (comma-separated); its members'
    /// admin addresses are read from the cluster status.
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Where the local cluster keeps its data (a temp dir inside it, removed
    /// at the end). Must be a real disk for fsync to mean anything.
    #[arg(long)]
    pub data_root: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct EtcdArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// etcd client URLs or host:port (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
}

pub async fn store(a: StoreArgs, g: &Global) -> Result<Report> {
    check_load(&a.load)?;
    // Owned here so that it dies when this function returns or is dropped.
    let mut local = None;
    let seeds = if a.cluster.is_empty() {
        eprintln!("starting a 3-node loopback cluster (fsync on) ...");
        let c = Cluster::try_start(3, ClusterOpts::bench(a.data_root.as_deref())).await?;
        eprintln!("cluster ready, data in {}", c.dir().display());
        let seeds = c.api_addrs();
        local = Some(c);
        seeds
    } else {
        a.cluster.clone()
    };
    let sut = meridian_sut(&seeds, g.timeout).await?;
    let report = drive("meridian", &sut, &a.load, g.timeout, |ch| {
        Writer::Meridian(ConfigServiceClient::new(ch))
    })
    .await;
    drop(local);
    report
}

/// Members, leader and the leader's admin address, from the cluster status.
pub(crate) async fn meridian_sut(seeds: &[String], timeout: Duration) -> Result<Sut> {
    let mut last = None;
    for seed in seeds {
        let ch = match channel(seed, timeout).await {
            Ok(ch) => ch,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let st = match ClusterServiceClient::new(ch)
            .get_cluster_status(pb::ClusterStatusRequest {})
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => {
                last = Some(anyhow::anyhow!("{seed}: {}", e.message()));
                continue;
            }
        };
        let mut voters: Vec<pb::NodeInfo> = st
            .members
            .into_iter()
            .filter(|m| m.voter)
            .filter_map(|m| m.node)
            .collect();
        voters.sort_by_key(|n| n.id);
        let Some(leader_index) = voters.iter().position(|n| n.id == st.leader_id) else {
            bail!("the cluster has no leader among its voters; try again once it has one");
        };
        let leader = &voters[leader_index];
        let leader_metrics = (!leader.admin_addr.is_empty())
            .then(|| (leader.admin_addr.clone(), "meridian_raft_proposals_total"));
        return Ok(Sut {
            system: "meridian",
            leader: format!("node {} ({})", leader.id, leader.api_addr),
            nodes: voters.iter().map(|n| n.api_addr.clone()).collect(),
            leader_index,
            leader_metrics,
        });
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no --cluster address given")))
        .context("reading the cluster status")
}

pub async fn etcd_bench(a: EtcdArgs, g: &Global) -> Result<Report> {
    check_load(&a.load)?;
    let mut members = Vec::new();
    for ep in &a.endpoints {
        let ch = channel(ep, g.timeout).await?;
        let st = etcd::status(ch)
            .await
            .map_err(|e| anyhow::anyhow!("{ep}: Maintenance.Status: {}", e.message()))?;
        let id = st.header.map(|h| h.member_id).unwrap_or(0);
        members.push((
            ep.trim().trim_start_matches("http://").to_string(),
            id,
            st.leader,
        ));
    }
    let Some(leader_index) = members.iter().position(|(_, id, leader)| id == leader) else {
        bail!("none of --endpoints is the etcd leader; name every member");
    };
    let leader_ep = members[leader_index].0.clone();
    let sut = Sut {
        system: "etcd",
        leader: format!("member {:x} ({leader_ep})", members[leader_index].1),
        nodes: members.iter().map(|m| m.0.clone()).collect(),
        leader_index,
        // etcd serves /metrics on its client port; one WAL fsync per raft
        // Ready is its unit of batching, as a proposal batch is ours.
        leader_metrics: Some((leader_ep, "etcd_disk_wal_fsync_duration_seconds_count")),
    };
    drive("etcd", &sut, &a.load, g.timeout, |ch| {
        Writer::Etcd(etcd::KvClient::new(ch))
    })
    .await
}

