use std::{collections::BTreeMap, net::IpAddr};

use envoy_types::pb::{
    envoy::config::{
        core::v3::{
            address, socket_address::PortSpecifier, Address, HealthStatus, Locality, SocketAddress,
        },
        endpoint::v3::{
            cluster_load_assignment::Policy, lb_endpoint::HostIdentifier, ClusterLoadAssignment,
            Endpoint, LbEndpoint, LocalityLbEndpoints,
        },
    },
    google::protobuf::UInt32Value,
};
use meridian_model::{ConfigSet, EndpointSet, Health, ServiceSpec};

use crate::TranslateError;

/// The order in which a proxy in `viewer_region` uses the regions of
/// `service`:
/// 1. the viewer's own region, always first (it cannot be excluded);
/// 2. the service's `failover.regions` if set, else the viewer's Region
///    object's `failover` list;
/// 3. every other known region (Region objects and regions that have
///    endpoints), in name order, so no endpoint is unreachable by accident;
///
/// minus the service's `failover.excludeRegions`. Endpoints in excluded
/// regions are not sent at all.
pub fn region_order(
    config: &ConfigSet,
    endpoints: &EndpointSet,
    service: &str,
    viewer_region: &str,
) -> Vec<String> {
    let svc = config.service(service);
    let failover = svc.and_then(|s| s.failover.as_ref());
    let excluded: Vec<&str> = failover
        .map(|f| f.exclude_regions.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let preferred: Vec<&str> = match failover.and_then(|f| f.regions.as_ref()) {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => config
            .region(viewer_region)
            .map(|r| r.failover.iter().map(String::as_str).collect())
            .unwrap_or_default(),
    };
    let mut rest: Vec<&str> = config.regions().map(|(n, _)| n).collect();
    rest.extend(
        endpoints
            .for_service(service)
            .iter()
            .map(|e| e.region.as_str()),
    );
    rest.sort_unstable();
    let mut order: Vec<String> = vec![viewer_region.to_string()];
    for r in preferred.into_iter().chain(rest) {
        if !excluded.contains(&r) && !order.iter().any(|o| o == r) {
            order.push(r.to_string());
        }
    }
    order
}

/// Overprovisioning factor: see `Failover::overprovisioning_factor` for
/// the derivation (factor = 10000 / threshold%; all-or-nothing = 100000).
pub(crate) fn build(
    config: &ConfigSet,
    endpoints: &EndpointSet,
    name: &str,
    svc: &ServiceSpec,
    viewer_region: &str,
) -> Result<ClusterLoadAssignment, TranslateError> {
    let order = region_order(config, endpoints, name, viewer_region);
    // (region, zone) -> endpoints; BTreeMap keeps zones in name order.
    let mut by_locality: BTreeMap<(&str, &str), Vec<LbEndpoint>> = BTreeMap::new();
    for e in endpoints.for_service(name) {
        if !order.contains(&e.region) {
            continue;
        }
        if e.address.parse::<IpAddr>().is_err() {
            return Err(TranslateError::EndpointAddress {
                service: name.to_string(),
                cluster: e.cluster.clone(),
                address: e.address.clone(),
                port: e.port,
            });
        }
        let port = if e.port == 0 { svc.port } else { e.port };
        by_locality
            .entry((&e.region, &e.zone))
            .or_default()
            .push(LbEndpoint {
                health_status: match e.health {
                    Health::Healthy => HealthStatus::Healthy,
                    Health::Unhealthy => HealthStatus::Unhealthy,
                    Health::Draining => HealthStatus::Draining,
                    Health::Unknown => HealthStatus::Unknown,
                } as i32,
                load_balancing_weight: Some(UInt32Value {
                    value: e.weight.clamp(1, 128),
                }),
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: e.address.clone(),
                            port_specifier: Some(PortSpecifier::PortValue(port.into())),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            });
    }
    // Envoy wants priorities without gaps, so only regions that have
    // endpoints get one, in failover order.
    let mut localities = Vec::new();
    let mut priority = 0;
    for region in &order {
        let mut any = false;
        for ((r, zone), lb) in by_locality.iter().filter(|((r, _), _)| r == region) {
            localities.push(LocalityLbEndpoints {
                locality: Some(Locality {
                    region: r.to_string(),
                    zone: zone.to_string(),
                    ..Default::default()
                }),
                lb_endpoints: lb.clone(),
                priority,
                ..Default::default()
            });
            any = true;
        }
        if any {
            priority += 1;
        }
    }
    let factor = svc
        .failover
        .clone()
        .unwrap_or_default()
        .overprovisioning_factor();
    Ok(ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: localities,
        policy: Some(Policy {
            overprovisioning_factor: Some(UInt32Value { value: factor }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
