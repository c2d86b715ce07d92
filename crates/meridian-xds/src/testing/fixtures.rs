//! Small, real Envoy resources for tests. The `tag` changes a resource's
//! content (and so its version) without changing its name.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{AggregatedConfigSource, ConfigSource, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{http_filter, HttpConnectionManager, HttpFilter, Rds};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, GenericSecret, Secret};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use prost::Message;

use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: 2, // V3
        ..Default::default()
    }
}

/// An EDS cluster; its endpoints are named like the cluster.
pub fn cluster(name: &str, tag: &str) -> Any {
    pack_any(Cluster {
        name: name.to_string(),
        alt_stat_name: tag.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    })
}

pub fn endpoints(cluster: &str, tag: &str) -> Any {
    pack_any(ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality {
                region: tag.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A listener whose HTTP connection manager takes its routes from RDS `route`.
pub fn listener(name: &str, route: &str, tag: &str) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: tag.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route.to_string(),
        })),
        ..Default::default()
    };
    pack_any(Listener {
        stat_prefix: tag.to_string(),
        ..hcm_listener(name, hcm)
    })
}

/// A listener with one filter chain: `hcm`.
pub fn hcm_listener(name: &str, hcm: HttpConnectionManager) -> Listener {
    Listener {
        name: name.to_string(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The router, the HTTP filter a real Envoy needs last to forward requests.
pub fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Router::default()))),
        ..Default::default()
    }
}

pub fn route(name: &str, tag: &str) -> Any {
    pack_any(RouteConfiguration {
        name: name.to_string(),
        internal_only_headers: vec![format!("x-{tag}")],
        ..Default::default()
    })
}

pub fn secret(name: &str, tag: &str) -> Any {
    pack_any(Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::GenericSecret(GenericSecret {
            secret: Some(envoy_types::pb::envoy::config::core::v3::DataSource {
                specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                        tag.to_string(),
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })),
    })
}

/// The resource name inside an `Any`, decoded the way Envoy reads it.
pub fn resource_name(any: &Any) -> String {
    let v = any.value.as_slice();
    match any.type_url.as_str() {
        CLUSTER => Cluster::decode(v).map(|c| c.name).unwrap_or_default(),
        ENDPOINT => ClusterLoadAssignment::decode(v)
            .map(|c| c.cluster_name)
            .unwrap_or_default(),
        LISTENER => Listener::decode(v).map(|l| l.name).unwrap_or_default(),
        ROUTE => RouteConfiguration::decode(v)
            .map(|r| r.name)
            .unwrap_or_default(),
        SECRET => Secret::decode(v).map(|s| s.name).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The EDS name a cluster asks for (its service name, else its name).
pub fn eds_name(any: &Any) -> Option<String> {
    let c = Cluster::decode(any.value.as_slice()).ok()?;
    let service = c
        .eds_cluster_config
        .map(|e| e.service_name)
        .unwrap_or_default();
    Some(if service.is_empty() { c.name } else { service })
}

/// The RDS names a listener's HTTP connection managers ask for.
pub fn rds_names(any: &Any) -> Vec<String> {
    let Ok(l) = Listener::decode(any.value.as_slice()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for fc in l.filter_chains {
        for f in fc.filters {
            if let Some(filter::ConfigType::TypedConfig(tc)) = f.config_type {
                if let Ok(hcm) = HttpConnectionManager::decode(tc.value.as_slice()) {
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        out.push(rds.route_config_name);
                    }
                }
            }
        }
    }
    out
}
