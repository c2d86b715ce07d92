use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::{
    config::{
        core::v3::{
            address, socket_address::PortSpecifier, Address, ConfigSource, SocketAddress,
            TransportSocket,
        },
        listener::v3::{filter, Filter, FilterChain, Listener},
    },
    extensions::{
        filters::{
            http::router::v3::Router,
            network::{
                http_connection_manager::v3::{
                    http_connection_manager::{CodecType, RouteSpecifier},
                    http_filter, HttpConnectionManager, HttpFilter, Rds,
                },
                tcp_proxy::v3::{tcp_proxy::ClusterSpecifier, TcpProxy},
            },
        },
        transport_sockets::tls::v3::{CommonTlsContext, DownstreamTlsContext, SdsSecretConfig},
    },
};
use envoy_types::util::pack_any;
use meridian_model::{spec::ListenerProtocol, ConfigSet, ListenerSpec};

use crate::TranslateError;

pub(crate) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub(crate) const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

pub(crate) fn build(
    config: &ConfigSet,
    name: &str,
    l: &ListenerSpec,
    source: &ConfigSource,
) -> Result<Listener, TranslateError> {
    let filter = match l.protocol {
        ListenerProtocol::Http => {
            let hcm = HttpConnectionManager {
                stat_prefix: name.to_string(),
                codec_type: CodecType::Auto as i32,
                route_specifier: Some(RouteSpecifier::Rds(Rds {
                    config_source: Some(source.clone()),
                    // The route configuration is named after the listener:
                    // one listener, one table holding all its routes.
                    route_config_name: name.to_string(),
                })),
                http_filters: vec![HttpFilter {
                    name: "envoy.filters.http.router".into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                        Router::default(),
                    ))),
                    ..Default::default()
                }],
                ..Default::default()
            };
            Filter {
                name: HCM_FILTER.into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }
        }
        ListenerProtocol::Tcp => {
            let service = l.service.clone().unwrap_or_default();
            if config.service(&service).is_none() {
                return Err(TranslateError::Unresolved {
                    from: format!("listener/{name}"),
                    field: "service".into(),
                    kind: "service",
                    name: service,
                });
            }
            let tcp = TcpProxy {
                stat_prefix: name.to_string(),
                cluster_specifier: Some(ClusterSpecifier::Cluster(service)),
                ..Default::default()
            };
            Filter {
                name: TCP_PROXY_FILTER.into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(tcp))),
            }
        }
    };
    let transport_socket = l.tls.as_ref().map(|tls| {
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                    name: tls.secret.clone(),
                    sds_config: Some(source.clone()),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
        }
    });
    Ok(Listener {
        name: name.to_string(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: l.address().to_string(),
                port_specifier: Some(PortSpecifier::PortValue(l.port.into())),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            transport_socket,
            ..Default::default()
        }],
        ..Default::default()
    })
}
