//! The spec of each kind of object. Field names are camelCase in files;
//! unknown fields are errors. Defaults that translation applies are
//! constants here so MODEL.md, translation and tests agree.

mod listener;
mod cluster;
mod region;
mod route;
mod secret;
mod service;

pub use listener::{ListenerProtocol, ListenerSpec, Tls};
pub use cluster::{ClusterSpec, LeaseExpiry};
pub use region::RegionSpec;
pub use route::{
    Backend, Backoff, DirectResponse, HeaderMatch, HeaderOps, HeaderValue, Match, Mirror,
    PathMatch, QueryMatch, Redirect, Retries, Rewrite, RouteSpec, Rule,
};
pub use secret::{PrivateKeyPem, SecretSpec};
pub use service::{
    StaticEndpoint,
    CircuitBreakers, Failover, HealthCheck, HealthCheckProtocol, LoadBalancing, OutlierDetection,
    OutlierSettings,
    Protocol, ServiceSpec,
};

use crate::error::Errors;

pub(crate) fn check_range(errs: &mut Errors<'_>, path: &str, v: u64, lo: u64, hi: u64) {
    if v < lo || v > hi {
        errs.push(path, format!("must be between {lo} and {hi}"));
    }
}

pub(crate) fn check_duration(
    errs: &mut Errors<'_>,
    path: &str,
    d: Option<crate::Duration>,
    lo_ms: u64,
    hi_ms: u64,
) {
    if let Some(d) = d {
        let ms = d.as_millis();
        if ms < lo_ms || ms > hi_ms {
            errs.push(
                path,
                format!(
                    "must be between {} and {}",
                    crate::Duration::from_millis(lo_ms),
                    crate::Duration::from_millis(hi_ms)
                ),
            );
        }
    }
}

pub(crate) fn check_ref_name(errs: &mut Errors<'_>, path: &str, name: &str) {
    if let Err(reason) = crate::validate_name(name) {
        errs.push(path, reason);
    }
}
