use serde::{Deserialize, Serialize};

use super::{check_duration, check_ref_name};
use crate::{error::Errors, Duration};

/// A cluster (Kubernetes cluster or group of VMs) whose agent may report
/// endpoints. Its agent proves itself with a token whose SHA-256 is stored
/// here; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The region the cluster's endpoints are in.
    pub region: String,
    /// Default zone of the cluster's endpoints.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Lowercase hex SHA-256 of the agent's token (`meridian clusters add` makes both).
    pub token_sha256: String,
    /// How long the cluster's endpoints outlive their agent's silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<Duration>,
    /// What happens to the endpoints when the lease expires.
    #[serde(default)]
    pub on_lease_expiry: LeaseExpiry,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeaseExpiry {
    /// Mark the endpoints unhealthy: Envoys stop sending to them at once.
    #[default]
    Drop,
    /// Keep the last known endpoints and health (for clusters whose agent
    /// may be cut off while the workloads keep running).
    Keep,
}

impl ClusterSpec {
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(Self::DEFAULT_LEASE_TTL)
    }

    pub(crate) fn validate(&self, errs: &mut Errors<'_>) {
        check_ref_name(errs, "region", &self.region);
        if !self.zone.is_empty() && self.zone.len() > 63 {
            errs.push("zone", "at most 63 characters");
        }
        let hex = self.token_sha256.len() == 64
            && self.token_sha256.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !hex {
            errs.push("tokenSha256", "must be 64 lowercase hex digits (the SHA-256 of the agent token)");
        }
        check_duration(errs, "leaseTtl", self.lease_ttl, 5_000, 600_000);
    }
}
