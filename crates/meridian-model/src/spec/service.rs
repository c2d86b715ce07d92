use serde::{Deserialize, Serialize};

use crate::Duration;

mod validate;

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
    /// Envoy's `common_lb_config.update_merge_window`: health changes within
    /// it are applied together. Default: see [`ServiceSpec::update_merge_window`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_merge_window: Option<Duration>,
    /// Envoy's `common_lb_config.healthy_panic_threshold`, 0-100 (0: never
    /// panic). Default 50, Envoy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percent: Option<u32>,
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
    /// Envoy's own default merge window.
    pub const DEFAULT_UPDATE_MERGE_WINDOW: Duration = Duration::from_secs(1);
    /// With `failover`: Envoy's 1 s window is the floor of every failover
    /// (an ejection waits for the window), while 100 ms still merges the
    /// burst of ejections of a failing region into one update.
    pub const FAILOVER_UPDATE_MERGE_WINDOW: Duration = Duration::from_millis(100);
    /// Envoy's own default.
    pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u32 = 50;

    /// The merge window translation emits: the set value, else 100 ms for
    /// a service with `failover`, else Envoy's 1 s.
    pub fn update_merge_window(&self) -> Duration {
        self.update_merge_window
            .unwrap_or(if self.failover.is_some() {
                Self::FAILOVER_UPDATE_MERGE_WINDOW
            } else {
                Self::DEFAULT_UPDATE_MERGE_WINDOW
            })
    }

    pub fn panic_threshold_percent(&self) -> u32 {
        self.panic_threshold_percent
            .unwrap_or(Self::DEFAULT_PANIC_THRESHOLD_PERCENT)
    }

    /// Outlier detection as translation emits it: the set fields, the
    /// failover defaults for a service with `failover`, else Envoy's.
    pub fn outlier_settings(&self) -> OutlierSettings {
        let od = self.outlier_detection.clone().unwrap_or_default();
        let failover = self.failover.is_some();
        type O = OutlierDetection;
        OutlierSettings {
            consecutive_5xx: od.consecutive_5xx.unwrap_or(O::DEFAULT_CONSECUTIVE_5XX),
            // Envoy counts gateway failures by default but does not act on
            // them; a set value, or failover, turns enforcement on.
            consecutive_gateway_failure: od
                .consecutive_gateway_failure
                .or(failover.then_some(O::DEFAULT_CONSECUTIVE_GATEWAY_FAILURE)),
            interval: od.interval.unwrap_or(if failover {
                O::FAILOVER_INTERVAL
            } else {
                O::DEFAULT_INTERVAL
            }),
            base_ejection_time: od
                .base_ejection_time
                .unwrap_or(O::DEFAULT_BASE_EJECTION_TIME),
            max_ejection_time: od.max_ejection_time.unwrap_or(O::DEFAULT_MAX_EJECTION_TIME),
            max_ejection_percent: od.max_ejection_percent.unwrap_or(if failover {
                O::FAILOVER_MAX_EJECTION_PERCENT
            } else {
                O::DEFAULT_MAX_EJECTION_PERCENT
            }),
        }
    }
}

/// Outlier detection with every default applied (see
/// [`ServiceSpec::outlier_settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    pub consecutive_5xx: u32,
    /// `None`: counted by Envoy, never enforced.
    pub consecutive_gateway_failure: Option<u32>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 or connection failures before an ejection,
    /// even when `consecutive5xx` is higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_failure: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Cap of the back-off: the n-th ejection in a row lasts
    /// n x `baseEjectionTime`, at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl OutlierDetection {
    // Envoy's own defaults; emitted explicitly when a Service has no
    // outlierDetection because locality failover does nothing without it.
    pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
    pub const DEFAULT_CONSECUTIVE_GATEWAY_FAILURE: u32 = 5;
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
    // With `failover`: a region's hosts must all be ejectable (Envoy's 10%
    // ejects none of two hosts), and ejections end on a 1 s sweep, not a
    // 10 s one, so the back-off is what users read in the docs.
    pub const FAILOVER_MAX_EJECTION_PERCENT: u32 = 100;
    pub const FAILOVER_INTERVAL: Duration = Duration::from_secs(1);
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
    /// Interval while the service has had no traffic yet. Default: the
    /// interval (Envoy's 60 s would leave a young Envoy unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<Duration>,
    /// Interval for hosts marked unhealthy. Default: the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_interval: Option<Duration>,
    /// The first check right after a host is marked unhealthy. Default:
    /// the unhealthy interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_edge_interval: Option<Duration>,
    /// The first check right after a host is marked healthy. Default: the
    /// interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_edge_interval: Option<Duration>,
}

impl HealthCheck {
    pub const DEFAULT_PATH: &'static str = "/healthz";
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL)
    }

    pub fn no_traffic_interval(&self) -> Duration {
        self.no_traffic_interval.unwrap_or(self.interval())
    }

    pub fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval.unwrap_or(self.interval())
    }

    pub fn unhealthy_edge_interval(&self) -> Duration {
        self.unhealthy_edge_interval
            .unwrap_or(self.unhealthy_interval())
    }

    pub fn healthy_edge_interval(&self) -> Duration {
        self.healthy_edge_interval.unwrap_or(self.interval())
    }
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
    /// Regions this service names (failover order and exclusions).
    pub fn referenced_regions(&self) -> impl Iterator<Item = &str> {
        self.failover
            .iter()
            .flat_map(|f| f.regions.iter().flatten().chain(f.exclude_regions.iter()))
            .map(String::as_str)
    }
}
