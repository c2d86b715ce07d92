//! The bootstrap of an Envoy that gets everything over ADS from Meridian's
//! controllers: its xDS cluster lists the controllers of the Envoy's region
//! first and those of the other regions as lower priorities, with active
//! health checks so Envoy moves off a dead controller (and off a dead region)
//! on its own. `meridian bootstrap` prints it; tests and benchmarks start
//! their Envoys with it, so they run the configuration operators get.
//!
//! Reconnects: the ADS stream retries with a jittered back-off from
//! [`XDS_RETRY_BASE`] up to [`XDS_RETRY_MAX`] (Envoy's own cap of 30 s left
//! Envoys away for 17-20 s after a full controller restart). Controllers
//! with a known admin address are checked on `GET /readyz` there, so a
//! reconnecting Envoy picks a controller that is ready, not merely up; with
//! no admin address the check is a TCP connect to the xDS port.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

/// Name of the static cluster Envoy reaches the controllers through.
pub const XDS_CLUSTER: &str = "meridian_xds";

/// First wait before the ADS stream is re-established; Envoy jitters every
/// wait (a random time up to the current bound), so a fleet spreads out.
pub const XDS_RETRY_BASE: &str = "0.5s";
/// Bound of the back-off: an Envoy is back at most this long after a
/// controller is reachable again.
pub const XDS_RETRY_MAX: &str = "3s";
/// The readiness path of a controller's admin listener.
pub const READY_PATH: &str = "/readyz";
/// How often an Envoy pushes its counters to the controllers by default.
pub const STATS_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Which flavour of ADS the Envoy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AdsVariant {
    /// Incremental xDS (`DELTA_GRPC`).
    #[default]
    Delta,
    /// State of the world (`GRPC`).
    Sotw,
}

/// Everything a bootstrap says about one Envoy.
#[derive(Clone, Debug)]
pub struct BootstrapSpec {
    /// Envoy's `node.id`, unique per Envoy.
    pub node_id: String,
    /// The Envoy's region: its own region's controllers come first.
    pub region: String,
    /// Empty for none (the locality then has no `zone`).
    pub zone: String,
    /// Proxy group (Envoy `node.cluster`): selects which listeners it gets.
    pub group: String,
    pub variant: AdsVariant,
    /// Host of Envoy's admin listener. A string, not an address, so that the
    /// bootstrap repeats exactly what the operator wrote.
    pub admin_address: String,
    pub admin_port: u16,
    /// `(region, "HOST:PORT")` of each controller's xDS listener.
    pub controllers: Vec<(String, String)>,
    /// A controller's xDS address (as in `controllers`) -> its admin
    /// listener's "HOST:PORT". When every controller has one, the xDS
    /// cluster is health-checked on their `/readyz`; otherwise by TCP.
    pub controller_admin: BTreeMap<String, String>,
    /// The region's failover order (its Region object), after itself.
    pub failover: Vec<String>,
    /// How often Envoy pushes its counters to the controllers (the
    /// `metrics_service` stats sink, through the xDS cluster); `None`: no
    /// sink, and no traffic stats for rollouts from this Envoy.
    pub stats_flush_interval: Option<Duration>,
    /// Mutual TLS to the controllers; `None` for plaintext (`--insecure`
    /// controllers).
    pub tls: Option<XdsTls>,
}

/// How an Envoy authenticates to the controllers and checks them: its own
/// `proxy/GROUP` certificate, and the CA that must have issued a
/// controller's. Paths are as Envoy sees them (they are not read here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsTls {
    pub cert: String,
    pub key: String,
    pub ca: String,
    /// The trust domain of the controllers' `spiffe://DOMAIN/node/ID`.
    pub trust_domain: String,
}

