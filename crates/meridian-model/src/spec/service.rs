use serde::{Deserialize, Serialize};

use super::{check_duration, check_range, check_ref_name};
use crate::{error::Errors, Duration};

/// A logical upstream whose endpoints live in many clusters and regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// Endpoints declared in the config itself, for upstreams no agent
    /// discovers (VMs, external services, tests). Merged with the endpoints
    /// the agents report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<StaticEndpoint>,
}

/// An endpoint declared in a Service: always reported healthy; outlier
/// detection and active health checks still apply to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticEndpoint {
    /// An IP address (Envoy's EDS does not resolve names).
    pub address: String,
    /// Default: the Service's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Load-balancing weight, 1-128; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl StaticEndpoint {
    /// The cluster name static endpoints are reported under.
    pub const CLUSTER: &'static str = "static";
}

impl ServiceSpec {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
    Grpc,
    Tcp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastRequest,
    RingHash,
    Maglev,
    Random,
}

/// Limits per Envoy cluster (one Envoy's view, not fleet-wide); unset fields
/// keep Envoy's defaults (1024 each, 3 retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl OutlierDetection {
    // Envoy's own defaults; emitted explicitly when a Service has no
    // outlierDetection because locality failover does nothing without it.
    pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    Http,
    Tcp,
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    pub protocol: HealthCheckProtocol,
    /// HTTP only; default `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// gRPC only: the service name sent in the health check request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

impl HealthCheck {
    pub const DEFAULT_PATH: &'static str = "/healthz";
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
}

/// Where traffic goes when the viewer's own region is unhealthy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Regions to fall back to, in order, after the viewer's own region.
    /// Unset: the order configured in the viewer's Region object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    /// Regions never used for this service, except when they are the
    /// viewer's own region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_regions: Vec<String>,
    /// Spill over to the next priority when fewer than this percentage of
    /// the current one's endpoints are healthy. Unset: Envoy's default
    /// factor 1.4, i.e. about 71%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u32>,
    /// Move all traffic only when no endpoint of the current priority is
    /// healthy (Consul's behaviour).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_or_nothing: bool,
}

impl Failover {
    /// Overprovisioning factor (in percent, Envoy's unit) for the spill-over
    /// policy. Envoy keeps all traffic on P0 while
    /// `healthy% × factor / 100 ≥ 100`, so spilling below T% healthy needs
    /// `factor = 10000 / T`. All-or-nothing uses 100000: even 1% healthy
    /// gives 1000 ≥ 100.
    pub fn overprovisioning_factor(&self) -> u32 {
        if self.all_or_nothing {
            100_000
        } else {
            match self.threshold_percent {
                Some(t) if t > 0 => 10_000 / t,
                _ => 140,
            }
        }
    }
}

