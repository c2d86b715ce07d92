use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType, config_source::ConfigSourceSpecifier, grpc_service::EnvoyGrpc,
    grpc_service::TargetSpecifier, AggregatedConfigSource, ApiConfigSource, ApiVersion,
    ConfigSource, GrpcService,
};

/// Where Envoy fetches resources that other resources refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSourceKind {
    /// The ADS stream the proxy already has; one stream keeps updates
    /// ordered (clusters before their endpoints, listeners before routes).
    #[default]
    Ads,
    /// A separate gRPC stream per type to the named bootstrap cluster.
    Grpc { cluster: String },
}

impl ConfigSourceKind {
    pub(crate) fn to_proto(&self) -> ConfigSource {
        let specifier = match self {
            ConfigSourceKind::Ads => ConfigSourceSpecifier::Ads(AggregatedConfigSource {}),
            ConfigSourceKind::Grpc { cluster } => {
                ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: cluster.clone(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }
        };
        ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(specifier),
            ..Default::default()
        }
    }
}
