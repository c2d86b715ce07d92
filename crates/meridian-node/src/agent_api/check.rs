//! Checks of what an agent reports: each endpoint, and the agent itself.

use meridian_model::reported::{ReportedEndpoint, ReportedHealth};
use meridian_model::{ClusterSpec, Kind, Object, Spec};
use meridian_proto::v1 as pb;
use meridian_store::{ObjectKey, StateMachineStore};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Checks one reported endpoint; the error names the field.
pub(super) fn check_endpoint(
    path: &str,
    e: &pb::AgentEndpoint,
) -> Result<(String, ReportedEndpoint), String> {
    meridian_model::validate_name(&e.service).map_err(|r| format!("{path}.service: {r}"))?;
    if e.address.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{path}.address: {:?} is not an IP address",
            e.address
        ));
    }
    if e.port > 65535 {
        return Err(format!("{path}.port: {} is over 65535", e.port));
    }
    if e.weight > 128 {
        return Err(format!("{path}.weight: {} is over 128", e.weight));
    }
    if e.zone.len() > 63 {
        return Err(format!("{path}.zone: at most 63 characters"));
    }
    let health = match pb::EndpointHealth::try_from(e.health) {
        Ok(pb::EndpointHealth::Healthy) => ReportedHealth::Healthy,
        Ok(pb::EndpointHealth::Unhealthy) => ReportedHealth::Unhealthy,
        Ok(pb::EndpointHealth::Draining) => ReportedHealth::Draining,
        Ok(pb::EndpointHealth::Unknown) => ReportedHealth::Unknown,
        Err(_) => return Err(format!("{path}.health: unknown value {}", e.health)),
    };
    Ok((
        e.service.clone(),
        ReportedEndpoint {
            address: e.address.clone(),
            port: e.port as u16,
            zone: e.zone.clone(),
            weight: e.weight.max(1),
            health,
        },
    ))
}

/// The registered cluster, if the token matches; errors say what to do.
pub(super) fn authenticate(
    sm: &StateMachineStore,
    hello: &pb::AgentHello,
) -> Result<ClusterSpec, ApiError> {
    meridian_model::validate_name(&hello.cluster)
        .map_err(|r| ApiError::Invalid(format!("hello.cluster: {r}")))?;
    if hello.session.is_empty() || hello.session.len() > 128 {
        return Err(ApiError::Invalid("hello.session: 1-128 characters".into()));
    }
    let key = ObjectKey::new(Kind::Cluster.as_str(), hello.cluster.clone());
    let stored = sm.get(&key).ok_or_else(|| {
        ApiError::PermissionDenied(format!(
            "cluster {:?} is not registered; register it with `meridian clusters add {} --region {}`",
            hello.cluster, hello.cluster, hello.region
        ))
    })?;
    let spec = match Object::from_stored(&key.kind, &key.name, &stored.value) {
        Ok(Object {
            spec: Spec::Cluster(c),
            ..
        }) => c,
        _ => {
            return Err(ApiError::Internal(format!(
                "cluster/{}: stored object does not parse",
                hello.cluster
            )))
        }
    };
    let digest = hex::encode(Sha256::digest(hello.token.as_bytes()));
    // Compare all bytes: the time taken must not tell how much matched.
    let same = digest.len() == spec.token_sha256.len()
        && digest
            .bytes()
            .zip(spec.token_sha256.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(ApiError::Unauthenticated(format!(
            "wrong token for cluster {:?}: this agent may not write its endpoints",
            hello.cluster
        )));
    }
    if spec.region != hello.region {
        return Err(ApiError::Invalid(format!(
            "hello.region: cluster {:?} is registered in region {:?}, the agent says {:?}",
            hello.cluster, spec.region, hello.region
        )));
    }
    Ok(spec)
}
