//! The rules of a Service spec, each naming the field it is about.

use super::*;
use crate::{
    error::Errors,
    spec::{check_duration, check_range, check_ref_name},
};

impl ServiceSpec {
    pub(crate) fn validate(&self, errs: &mut Errors<'_>) {
        check_range(errs, "port", self.port.into(), 1, 65535);
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}]");
            if e.address.parse::<std::net::IpAddr>().is_err() {
                errs.push(
                    format!("{path}.address"),
                    format!("{:?} is not an IP address", e.address),
                );
            }
            if let Some(p) = e.port {
                check_range(errs, &format!("{path}.port"), p.into(), 1, 65535);
            }
            check_ref_name(errs, &format!("{path}.region"), &e.region);
            if let Some(w) = e.weight {
                check_range(errs, &format!("{path}.weight"), w.into(), 1, 128);
            }
            if !seen.insert((e.address.clone(), e.port.unwrap_or(self.port))) {
                errs.push(
                    &path,
                    format!(
                        "{}:{} is listed twice",
                        e.address,
                        e.port.unwrap_or(self.port)
                    ),
                );
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
            if let Some(v) = od.consecutive_gateway_failure {
                check_range(
                    errs,
                    "outlierDetection.consecutiveGatewayFailure",
                    v.into(),
                    1,
                    1000,
                );
            }
            check_duration(
                errs,
                "outlierDetection.maxEjectionTime",
                od.max_ejection_time,
                100,
                3_600_000,
            );
            let base = od
                .base_ejection_time
                .unwrap_or(OutlierDetection::DEFAULT_BASE_EJECTION_TIME);
            if let Some(max) = od.max_ejection_time {
                if max < base {
                    errs.push(
                        "outlierDetection.maxEjectionTime",
                        format!("must not be less than baseEjectionTime ({base})"),
                    );
                }
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
            for (field, d) in [
                ("noTrafficInterval", hc.no_traffic_interval),
                ("unhealthyInterval", hc.unhealthy_interval),
                ("unhealthyEdgeInterval", hc.unhealthy_edge_interval),
                ("healthyEdgeInterval", hc.healthy_edge_interval),
            ] {
                check_duration(errs, &format!("healthCheck.{field}"), d, 100, 3_600_000);
            }
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
        check_duration(
            errs,
            "updateMergeWindow",
            self.update_merge_window,
            0,
            60_000,
        );
        if let Some(p) = self.panic_threshold_percent {
            check_range(errs, "panicThresholdPercent", p.into(), 0, 100);
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
}