impl ServiceSpec {
    pub(crate) fn validate(&self, errs: &mut Errors<'_>) {
        check_range(errs, "port", self.port.into(), 1, 65535);
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}]");
            if e.address.parse::<std::net::IpAddr>().is_err() {
                errs.push(format!("{path}.address"), format!("{:?} is not an IP address", e.address));
            }
            if let Some(p) = e.port {
                check_range(errs, &format!("{path}.port"), p.into(), 1, 65535);
            }
            check_ref_name(errs, &format!("{path}.region"), &e.region);
            if let Some(w) = e.weight {
                check_range(errs, &format!("{path}.weight"), w.into(), 1, 128);
            }
            if !seen.insert((e.address.clone(), e.port.unwrap_or(self.port))) {
                errs.push(&path, format!("{}:{} is listed twice", e.address, e.port.unwrap_or(self.port)));
            }
        }
        check_duration(errs, "connectTimeout", self.connect_timeout, 1, 300_000);
        if let Some(cb) = &self.circuit_breakers {
            for (field, v) in [
                ("maxConnections", cb.max_connections),
                ("maxPendingRequests", cb.max_pending_requests),
                ("maxRequests", cb.max_requests),
                ("maxRetries", cb.max_retries),
            ] {
                if let Some(v) = v {
                    check_range(
                        errs,
                        &format!("circuitBreakers.{field}"),
                        v.into(),
                        1,
                        1_000_000,
                    );
                }
            }
        }
        if let Some(od) = &self.outlier_detection {
            if let Some(v) = od.consecutive_5xx {
                check_range(errs, "outlierDetection.consecutive5xx", v.into(), 1, 1000);
            }
            check_duration(
                errs,
                "outlierDetection.interval",
                od.interval,
                100,
                3_600_000,
            );
            check_duration(
                errs,
                "outlierDetection.baseEjectionTime",
                od.base_ejection_time,
                100,
                3_600_000,
            );
            if let Some(v) = od.max_ejection_percent {
                check_range(
                    errs,
                    "outlierDetection.maxEjectionPercent",
                    v.into(),
                    0,
                    100,
                );
            }
        }
        if let Some(hc) = &self.health_check {
            if hc.path.is_some() && hc.protocol != HealthCheckProtocol::Http {
                errs.push("healthCheck.path", "only allowed with protocol http");
            }
            if let Some(p) = &hc.path {
                if !p.starts_with('/') {
                    errs.push("healthCheck.path", "must start with '/'");
                }
            }
            if hc.grpc_service.is_some() && hc.protocol != HealthCheckProtocol::Grpc {
                errs.push("healthCheck.grpcService", "only allowed with protocol grpc");
            }
            check_duration(errs, "healthCheck.interval", hc.interval, 100, 3_600_000);
            check_duration(errs, "healthCheck.timeout", hc.timeout, 1, 300_000);
            let interval = hc.interval.unwrap_or(HealthCheck::DEFAULT_INTERVAL);
            let timeout = hc.timeout.unwrap_or(HealthCheck::DEFAULT_TIMEOUT);
            if timeout > interval {
                errs.push(
                    "healthCheck.timeout",
                    format!("must not exceed the interval ({interval})"),
                );
            }
            for (field, v) in [
                ("healthyThreshold", hc.healthy_threshold),
                ("unhealthyThreshold", hc.unhealthy_threshold),
            ] {
                if let Some(v) = v {
                    check_range(errs, &format!("healthCheck.{field}"), v.into(), 1, 100);
                }
            }
            if self.protocol == Protocol::Tcp && hc.protocol != HealthCheckProtocol::Tcp {
                errs.push(
                    "healthCheck.protocol",
                    "a tcp service can only have a tcp health check",
                );
            }
        }
        if let Some(f) = &self.failover {
            if let Some(t) = f.threshold_percent {
                check_range(errs, "failover.thresholdPercent", t.into(), 1, 100);
                if f.all_or_nothing {
                    errs.push(
                        "failover.thresholdPercent",
                        "cannot be combined with allOrNothing",
                    );
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, r) in f.regions.iter().flatten().enumerate() {
                check_ref_name(errs, &format!("failover.regions[{i}]"), r);
                if !seen.insert(r) {
                    errs.push(
                        format!("failover.regions[{i}]"),
                        format!("region \"{r}\" is listed twice"),
                    );
                }
                if f.exclude_regions.contains(r) {
                    errs.push(
                        format!("failover.regions[{i}]"),
                        format!("region \"{r}\" is also excluded"),
                    );
                }
            }
            for (i, r) in f.exclude_regions.iter().enumerate() {
                check_ref_name(errs, &format!("failover.excludeRegions[{i}]"), r);
            }
        }
    }

    /// Regions this service names (failover order and exclusions).
    pub fn referenced_regions(&self) -> impl Iterator<Item = &str> {
        self.failover
            .iter()
            .flat_map(|f| f.regions.iter().flatten().chain(f.exclude_regions.iter()))
            .map(String::as_str)
    }
}
