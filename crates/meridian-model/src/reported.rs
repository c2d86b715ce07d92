//! What federation agents report, as the store keeps it: not operator
//! config, but part of the replicated state and of snapshots. The stored
//! forms live here so the controller that writes them and the translation
//! that reads them agree, with no I/O.
//!
//! Keys (store kind / name):
//! - `claim/<cluster>`: the agent session that owns the cluster; rewritten
//!   only when a new session says hello (the newest session wins).
//! - `lease/<cluster>`: renewed through the log while the agent is alive;
//!   `expired` is set, once, by the leader through the log.
//! - `endpoints/<cluster>.<service>`: the cluster's endpoints of one service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ConfigSet, Endpoint, EndpointSet, Health, LeaseExpiry};

pub const KIND_CLAIM: &str = "claim";
pub const KIND_LEASE: &str = "lease";
pub const KIND_ENDPOINTS: &str = "endpoints";

/// Name of the `endpoints` object of one cluster's service.
pub fn endpoints_name(cluster: &str, service: &str) -> String {
    format!("{cluster}.{service}")
}

/// The (cluster, service) of an `endpoints` object name.
pub fn split_endpoints_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('.')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub session: String,
    /// Free text from the agent (host, version).
    pub agent: String,
    /// The controller node the session connected to.
    pub controller: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub session: String,
    pub ttl_ms: u64,
    pub on_expiry: LeaseExpiry,
    pub expired: bool,
    pub controller: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReportedHealth {
    Healthy,
    Unhealthy,
    Draining,
    Unknown,
}

impl From<ReportedHealth> for Health {
    fn from(h: ReportedHealth) -> Health {
        match h {
            ReportedHealth::Healthy => Health::Healthy,
            ReportedHealth::Unhealthy => Health::Unhealthy,
            ReportedHealth::Draining => Health::Draining,
            ReportedHealth::Unknown => Health::Unknown,
        }
    }
}

/// One endpoint of one service in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedEndpoint {
    pub address: String,
    /// 0: the Service's port.
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    pub weight: u32,
    pub health: ReportedHealth,
}

/// Builds the endpoint set translation uses: the Services' static endpoints
/// plus every registered cluster's reports, in the cluster's region. A
/// cluster whose lease expired with the `drop` policy contributes nothing;
/// reports of unregistered clusters are ignored.
pub fn endpoint_set(
    config: &ConfigSet,
    leases: &BTreeMap<String, Lease>,
    reports: &BTreeMap<(String, String), Vec<ReportedEndpoint>>,
) -> EndpointSet {
    let mut set = config.static_endpoints();
    for ((cluster, service), eps) in reports {
        let Some(spec) = config.cluster(cluster) else { continue };
        if let Some(lease) = leases.get(cluster) {
            if lease.expired && lease.on_expiry == LeaseExpiry::Drop {
                continue;
            }
        }
        for e in eps {
            set.insert(Endpoint {
                service: service.clone(),
                cluster: cluster.clone(),
                region: spec.region.clone(),
                zone: if e.zone.is_empty() { spec.zone.clone() } else { e.zone.clone() },
                address: e.address.clone(),
                port: e.port,
                weight: e.weight.max(1),
                health: e.health.into(),
            });
        }
    }
    set
}
