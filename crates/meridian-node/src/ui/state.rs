//! What the status page shows, built from the answers of the cluster and
//! config APIs: pure, so the admin listener (in process) and `meridian ui`
//! (over the authenticated API) show the same thing from the same answers.
//! This file is long because the page has eight sections, each with its
//! own small view type and builder; splitting them would scatter one page.

use std::collections::{BTreeMap, BTreeSet};

use meridian_model::reported::{
    split_endpoints_name, Claim, Lease, ReportedEndpoint, ReportedHealth,
};
use meridian_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// The answers one refresh of the page is built from. A part that failed
/// carries the error's message, which the page shows next to what it has.
#[derive(Debug, Default)]
pub struct Parts {
    pub cluster: Option<Result<pb::ClusterStatusResponse, String>>,
    pub proxies: Option<Result<pb::ProxyStatusResponse, String>>,
    pub history: Option<Result<pb::HistoryResponse, String>>,
    pub objects: Option<Result<Objects, String>>,
    pub rollouts: Option<Result<pb::ListRolloutsResponse, String>>,
}

/// The listed objects the page reads: only these kinds, so that no other
/// kind's fields (a secret's key, a cluster's token digest) can reach it.
#[derive(Debug, Default)]
pub struct Objects {
    pub regions: Vec<pb::Object>,
    pub clusters: Vec<pb::Object>,
    pub claims: Vec<pb::Object>,
    pub leases: Vec<pb::Object>,
    pub endpoints: Vec<pb::Object>,
}

/// One rollout, step by step (the rollouts' own source fills these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub name: String,
    pub policy: String,
    pub state: String,
    /// Index into `steps` of the current step.
    pub step: u32,
    pub steps: Vec<RolloutStep>,
    pub started_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStep {
    /// Regions or proxy-group sets of the step.
    pub targets: Vec<String>,
    pub state: String,
}

#[derive(Debug, Serialize)]
pub struct UiState {
    pub generated_unix_ms: u64,
    pub answered_by: u64,
    pub leader_id: u64,
    pub term: u64,
    /// The newest revision any controller reported.
    pub revision: u64,
    pub regions: Vec<RegionView>,
    pub controllers: Vec<ControllerView>,
    pub clusters: Vec<ClusterView>,
    pub envoys: Vec<EnvoyView>,
    /// Newest first.
    pub history: Vec<RevisionView>,
    /// Changes after this revision are retained (0: nothing compacted).
    pub oldest_revision: u64,
    pub rollouts: Vec<Rollout>,
    /// Parts that could not be read, and controllers that did not answer.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RegionView {
    pub name: String,
    /// A `region` object exists for it (else it is only named by a node,
    /// cluster or Envoy).
    pub configured: bool,
    pub controllers: usize,
    pub controllers_ready: usize,
    pub has_leader: bool,
    pub clusters: usize,
    pub envoys: usize,
    pub envoys_synced: usize,
    pub envoys_nacked: usize,
}

#[derive(Debug, Serialize)]
pub struct ControllerView {
    pub id: u64,
    pub region: String,
    pub api_addr: String,
    pub voter: bool,
    /// Empty when the node did not answer.
    pub role: String,
    pub ready: bool,
    pub not_ready_reason: String,
    pub applied_index: u64,
    pub commit_index: u64,
    /// Entries behind the leader, as the leader sees it.
    pub lag: Option<u64>,
    pub revision: u64,
    /// Earliest notAfter of the node's certificates; `None` without TLS.
    pub cert_not_after_unix: Option<i64>,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub region: String,
    pub agent: Option<String>,
    pub controller: Option<u64>,
    /// active | expired | none
    pub lease: &'static str,
    pub lease_renewed_unix_ms: Option<u64>,
    pub endpoints: usize,
    pub healthy: usize,
}