impl BootstrapSpec {
    /// A delta-ADS Envoy in `region`, group `default`, admin on loopback,
    /// talking to `controllers`.
    pub fn new(
        node_id: &str,
        region: &str,
        admin_port: u16,
        controllers: Vec<(String, String)>,
    ) -> Self {
        BootstrapSpec {
            node_id: node_id.into(),
            region: region.into(),
            zone: String::new(),
            group: "default".into(),
            variant: AdsVariant::Delta,
            admin_address: "127.0.0.1".into(),
            admin_port,
            controllers,
            controller_admin: BTreeMap::new(),
            failover: Vec::new(),
            stats_flush_interval: Some(STATS_FLUSH_INTERVAL),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("controller address {0:?} has no port")]
    NoPort(String),
    #[error("controller address {0:?}: bad port")]
    BadPort(String, #[source] std::num::ParseIntError),
    #[error("stats flush interval {0:?}: must be between 1s and 300s (Envoy's bound)")]
    StatsFlushInterval(Duration),
}

/// HOST and PORT of "HOST:PORT" or "[V6]:PORT".
fn split_addr(addr: &str) -> Result<(&str, u16), BootstrapError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| BootstrapError::NoPort(addr.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|e| BootstrapError::BadPort(addr.into(), e))?;
    Ok((host, port))
}

/// Where Envoy sends a controller's readiness check: the admin port on the
/// xDS host, or on the admin host when that is a distinct, usable IP
/// (Envoy takes only an IP there; an unspecified one, 0.0.0.0, is a bind
/// address, not where to connect).
fn health_check_config(xds_host: &str, admin: &str) -> Result<Value, BootstrapError> {
    let (host, port) = split_addr(admin)?;
    let distinct_ip = host != xds_host
        && host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified());
    Ok(if distinct_ip {
        json!({"address": {"socket_address": {"address": host, "port_value": port}}, "port_value": port})
    } else {
        json!({"port_value": port})
    })
}

/// Priority of each region: own first, then its failover order, then the
/// rest by name.
fn priorities(
    own: &str,
    failover: &[String],
    regions: impl Iterator<Item = String>,
) -> BTreeMap<String, u32> {
    let mut order: Vec<String> = vec![own.to_string()];
    order.extend(failover.iter().cloned());
    let mut rest: Vec<String> = regions.collect();
    rest.sort();
    rest.dedup();
    for r in rest {
        if !order.contains(&r) {
            order.push(r);
        }
    }
    order
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, i as u32))
        .collect()
}

/// Label of the transport socket match the readiness checks use: a
/// controller's admin listener (`/readyz`) is plain HTTP, while the xDS
/// port is mutual TLS.
const PLAIN_HEALTH_CHECK: &str = "meridian-plain-health-check";

/// Adds mutual TLS to the controllers' cluster: Envoy presents its proxy
/// certificate and accepts a controller only if the CA issued it and its
/// URI SAN is a node identity of the trust domain. A host name is never
/// checked: controllers are dialled by IP or by names that change, and
/// their identity is `node/ID` (as the CLI and agents check them).
fn add_xds_tls(cluster: &mut Value, health_check: &mut Value, tls: &XdsTls, http_checks: bool) {
    let node_uri = format!(
        "^spiffe://{}/node/[1-9][0-9]*$",
        regex_escape(&tls.trust_domain)
    );
    cluster["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": tls.cert},
                    "private_key": {"filename": tls.key},
                }],
                "validation_context": {
                    "trusted_ca": {"filename": tls.ca},
                    "match_typed_subject_alt_names": [{
                        "san_type": "URI",
                        "matcher": {"safe_regex": {"regex": node_uri}},
                    }],
                },
            },
        },
    });
    if http_checks {
        // Without this the readiness checks would speak TLS to the plain
        // admin port and every controller would look down.
        cluster["transport_socket_matches"] = json!([{
            "name": PLAIN_HEALTH_CHECK,
            "match": {PLAIN_HEALTH_CHECK: true},
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
            },
        }]);
        health_check["transport_socket_match_criteria"] = json!({PLAIN_HEALTH_CHECK: true});
    }
}

