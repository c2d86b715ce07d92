//! Translates Meridian's object model into the Envoy v3 resources one proxy
//! should see: Listener, RouteConfiguration, Cluster, ClusterLoadAssignment
//! and Secret; and the ADS bootstrap such a proxy starts with (`bootstrap`).
//!
//! Architecture invariant: [`translate`] is a pure function of the config
//! set, the endpoints, the viewer and the options. It does no I/O, reads no
//! clock and no randomness, and the same input always gives byte-identical
//! encoded resources (so versions, which are hashes of the bytes, only change
//! when content does). The xDS server and the store know nothing about how
//! resources are built; this crate knows nothing about how they are served.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod bootstrap;
mod cluster;
mod config_source;
mod endpoints;
mod listener;
mod resources;
mod route;
mod secret;
pub mod static_bootstrap;

use meridian_model::{ConfigSet, EndpointSet};

pub use config_source::ConfigSourceKind;
pub use endpoints::region_order;
pub use resources::{Resource, Resources, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// Who is asking: a proxy in `region` whose Envoy `node.cluster` is
/// `proxy_group`. A proxy without a group only gets listeners that are not
/// restricted to groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Viewer {
    pub region: String,
    pub proxy_group: Option<String>,
}

impl Viewer {
    pub fn new(region: impl Into<String>, proxy_group: Option<&str>) -> Self {
        Self {
            region: region.into(),
            proxy_group: proxy_group.map(str::to_string),
        }
    }
}

/// How translation is done, as opposed to what is translated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Where the generated resources tell Envoy to fetch the resources they
    /// refer to (RDS, EDS, SDS). ADS by default.
    pub config_source: ConfigSourceKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The set refers to an object that is not there; `ConfigSet::validate`
    /// reports these before a set is accepted, so this means an unvalidated
    /// set was passed in.
    #[error("{from}: {field}: {kind} \"{name}\" does not exist; validate the config set before translating")]
    Unresolved {
        from: String,
        field: String,
        kind: &'static str,
        name: String,
    },
    #[error("endpoint {address}:{port} of service {service} (cluster {cluster}): address is not an IP address")]
    EndpointAddress {
        service: String,
        cluster: String,
        address: String,
        port: u16,
    },
}

/// Builds every resource `viewer` should receive.
///
/// Scope: all listeners that apply to the viewer's proxy group (with their
/// route configurations and secrets), and a cluster plus load assignment for
/// every Service in the set (so a route change never waits on a new cluster
/// being warmed).
pub fn translate(
    config: &ConfigSet,
    endpoints: &EndpointSet,
    viewer: &Viewer,
    opts: &TranslateOptions,
) -> Result<Resources, TranslateError> {
    let source = opts.config_source.to_proto();
    let mut out = Resources::default();
    for (name, svc) in config.services() {
        out.add(CLUSTER, name, &cluster::build(name, svc, &source));
        out.add(
            ENDPOINT,
            name,
            &endpoints::build(config, endpoints, name, svc, &viewer.region)?,
        );
    }
    for (name, l) in config.listeners() {
        if !l.applies_to(viewer.proxy_group.as_deref()) {
            continue;
        }
        out.add(LISTENER, name, &listener::build(config, name, l, &source)?);
        if !l.routes.is_empty() {
            out.add(ROUTE, name, &route::build(config, name, l)?);
        }
        if let Some(tls) = &l.tls {
            let s = config
                .secret(&tls.secret)
                .ok_or_else(|| TranslateError::Unresolved {
                    from: format!("listener/{name}"),
                    field: "tls.secret".into(),
                    kind: "secret",
                    name: tls.secret.clone(),
                })?;
            out.add(SECRET, &tls.secret, &secret::build(&tls.secret, s));
        }
    }
    Ok(out)
}