#[derive(Debug, Serialize)]
pub struct EnvoyView {
    pub node_id: String,
    pub region: String,
    pub proxy_group: String,
    pub controller_id: u64,
    pub controller_region: String,
    pub variant: String,
    pub view_revision: u64,
    /// The worst of its types: NACKED, STALE, NOT_SENT, else SYNCED.
    pub state: &'static str,
    pub types: Vec<TypeView>,
    pub nacks: Vec<NackView>,
    pub connected_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct TypeView {
    pub r#type: String,
    pub state: String,
    pub acked_version: String,
    pub resources: u64,
}

#[derive(Debug, Serialize)]
pub struct NackView {
    pub r#type: String,
    pub message: String,
    pub resources: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RevisionView {
    pub revision: u64,
    pub updated_at_ms: u64,
    pub changes: Vec<ChangeView>,
}

#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub kind: String,
    pub name: String,
    /// created | updated | deleted
    pub action: String,
}

/// One revision's changes with a unified diff of each object.
#[derive(Debug, Serialize)]
pub struct RevisionDiff {
    pub revision: u64,
    pub updated_at_ms: u64,
    pub changes: Vec<ChangeDiff>,
}

#[derive(Debug, Serialize)]
pub struct ChangeDiff {
    pub kind: String,
    pub name: String,
    pub action: String,
    pub diff: String,
}

/// Revisions the page lists.
pub const HISTORY_REVISIONS: usize = 20;

fn key_of(e: &pb::HistoryEntry) -> (String, String) {
    e.key
        .as_ref()
        .map(|k| (k.kind.clone(), k.name.clone()))
        .unwrap_or_default()
}

/// Builds the page's state; `now_unix_ms` is passed in so tests are exact.
pub fn build(parts: Parts, now_unix_ms: u64) -> UiState {
    let mut errors = Vec::new();
    fn take<T>(errors: &mut Vec<String>, what: &str, r: Option<Result<T, String>>) -> Option<T> {
        match r {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                errors.push(format!("{what}: {e}"));
                None
            }
            None => None,
        }
    }
    let cluster = take(&mut errors, "cluster status", parts.cluster);
    let proxies = take(&mut errors, "proxy status", parts.proxies);
    let history = take(&mut errors, "history", parts.history);
    let objects = take(&mut errors, "objects", parts.objects).unwrap_or_default();
    let rollouts = take(&mut errors, "rollouts", parts.rollouts)
        .map(|r| r.rollouts.iter().map(rollout).collect())
        .unwrap_or_default();

    let controllers = cluster.as_ref().map(controllers).unwrap_or_default();
    for c in controllers.iter().filter(|c| !c.error.is_empty()) {
        errors.push(format!("node {}: {}", c.id, c.error));
    }
    let envoys: Vec<EnvoyView> = proxies
        .as_ref()
        .map(|p| {
            errors.extend(p.errors.iter().cloned());
            p.proxies.iter().map(envoy).collect()
        })
        .unwrap_or_default();
    let clusters = clusters(&objects);
    let configured: BTreeSet<String> = objects.regions.iter().map(|o| o.name.clone()).collect();
    let regions = regions(&configured, &controllers, &clusters, &envoys);
    let (history, oldest_revision, history_revision) = match &history {
        Some(h) => (revisions(h), h.oldest_revision, h.revision),
        None => (Vec::new(), 0, 0),
    };
    let revision = controllers
        .iter()
        .map(|c| c.revision)
        .chain([history_revision])
        .max()
        .unwrap_or(0);
    UiState {
        generated_unix_ms: now_unix_ms,
        answered_by: cluster.as_ref().map_or(0, |c| c.answered_by),
        leader_id: cluster.as_ref().map_or(0, |c| c.leader_id),
        term: cluster.as_ref().map_or(0, |c| c.term),
        revision,
        regions,
        controllers,
        clusters,
        envoys,
        history,
        oldest_revision,
        rollouts,
        errors,
    }
}

/// A rollout as the page shows it: each step done, current (in the run's
/// state) or pending; a step names its regions and `group/NAME`s.
fn rollout(r: &pb::Rollout) -> Rollout {
    let current = r.step as usize;
    let finished = matches!(r.state.as_str(), "complete");
    Rollout {
        name: r.id.clone(),
        policy: r.policy.clone(),
        state: r.state.clone(),
        step: r.step,
        steps: r
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| RolloutStep {
                targets: s
                    .regions
                    .iter()
                    .cloned()
                    .chain(s.proxy_groups.iter().map(|g| format!("group/{g}")))
                    .collect(),
                state: if i < current || finished {
                    "done".into()
                } else if i == current {
                    r.state.clone()
                } else {
                    "pending".into()
                },
            })
            .collect(),
        started_unix_ms: r.started_at_ms,
    }
}

