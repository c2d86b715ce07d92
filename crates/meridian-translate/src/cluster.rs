use std::collections::HashMap;

use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                circuit_breakers::Thresholds,
                cluster::{
                    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig, LbPolicy,
                },
                CircuitBreakers, Cluster, OutlierDetection,
            },
            core::v3::{
                health_check::{GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck},
                ConfigSource, HealthCheck, Http2ProtocolOptions,
            },
        },
        extensions::upstreams::http::v3::{
            http_protocol_options::{
                explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
            },
            HttpProtocolOptions,
        },
    },
    google::protobuf::UInt32Value,
};
use envoy_types::util::pack_any;
use meridian_model::{
    spec::{HealthCheckProtocol, LoadBalancing, Protocol},
    ServiceSpec,
};

use crate::route::duration;

/// One Envoy cluster per Service (not per route), so every route to a
/// service shares its connection pools, health and outlier state.
pub(crate) fn build(name: &str, svc: &ServiceSpec, source: &ConfigSource) -> Cluster {
    let od = svc.outlier_settings();
    let u32v = |v: u32| Some(UInt32Value { value: v });
    let mut cluster = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(source.clone()),
            service_name: name.to_string(),
        }),
        connect_timeout: Some(duration(
            svc.connect_timeout
                .unwrap_or(ServiceSpec::DEFAULT_CONNECT_TIMEOUT),
        )),
        lb_policy: match svc.load_balancing {
            LoadBalancing::RoundRobin => LbPolicy::RoundRobin,
            LoadBalancing::LeastRequest => LbPolicy::LeastRequest,
            LoadBalancing::RingHash => LbPolicy::RingHash,
            LoadBalancing::Maglev => LbPolicy::Maglev,
            LoadBalancing::Random => LbPolicy::Random,
        } as i32,
        // Locality failover only moves traffic off endpoints Envoy knows are
        // bad; outlier detection is how it learns that without active
        // checks, so it is always on (defaults: `ServiceSpec::outlier_settings`).
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: u32v(od.consecutive_5xx),
            consecutive_gateway_failure: od.consecutive_gateway_failure.and_then(u32v),
            enforcing_consecutive_gateway_failure: od
                .consecutive_gateway_failure
                .and_then(|_| u32v(100)),
            interval: Some(duration(od.interval)),
            base_ejection_time: Some(duration(od.base_ejection_time)),
            max_ejection_time: Some(duration(od.max_ejection_time)),
            max_ejection_percent: u32v(od.max_ejection_percent),
            ..Default::default()
        }),
        common_lb_config: Some(CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: svc.panic_threshold_percent().into(),
            }),
            update_merge_window: Some(duration(svc.update_merge_window())),
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(cb) = &svc.circuit_breakers {
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: cb.max_connections.and_then(u32v),
                max_pending_requests: cb.max_pending_requests.and_then(u32v),
                max_requests: cb.max_requests.and_then(u32v),
                max_retries: cb.max_retries.and_then(u32v),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if let Some(hc) = &svc.health_check {
        use meridian_model::spec::HealthCheck as M;
        let checker = match hc.protocol {
            HealthCheckProtocol::Http => HealthChecker::HttpHealthCheck(HttpHealthCheck {
                path: hc
                    .path
                    .clone()
                    .unwrap_or_else(|| M::DEFAULT_PATH.to_string()),
                codec_client_type: if svc.protocol == Protocol::Http1 {
                    envoy_types::pb::envoy::r#type::v3::CodecClientType::Http1
                } else {
                    envoy_types::pb::envoy::r#type::v3::CodecClientType::Http2
                } as i32,
                ..Default::default()
            }),
            // No payload: a TCP check that only connects.
            HealthCheckProtocol::Tcp => HealthChecker::TcpHealthCheck(TcpHealthCheck::default()),
            HealthCheckProtocol::Grpc => HealthChecker::GrpcHealthCheck(GrpcHealthCheck {
                service_name: hc.grpc_service.clone().unwrap_or_default(),
                ..Default::default()
            }),
        };
        cluster.health_checks = vec![HealthCheck {
            timeout: Some(duration(hc.timeout.unwrap_or(M::DEFAULT_TIMEOUT))),
            interval: Some(duration(hc.interval())),
            // Envoy's default (60 s) is used until the cluster has seen
            // traffic, so a young Envoy would not check again for a minute
            // and failing hosts would come back each time an ejection ends.
            no_traffic_interval: Some(duration(hc.no_traffic_interval())),
            unhealthy_interval: Some(duration(hc.unhealthy_interval())),
            unhealthy_edge_interval: Some(duration(hc.unhealthy_edge_interval())),
            healthy_edge_interval: Some(duration(hc.healthy_edge_interval())),
            healthy_threshold: u32v(hc.healthy_threshold.unwrap_or(M::DEFAULT_HEALTHY_THRESHOLD)),
            unhealthy_threshold: u32v(
                hc.unhealthy_threshold
                    .unwrap_or(M::DEFAULT_UNHEALTHY_THRESHOLD),
            ),
            health_checker: Some(checker),
            ..Default::default()
        }];
    }
    if matches!(svc.protocol, Protocol::Http2 | Protocol::Grpc) {
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        // A HashMap in the proto; with a single entry its encoding is still
        // deterministic.
        let mut map = HashMap::new();
        map.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(opts),
        );
        cluster.typed_extension_protocol_options = map;
    }
    cluster
}
