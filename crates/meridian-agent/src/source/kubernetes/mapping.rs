//! From EndpointSlices to Meridian endpoints: plain functions over
//! k8s-openapi types, so they are tested on recorded API responses.
//! The rules are in crates/meridian-agent/KUBERNETES.md.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::endpoints::{EndpointKey, EndpointMap, EndpointState, Health};

/// Annotation or label naming the Meridian Service of a slice.
pub const SERVICE_ANNOTATION: &str = "meridian.io/service";
/// Annotation or label naming the port (by its name) to report.
pub const PORT_ANNOTATION: &str = "meridian.io/port";
/// Label the EndpointSlice controller sets to the owning Service's name.
pub const K8S_SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Why a slice contributes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No `kubernetes.io/service-name` label and no `meridian.io/service`.
    NoService,
    /// `FQDN` slices: Envoy's EDS takes IP addresses only.
    AddressType(String),
    /// `meridian.io/port` names a port the slice does not have.
    NoSuchPort(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NoService => write!(
                f,
                "no {K8S_SERVICE_LABEL} label and no {SERVICE_ANNOTATION} annotation"
            ),
            Skip::AddressType(t) => write!(f, "address type {t} is not an IP family"),
            Skip::NoSuchPort(p) => write!(f, "{PORT_ANNOTATION}: no port named {p:?} in the slice"),
        }
    }
}

/// `meridian.io/...` from the slice's annotations, else its labels (the
/// EndpointSlice controller copies a Service's labels onto its slices).
fn setting<'a>(slice: &'a EndpointSlice, key: &str) -> Option<&'a str> {
    let m = &slice.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(key)))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// The Meridian Service a slice belongs to.
pub fn service_name(slice: &EndpointSlice) -> Option<&str> {
    setting(slice, SERVICE_ANNOTATION).or_else(|| {
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(K8S_SERVICE_LABEL))
            .map(String::as_str)
    })
}

/// The port to report: the one `meridian.io/port` names, else the first;
/// 0 ("the Service's port") when the slice lists none or the port is unset.
pub fn port(slice: &EndpointSlice) -> Result<u16, Skip> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let chosen = match setting(slice, PORT_ANNOTATION) {
        Some(name) => Some(
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .ok_or_else(|| Skip::NoSuchPort(name.to_string()))?,
        ),
        None => ports.first(),
    };
    Ok(chosen
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0))
}

/// Conditions to health: terminating is DRAINING whatever `ready` says;
/// else ready (nil means true) is HEALTHY and not ready is UNHEALTHY.
pub fn health(endpoint: &Endpoint) -> Health {
    let c = endpoint.conditions.as_ref();
    if c.and_then(|c| c.terminating).unwrap_or(false) {
        Health::Draining
    } else if c.and_then(|c| c.ready).unwrap_or(true) {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

/// The endpoints one slice contributes.
pub fn slice_endpoints(slice: &EndpointSlice) -> Result<Vec<(EndpointKey, EndpointState)>, Skip> {
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        return Err(Skip::AddressType(slice.address_type.clone()));
    }
    let service = service_name(slice).ok_or(Skip::NoService)?;
    let port = port(slice)?;
    let mut out = Vec::new();
    for ep in &slice.endpoints {
        let state = EndpointState {
            zone: ep.zone.clone().unwrap_or_default(),
            weight: 1,
            health: health(ep),
        };
        for addr in &ep.addresses {
            // Canonical text, so `fd00:0::1` and `fd00::1` are one endpoint.
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue;
            };
            let key = EndpointKey {
                service: service.to_string(),
                address: ip.to_string(),
                port,
            };
            out.push((key, state.clone()));
        }
    }
    Ok(out)
}

/// Rank used when two slices list the same endpoint (a Service's slices are
/// being rebalanced): the most available report wins.
fn rank(h: Health) -> u8 {
    match h {
        Health::Healthy => 3,
        Health::Draining => 2,
        Health::Unhealthy => 1,
        Health::Unknown => 0,
    }
}

/// The union of many slices' endpoints.
pub fn merge<'a>(
    parts: impl IntoIterator<Item = &'a Vec<(EndpointKey, EndpointState)>>,
) -> EndpointMap {
    let mut out = EndpointMap::new();
    for (k, v) in parts.into_iter().flatten() {
        match out.get(k) {
            Some(have) if rank(have.health) >= rank(v.health) => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The endpoints of a set of slices, for recorded lists and tests.
pub fn endpoints_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> EndpointMap {
    let parts: Vec<_> = slices
        .into_iter()
        .filter_map(|s| slice_endpoints(s).ok())
        .collect();
    merge(&parts)
}

/// Slice identity in the store: namespace and name.
pub type SliceId = (String, String);

pub fn slice_id(slice: &EndpointSlice) -> SliceId {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

/// The slices seen so far, fed from watcher events; the set is published
/// only once a complete list has been seen (`init_done`).
#[derive(Debug, Default)]
pub struct SliceStore {
    slices: BTreeMap<SliceId, Vec<(EndpointKey, EndpointState)>>,
    /// Buffer of a re-list in progress, swapped in at `init_done`.
    relist: Option<BTreeMap<SliceId, Vec<(EndpointKey, EndpointState)>>>,
    synced: bool,
}

impl SliceStore {
    pub fn apply(&mut self, slice: &EndpointSlice) {
        let target = self.relist.as_mut().unwrap_or(&mut self.slices);
        match slice_endpoints(slice) {
            Ok(eps) => {
                target.insert(slice_id(slice), eps);
            }
            Err(skip) => {
                target.remove(&slice_id(slice));
                tracing::debug!(slice = ?slice_id(slice), reason = %skip, "endpoint slice skipped");
            }
        }
    }

    pub fn delete(&mut self, slice: &EndpointSlice) {
        self.slices.remove(&slice_id(slice));
    }

    pub fn init(&mut self) {
        self.relist = Some(BTreeMap::new());
    }

    pub fn init_done(&mut self) {
        if let Some(fresh) = self.relist.take() {
            self.slices = fresh;
        }
        self.synced = true;
    }

    /// The current set, once a full list has been seen.
    pub fn endpoints(&self) -> Option<EndpointMap> {
        self.synced.then(|| merge(self.slices.values()))
    }
}