fn controllers(c: &pb::ClusterStatusResponse) -> Vec<ControllerView> {
    let leader_lag = c
        .members
        .iter()
        .filter_map(|m| m.status.as_ref())
        .find(|s| s.role == "leader")
        .map(|s| s.replication_lag.clone())
        .unwrap_or_default();
    let mut out: Vec<ControllerView> = c
        .members
        .iter()
        .map(|m| {
            let node = m.node.clone().unwrap_or_default();
            let s = m.status.clone().unwrap_or_default();
            let lag = if s.role == "leader" {
                Some(0)
            } else {
                leader_lag.get(&node.id).copied()
            };
            ControllerView {
                id: node.id,
                region: node.region,
                api_addr: node.api_addr,
                voter: m.voter,
                role: s.role,
                ready: s.ready,
                not_ready_reason: s.not_ready_reason,
                applied_index: s.applied_index,
                commit_index: s.commit_index,
                lag,
                revision: s.revision,
                cert_not_after_unix: s.certificates.iter().map(|c| c.not_after_unix).min(),
                error: m.error.clone(),
            }
        })
        .collect();
    out.sort_by_key(|c| c.id);
    out
}

fn envoy(p: &pb::ProxyInfo) -> EnvoyView {
    let rank = |s: &str| match s {
        "NACKED" => 3,
        "STALE" => 2,
        "NOT_SENT" => 1,
        _ => 0,
    };
    let worst = p.types.iter().map(|t| rank(&t.state)).max().unwrap_or(1);
    EnvoyView {
        node_id: p.node_id.clone(),
        region: p.region.clone(),
        proxy_group: p.proxy_group.clone(),
        controller_id: p.controller_id,
        controller_region: p.controller_region.clone(),
        variant: p.variant.clone(),
        view_revision: p.view_revision,
        state: ["SYNCED", "NOT_SENT", "STALE", "NACKED"][worst],
        types: p
            .types
            .iter()
            .map(|t| TypeView {
                r#type: t.r#type.clone(),
                state: t.state.clone(),
                acked_version: t.acked_version.clone(),
                resources: t.resources,
            })
            .collect(),
        nacks: p
            .types
            .iter()
            .filter(|t| t.state == "NACKED")
            .map(|t| NackView {
                r#type: t.r#type.clone(),
                message: t.nack_message.clone(),
                resources: t.nack_resources.clone(),
            })
            .collect(),
        connected_ms: p.connected_ms,
    }
}

fn clusters(o: &Objects) -> Vec<ClusterView> {
    fn decode<T: serde::de::DeserializeOwned>(list: &[pb::Object]) -> BTreeMap<String, (T, u64)> {
        list.iter()
            .filter_map(|o| {
                Some((
                    o.name.clone(),
                    (serde_json::from_slice(&o.value).ok()?, o.updated_at_ms),
                ))
            })
            .collect()
    }
    let claims: BTreeMap<String, (Claim, u64)> = decode(&o.claims);
    let leases: BTreeMap<String, (Lease, u64)> = decode(&o.leases);
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in &o.endpoints {
        let Some((cluster, _)) = split_endpoints_name(&e.name) else {
            continue;
        };
        let eps: Vec<ReportedEndpoint> = serde_json::from_slice(&e.value).unwrap_or_default();
        let c = counts.entry(cluster).or_default();
        c.0 += eps.len();
        c.1 += eps
            .iter()
            .filter(|e| e.health == ReportedHealth::Healthy)
            .count();
    }
    o.clusters
        .iter()
        .map(|c| {
            // Only the region: the spec also holds the agent token's digest.
            let region = serde_json::from_slice::<serde_json::Value>(&c.value)
                .ok()
                .and_then(|v| v["region"].as_str().map(String::from))
                .unwrap_or_default();
            let lease = leases.get(&c.name);
            let (endpoints, healthy) = counts.get(c.name.as_str()).copied().unwrap_or_default();
            ClusterView {
                name: c.name.clone(),
                region,
                agent: claims.get(&c.name).map(|(c, _)| c.agent.clone()),
                controller: lease.map(|(l, _)| l.controller),
                lease: match lease {
                    None => "none",
                    Some((l, _)) if l.expired => "expired",
                    Some(_) => "active",
                },
                lease_renewed_unix_ms: lease.map(|(_, at)| *at),
                endpoints,
                healthy,
            }
        })
        .collect()
}

