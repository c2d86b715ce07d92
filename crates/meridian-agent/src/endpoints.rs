//! The agent's endpoint model: a set keyed by (service, address, port), and
//! the diff between two sets that becomes a delta update.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Health of one endpoint as the agent reports it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
    Draining,
    Unknown,
}

/// What identifies an endpoint on the wire: removals name only these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub service: String,
    /// An IP address (v4 or v6).
    pub address: String,
    /// 0 means "the Service's port".
    pub port: u16,
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.address.contains(':') {
            write!(f, "{}/[{}]:{}", self.service, self.address, self.port)
        } else {
            write!(f, "{}/{}:{}", self.service, self.address, self.port)
        }
    }
}

/// Everything else the agent knows about an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointState {
    /// Empty: the agent's zone.
    pub zone: String,
    /// 1-128; 0 means 1.
    pub weight: u32,
    pub health: Health,
}

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            zone: String::new(),
            weight: 1,
            health: Health::Healthy,
        }
    }
}

/// A full endpoint set, ordered so updates are deterministic.
pub type EndpointMap = BTreeMap<EndpointKey, EndpointState>;

/// What turns `old` into `new`: endpoints to add or change, endpoints to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub upserts: Vec<(EndpointKey, EndpointState)>,
    pub removals: Vec<EndpointKey>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// The delta from `old` to `new`, both sides sorted by key.
pub fn diff(old: &EndpointMap, new: &EndpointMap) -> Diff {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let removals = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    Diff { upserts, removals }
}

/// Applies a diff; `apply(old, diff(old, new)) == new`.
pub fn apply(base: &EndpointMap, diff: &Diff) -> EndpointMap {
    let mut out = base.clone();
    for k in &diff.removals {
        out.remove(k);
    }
    for (k, v) in &diff.upserts {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Counts by health, for status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub healthy: usize,
    pub unhealthy: usize,
    pub draining: usize,
}

pub fn counts(set: &EndpointMap) -> Counts {
    let mut c = Counts {
        total: set.len(),
        ..Counts::default()
    };
    for s in set.values() {
        match s.health {
            Health::Healthy => c.healthy += 1,
            Health::Unhealthy => c.unhealthy += 1,
            Health::Draining => c.draining += 1,
            Health::Unknown => {}
        }
    }
    c
}

#[cfg(test)]
mod tests;
