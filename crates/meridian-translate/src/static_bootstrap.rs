//! Turns translated resources into one static Envoy bootstrap, so a real
//! Envoy can check them with `envoy --mode validate` without an xDS server:
//! route configurations go inline into their HTTP connection managers,
//! load assignments inline into their clusters (which become STATIC),
//! and secrets become static secrets.

use envoy_types::pb::envoy::{
    config::{
        bootstrap::v3::{bootstrap::StaticResources, Bootstrap},
        cluster::v3::{
            cluster::{ClusterDiscoveryType, DiscoveryType},
            Cluster,
        },
        core::v3::transport_socket,
        endpoint::v3::ClusterLoadAssignment,
        listener::v3::{filter, Listener},
        route::v3::RouteConfiguration,
    },
    extensions::{
        filters::network::http_connection_manager::v3::{
            http_connection_manager::RouteSpecifier, HttpConnectionManager,
        },
        transport_sockets::tls::v3::{DownstreamTlsContext, Secret},
    },
};
use envoy_types::util::pack_any;
use prost::Message;

use crate::{listener::HCM_FILTER, Resources, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

#[derive(Debug, thiserror::Error)]
#[error("resource {name} of type {type_url} does not decode: {source}")]
pub struct DecodeError {
    pub type_url: String,
    pub name: String,
    #[source]
    pub source: prost::DecodeError,
}

fn decode<M: Message + Default>(
    type_url: &str,
    name: &str,
    bytes: &[u8],
) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|source| DecodeError {
        type_url: type_url.into(),
        name: name.into(),
        source,
    })
}

/// Builds the static bootstrap; encode it with `prost::Message` and pass
/// it to Envoy as a `.pb` file.
pub fn to_static_bootstrap(res: &Resources) -> Result<Bootstrap, DecodeError> {
    let mut statics = StaticResources::default();
    for r in res.of_type(LISTENER) {
        let mut l: Listener = decode(LISTENER, &r.name, &r.encoded)?;
        for chain in &mut l.filter_chains {
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if f.name != HCM_FILTER {
                    continue;
                }
                let mut hcm: HttpConnectionManager = decode(LISTENER, &r.name, &any.value)?;
                if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                    if let Some(rc) = res.get(ROUTE, &rds.route_config_name) {
                        let rc: RouteConfiguration = decode(ROUTE, &rc.name, &rc.encoded)?;
                        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
                    }
                }
                f.config_type = Some(filter::ConfigType::TypedConfig(pack_any(hcm)));
            }
            if let Some(ts) = &mut chain.transport_socket {
                if let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type {
                    let mut ctx: DownstreamTlsContext = decode(LISTENER, &r.name, &any.value)?;
                    if let Some(common) = &mut ctx.common_tls_context {
                        // No sds_config: Envoy looks the name up among
                        // static secrets.
                        for sds in &mut common.tls_certificate_sds_secret_configs {
                            sds.sds_config = None;
                        }
                    }
                    ts.config_type = Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx)));
                }
            }
        }
        statics.listeners.push(l);
    }
    for r in res.of_type(CLUSTER) {
        let mut c: Cluster = decode(CLUSTER, &r.name, &r.encoded)?;
        let cla: ClusterLoadAssignment = match res.get(ENDPOINT, &r.name) {
            Some(e) => decode(ENDPOINT, &e.name, &e.encoded)?,
            None => ClusterLoadAssignment {
                cluster_name: r.name.clone(),
                ..Default::default()
            },
        };
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
        c.eds_cluster_config = None;
        c.load_assignment = Some(cla);
        statics.clusters.push(c);
    }
    for r in res.of_type(SECRET) {
        let s: Secret = decode(SECRET, &r.name, &r.encoded)?;
        statics.secrets.push(s);
    }
    Ok(Bootstrap {
        static_resources: Some(statics),
        ..Default::default()
    })
}

impl Resources {
    /// The static bootstrap as binary protobuf (`.pb`), which Envoy reads
    /// directly; envoy-types has no JSON support.
    pub fn to_static_bootstrap_pb(&self) -> Result<Vec<u8>, DecodeError> {
        Ok(to_static_bootstrap(self)?.encode_to_vec())
    }
}