fn regions(
    configured: &BTreeSet<String>,
    controllers: &[ControllerView],
    clusters: &[ClusterView],
    envoys: &[EnvoyView],
) -> Vec<RegionView> {
    let names: BTreeSet<&str> = configured
        .iter()
        .map(String::as_str)
        .chain(controllers.iter().map(|c| c.region.as_str()))
        .chain(clusters.iter().map(|c| c.region.as_str()))
        .chain(envoys.iter().map(|e| e.region.as_str()))
        .filter(|r| !r.is_empty())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let ctl: Vec<&ControllerView> =
                controllers.iter().filter(|c| c.region == name).collect();
            let env: Vec<&EnvoyView> = envoys.iter().filter(|e| e.region == name).collect();
            RegionView {
                name: name.to_string(),
                configured: configured.contains(name),
                controllers: ctl.len(),
                controllers_ready: ctl.iter().filter(|c| c.ready).count(),
                has_leader: ctl.iter().any(|c| c.role == "leader"),
                clusters: clusters.iter().filter(|c| c.region == name).count(),
                envoys: env.len(),
                envoys_synced: env.iter().filter(|e| e.state == "SYNCED").count(),
                envoys_nacked: env.iter().filter(|e| e.state == "NACKED").count(),
            }
        })
        .collect()
}

fn revisions(h: &pb::HistoryResponse) -> Vec<RevisionView> {
    let mut out: Vec<RevisionView> = Vec::new();
    for e in &h.entries {
        let (kind, name) = key_of(e);
        let change = ChangeView {
            kind,
            name,
            action: e.action.clone(),
        };
        match out.last_mut() {
            Some(r) if r.revision == e.revision => {
                r.changes.push(change);
                continue;
            }
            _ => {}
        }
        if out.len() == HISTORY_REVISIONS {
            break;
        }
        out.push(RevisionView {
            revision: e.revision,
            updated_at_ms: e.updated_at_ms,
            changes: vec![change],
        });
    }
    out
}

/// The changes of `revision` with a diff of each object (values as the
/// history gives them: secrets already redacted); `None` when the history
/// no longer holds it.
pub fn revision_diff(h: &pb::HistoryResponse, revision: u64) -> Option<RevisionDiff> {
    let entries: Vec<&pb::HistoryEntry> = h
        .entries
        .iter()
        .filter(|e| e.revision == revision)
        .collect();
    let first = entries.first()?;
    let pretty = |v: &[u8]| -> String {
        if v.is_empty() {
            return String::new();
        }
        match serde_json::from_slice::<serde_json::Value>(v) {
            Ok(j) => serde_json::to_string_pretty(&j).unwrap_or_default() + "\n",
            Err(_) => String::from_utf8_lossy(v).into_owned() + "\n",
        }
    };
    let changes = entries
        .iter()
        .map(|e| {
            let (kind, name) = key_of(e);
            let (old, new) = (pretty(&e.prev_value), pretty(&e.value));
            let diff = similar::TextDiff::from_lines(&old, &new)
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("{kind}/{name} (before)"),
                    &format!("{kind}/{name} @ {revision}"),
                )
                .to_string();
            ChangeDiff {
                kind,
                name,
                action: e.action.clone(),
                diff,
            }
        })
        .collect();
    Some(RevisionDiff {
        revision,
        updated_at_ms: first.updated_at_ms,
        changes,
    })
}

#[cfg(test)]
mod tests;
