//! The one place where the agent's endpoint model meets the wire types.

use meridian_proto::v1::{AgentEndpoint, EndpointHealth, EndpointUpdate};

use crate::endpoints::{Diff, EndpointKey, EndpointMap, EndpointState, Health};

fn health(h: Health) -> EndpointHealth {
    match h {
        Health::Healthy => EndpointHealth::Healthy,
        Health::Unhealthy => EndpointHealth::Unhealthy,
        Health::Draining => EndpointHealth::Draining,
        Health::Unknown => EndpointHealth::Unknown,
    }
}

pub fn upsert(key: &EndpointKey, state: &EndpointState) -> AgentEndpoint {
    AgentEndpoint {
        service: key.service.clone(),
        address: key.address.clone(),
        port: u32::from(key.port),
        zone: state.zone.clone(),
        weight: state.weight,
        health: health(state.health) as i32,
    }
}

/// A removal names only service, address and port.
pub fn removal(key: &EndpointKey) -> AgentEndpoint {
    AgentEndpoint {
        service: key.service.clone(),
        address: key.address.clone(),
        port: u32::from(key.port),
        ..AgentEndpoint::default()
    }
}

/// `replace: true` with the whole set.
pub fn full_update(version: u64, set: &EndpointMap) -> EndpointUpdate {
    EndpointUpdate {
        version,
        replace: true,
        upserts: set.iter().map(|(k, v)| upsert(k, v)).collect(),
        removals: Vec::new(),
    }
}

pub fn delta_update(version: u64, diff: &Diff) -> EndpointUpdate {
    EndpointUpdate {
        version,
        replace: false,
        upserts: diff.upserts.iter().map(|(k, v)| upsert(k, v)).collect(),
        removals: diff.removals.iter().map(removal).collect(),
    }
}