/// A trust domain's characters (`a-z0-9.-_`) with the regex meta character
/// among them escaped.
fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// The bootstrap, as JSON (Envoy reads it as JSON or YAML).
pub fn bootstrap(s: &BootstrapSpec) -> Result<Value, BootstrapError> {
    let prio = priorities(
        &s.region,
        &s.failover,
        s.controllers.iter().map(|(r, _)| r.clone()),
    );
    let mut by_prio: BTreeMap<u32, (String, Vec<Value>)> = BTreeMap::new();
    let mut all_ips = true;
    let readiness = !s.controllers.is_empty()
        && s.controllers
            .iter()
            .all(|(_, a)| s.controller_admin.contains_key(a));
    for (region, addr) in &s.controllers {
        let (host, port) = split_addr(addr)?;
        all_ips &= host.parse::<std::net::IpAddr>().is_ok();
        let mut endpoint =
            json!({"address": {"socket_address": {"address": host, "port_value": port}}});
        if readiness {
            endpoint["health_check_config"] = health_check_config(host, &s.controller_admin[addr])?;
        }
        let p = prio[region];
        by_prio
            .entry(p)
            .or_insert_with(|| (region.clone(), Vec::new()))
            .1
            .push(json!({"endpoint": endpoint}));
    }
    // A not-ready controller (HTTP 503) is out at once; a dead one after
    // two failed checks.
    let mut health_check = json!({
        "timeout": "1s",
        "interval": "2s",
        "no_traffic_interval": "2s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
    });
    if readiness {
        health_check["http_health_check"] =
            json!({"path": READY_PATH, "codec_client_type": "HTTP1"});
    } else {
        health_check["tcp_health_check"] = json!({});
    }
    // Priorities must be contiguous from 0 (Envoy rejects gaps): renumber.
    let endpoints: Vec<Value> = by_prio
        .into_values()
        .enumerate()
        .map(|(i, (region, lb))| json!({"priority": i, "locality": {"region": region}, "lb_endpoints": lb}))
        .collect();
    let api_type = match s.variant {
        AdsVariant::Sotw => "GRPC",
        AdsVariant::Delta => "DELTA_GRPC",
    };
    let mut locality = json!({"region": s.region});
    if !s.zone.is_empty() {
        locality["zone"] = json!(s.zone);
    }
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    // gRPC keepalive: a silently dead controller is noticed in seconds.
                    "connection_keepalive": {"interval": "10s", "timeout": "5s"}
                }}
            }
        },
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": endpoints},
    });
    if let Some(tls) = &s.tls {
        add_xds_tls(&mut cluster, &mut health_check, tls, readiness);
    }
    // Active checks move Envoy off a dead controller, and off a whole dead
    // region to the next priority.
    cluster["health_checks"] = json!([health_check]);
    // The checks need two misses (up to 4 s) before a dead controller is
    // out, and until then each reconnect may pick it again. A refused or
    // timed-out connection ejects it at once instead, so the next attempt
    // (within the jittered back-off) goes to another controller, or to the
    // next region when the whole priority is ejected. A passing check
    // returns it; an ejection cannot hold a live stream, which never fails
    // connecting.
    cluster["outlier_detection"] = json!({
        "split_external_local_origin_errors": true,
        "consecutive_local_origin_failure": 1,
        "enforcing_consecutive_local_origin_failure": 100,
        // Only connection failures: gRPC answers are never "5xx" here.
        "enforcing_consecutive_5xx": 0,
        "enforcing_consecutive_gateway_failure": 0,
        "enforcing_success_rate": 0,
        "enforcing_local_origin_success_rate": 0,
        "base_ejection_time": "5s",
        "max_ejection_time": "10s",
        "max_ejection_percent": 100,
        "interval": "1s",
    });
    let mut b = json!({
        "node": {"id": s.node_id, "cluster": s.group, "locality": locality},
        "admin": {"address": {"socket_address": {"address": s.admin_address, "port_value": s.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {"retry_back_off": {"base_interval": XDS_RETRY_BASE, "max_interval": XDS_RETRY_MAX}},
                }}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [cluster]},
    });
    add_stats_sink(s, &mut b)?;
    Ok(b)
}

/// Envoy pushes its counters (`envoy.stat_sinks.metrics_service`) to the
/// controllers through the xDS cluster, so the stream gets the same
/// transport, priorities and failover as ADS. Counters go as totals, not
/// deltas: the controllers take differences themselves, and a lost message
/// then loses nothing. Histograms only as summaries: the controllers read
/// none, and full buckets would multiply the message.
fn add_stats_sink(s: &BootstrapSpec, b: &mut Value) -> Result<(), BootstrapError> {
    let Some(every) = s.stats_flush_interval else {
        return Ok(());
    };
    if every < Duration::from_secs(1) || every > Duration::from_secs(300) {
        return Err(BootstrapError::StatsFlushInterval(every));
    }
    b["stats_flush_interval"] = json!(format!("{}.{:03}s", every.as_secs(), every.subsec_millis()));
    b["stats_sinks"] = json!([{
        "name": "envoy.stat_sinks.metrics_service",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "report_counters_as_deltas": false,
            "emit_tags_as_labels": false,
            "histogram_emit_mode": "SUMMARY",
            "grpc_service": {"envoy_grpc": {"cluster_name": XDS_CLUSTER}},
        },
    }]);
    Ok(())
}

#[cfg(test)]
mod tests;
