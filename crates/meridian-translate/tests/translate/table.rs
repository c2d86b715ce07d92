//! Table-driven tests around one `check` helper: a model, a viewer region
//! and the facts expected in the output, each written as
//! `type/name: text that must appear in the resource's Debug form`.
//! Pseudo types decode what is nested inside Any: `hcm/`, `tcp/` and `tls/`
//! (of a listener), and `priorities/<service>` lists `zone=priority` in
//! output order.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster,
        core::v3::transport_socket,
        endpoint::v3::ClusterLoadAssignment,
        listener::v3::{filter, Listener},
        route::v3::RouteConfiguration,
    },
    extensions::{
        filters::network::{
            http_connection_manager::v3::HttpConnectionManager, tcp_proxy::v3::TcpProxy,
        },
        transport_sockets::tls::v3::{DownstreamTlsContext, Secret},
    },
};
use meridian_translate::{
    translate, ConfigSourceKind, Resources, TranslateOptions, Viewer, CLUSTER, ENDPOINT, LISTENER,
    ROUTE, SECRET,
};
use prost::Message;

use crate::{endpoints_for, example, must_parse, must_translate};

/// Each resource of `type_url` as `prefix/name` -> the Debug form of its
/// message.
fn render_each<M: Message + Default + std::fmt::Debug>(
    out: &mut BTreeMap<String, String>,
    res: &Resources,
    type_url: &str,
    prefix: &str,
) {
    for r in res.of_type(type_url) {
        let m = M::decode(&*r.encoded).unwrap();
        out.insert(format!("{prefix}/{}", r.name), format!("{m:?}"));
    }
}

fn render(res: &Resources) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    render_each::<Cluster>(&mut out, res, CLUSTER, "cluster");
    for r in res.of_type(ENDPOINT) {
        let cla = ClusterLoadAssignment::decode(&*r.encoded).unwrap();
        let prio: Vec<String> = cla
            .endpoints
            .iter()
            .map(|l| format!("{}={}", l.locality.as_ref().unwrap().zone, l.priority))
            .collect();
        out.insert(format!("priorities/{}", r.name), prio.join(" "));
        out.insert(format!("endpoints/{}", r.name), format!("{cla:?}"));
    }
    render_each::<RouteConfiguration>(&mut out, res, ROUTE, "route");
    render_each::<Secret>(&mut out, res, SECRET, "secret");
    for r in res.of_type(LISTENER) {
        let l = Listener::decode(&*r.encoded).unwrap();
        for chain in &l.filter_chains {
            for f in &chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url.ends_with("HttpConnectionManager") {
                    out.insert(
                        format!("hcm/{}", r.name),
                        format!("{:?}", HttpConnectionManager::decode(&*any.value).unwrap()),
                    );
                } else {
                    out.insert(
                        format!("tcp/{}", r.name),
                        format!("{:?}", TcpProxy::decode(&*any.value).unwrap()),
                    );
                }
            }
            if let Some(transport_socket::ConfigType::TypedConfig(any)) = chain
                .transport_socket
                .as_ref()
                .and_then(|t| t.config_type.as_ref())
            {
                out.insert(
                    format!("tls/{}", r.name),
                    format!("{:?}", DownstreamTlsContext::decode(&*any.value).unwrap()),
                );
            }
        }
        out.insert(format!("listener/{}", r.name), format!("{l:?}"));
    }
    out
}

fn check_with(yaml: &str, viewer: Viewer, opts: TranslateOptions, expected: &[&str]) {
    let config = must_parse(yaml);
    let services: Vec<&str> = config.services().map(|(n, _)| n).collect();
    let res = translate(&config, &endpoints_for(&services), &viewer, &opts).unwrap();
    let rendered = render(&res);
    for line in expected {
        let (key, needle) = line.split_once(": ").unwrap_or((line, ""));
        if needle == "<absent>" {
            assert!(!rendered.contains_key(key), "{key} should be absent");
            continue;
        }
        let Some(text) = rendered.get(key) else {
            panic!(
                "no {key} in output; have {:?}",
                rendered.keys().collect::<Vec<_>>()
            )
        };
        assert!(
            text.contains(needle),
            "{key}: expected to find\n  {needle}\nin\n  {text}"
        );
    }
}

fn check(yaml: &str, region: &str, expected: &[&str]) {
    check_with(
        yaml,
        Viewer::new(region, None),
        TranslateOptions::default(),
        expected,
    );
}

const REGIONS_YAML: &str = "
kind: region
name: us-east
spec: {failover: [eu-west, ap-south]}
---
kind: region
name: eu-west
spec: {failover: [ap-south]}
---
kind: region
name: ap-south
spec: {failover: [us-east, eu-west]}
";

fn with_regions(extra: &str) -> String {
    format!("{REGIONS_YAML}---\n{extra}")
}

#[test]
fn failover_priorities_per_viewer_region() {
    let yaml = with_regions("kind: service\nname: web\nspec: {port: 8080}");
    // Own region first, then the Region object's order; regions it does not
    // list follow in name order.
    check(&yaml, "us-east", &["priorities/web: us-east-a=0 us-east-b=0 eu-west-a=1 eu-west-b=1 ap-south-a=2 ap-south-b=2"]);
    check(&yaml, "eu-west", &["priorities/web: eu-west-a=0 eu-west-b=0 ap-south-a=1 ap-south-b=1 us-east-a=2 us-east-b=2"]);
    check(&yaml, "ap-south", &["priorities/web: ap-south-a=0 ap-south-b=0 us-east-a=1 us-east-b=1 eu-west-a=2 eu-west-b=2"]);
    // A viewer region with no endpoints: the first failover region is P0.
    check(&yaml, "sa-east", &["priorities/web: ap-south-a=0 ap-south-b=0 eu-west-a=1 eu-west-b=1 us-east-a=2 us-east-b=2"]);
}

#[test]
fn service_failover_order_and_exclusion() {
    let yaml = with_regions("kind: service\nname: web\nspec: {port: 8080, failover: {regions: [ap-south], excludeRegions: [eu-west]}}");
    check(
        &yaml,
        "us-east",
        &["priorities/web: us-east-a=0 us-east-b=0 ap-south-a=1 ap-south-b=1"],
    );
    // The viewer's own region is never excluded.
    check(&yaml, "eu-west", &["priorities/web: eu-west-a=0 eu-west-b=0 ap-south-a=1 ap-south-b=1 us-east-a=2 us-east-b=2"]);
    check(
        &yaml,
        "ap-south",
        &["priorities/web: ap-south-a=0 ap-south-b=0 us-east-a=1 us-east-b=1"],
    );
}

#[test]
fn overprovisioning_factor() {
    let factor = |spec: &str, want: u32| {
        let yaml = with_regions(&format!(
            "kind: service\nname: web\nspec: {{port: 8080{spec}}}"
        ));
        check(
            &yaml,
            "us-east",
            &[&format!(
                "endpoints/web: overprovisioning_factor: Some(UInt32Value {{ value: {want} }})"
            )],
        );
    };
    factor("", 140);
    factor(", failover: {thresholdPercent: 70}", 142);
    factor(", failover: {thresholdPercent: 50}", 200);
    factor(", failover: {thresholdPercent: 100}", 100);
    factor(", failover: {allOrNothing: true}", 100000);
}

#[test]
fn endpoints_weights_health_and_port() {
    let yaml = with_regions("kind: service\nname: web\nspec: {port: 8080}");
    check(
        &yaml,
        "us-east",
        &[
            "endpoints/web: cluster_name: \"web\"",
            "endpoints/web: locality: Some(Locality { region: \"us-east\", zone: \"us-east-a\", sub_zone: \"\" })",
            "endpoints/web: address: \"10.0.0.1\", resolver_name: \"\", ipv4_compat: false, network_namespace_filepath: \"\", port_specifier: Some(PortValue(8080))",
            "endpoints/web: health_status: Healthy, metadata: None, load_balancing_weight: Some(UInt32Value { value: 2 })",
            "endpoints/web: health_status: Unhealthy",
        ],
    );
}

#[test]
fn cluster_fields() {
    let yaml = with_regions(
        "kind: service
name: web
spec:
  protocol: grpc
  port: 8080
  loadBalancing: leastRequest
  connectTimeout: 250ms
  circuitBreakers: {maxConnections: 10, maxPendingRequests: 20, maxRequests: 30, maxRetries: 4}
  outlierDetection: {consecutive5xx: 7, interval: 2s, baseEjectionTime: 1m, maxEjectionPercent: 50}
  healthCheck: {protocol: grpc, grpcService: pkg.Svc, interval: 3s, timeout: 500ms, healthyThreshold: 4, unhealthyThreshold: 6}
---
kind: service
name: plain
spec: {port: 80, loadBalancing: ringHash, healthCheck: {protocol: http, path: /ready}}
---
kind: service
name: raw
spec: {port: 5432, protocol: tcp, loadBalancing: maglev, healthCheck: {protocol: tcp}}
---
kind: service
name: rnd
spec: {port: 81, protocol: http2, loadBalancing: random}",
    );
    check(
        &yaml,
        "us-east",
        &[
            "cluster/web: name: \"web\"",
            "cluster/web: connect_timeout: Some(Duration { seconds: 0, nanos: 250000000 })",
            "cluster/web: lb_policy: LeastRequest",
            "cluster/web: cluster_discovery_type: Some(Type(Eds))",
            "cluster/web: eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ConfigSource { authorities: [], initial_fetch_timeout: None, resource_api_version: V3, config_source_specifier: Some(Ads(AggregatedConfigSource)) }), service_name: \"web\" })",
            "cluster/web: max_connections: Some(UInt32Value { value: 10 }), max_pending_requests: Some(UInt32Value { value: 20 }), max_requests: Some(UInt32Value { value: 30 }), max_retries: Some(UInt32Value { value: 4 })",
            "cluster/web: consecutive_5xx: Some(UInt32Value { value: 7 }), interval: Some(Duration { seconds: 2, nanos: 0 }), base_ejection_time: Some(Duration { seconds: 60, nanos: 0 }), max_ejection_percent: Some(UInt32Value { value: 50 })",
            "cluster/web: GrpcHealthCheck(GrpcHealthCheck { service_name: \"pkg.Svc\"",
            "cluster/web: timeout: Some(Duration { seconds: 0, nanos: 500000000 }), interval: Some(Duration { seconds: 3, nanos: 0 })",
            "cluster/web: unhealthy_threshold: Some(UInt32Value { value: 6 }), healthy_threshold: Some(UInt32Value { value: 4 })",
            "cluster/web: type_url: \"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"",
            // Defaults: 5 s connect timeout, round robin, outlier detection
            // always on with Envoy's defaults, no health check.
            "cluster/plain: connect_timeout: Some(Duration { seconds: 5, nanos: 0 })",
            "cluster/plain: lb_policy: RingHash",
            "cluster/plain: HttpHealthCheck(HttpHealthCheck { host: \"\", path: \"/ready\"",
            "cluster/plain: typed_extension_protocol_options: {}",
            "cluster/raw: lb_policy: Maglev",
            "cluster/raw: TcpHealthCheck(TcpHealthCheck { send: None, receive: [], proxy_protocol_config: None })",
            "cluster/raw: consecutive_5xx: Some(UInt32Value { value: 5 }), interval: Some(Duration { seconds: 10, nanos: 0 }), base_ejection_time: Some(Duration { seconds: 30, nanos: 0 }), max_ejection_percent: Some(UInt32Value { value: 10 })",
            "cluster/rnd: lb_policy: Random",
            "cluster/rnd: health_checks: []",
        ],
    );
}

/// Health checks run from an Envoy's first second (no_traffic_interval),
/// with every interval from the model or its default.
#[test]
fn health_check_intervals() {
    let yaml = with_regions(
        "kind: service
name: set
spec:
  port: 80
  healthCheck: {protocol: http, interval: 2s, noTrafficInterval: 500ms, unhealthyInterval: 3s, unhealthyEdgeInterval: 400ms, healthyEdgeInterval: 700ms}
---
kind: service
name: unset
spec: {port: 80, healthCheck: {protocol: tcp, interval: 1s, unhealthyInterval: 4s}}",
    );
    let d = |s: i64, ms: i32| {
        format!(
            "Some(Duration {{ seconds: {s}, nanos: {} }})",
            ms * 1_000_000
        )
    };
    check(
        &yaml,
        "us-east",
        &[
            &format!("cluster/set: interval: {}", d(2, 0)),
            &format!("cluster/set: no_traffic_interval: {}", d(0, 500)),
            &format!("cluster/set: unhealthy_interval: {}, unhealthy_edge_interval: {}, healthy_edge_interval: {}", d(3, 0), d(0, 400), d(0, 700)),
            // Unset: no-traffic and healthy-edge follow the interval, the
            // unhealthy edge follows the unhealthy interval.
            &format!("cluster/unset: no_traffic_interval: {}", d(1, 0)),
            &format!("cluster/unset: unhealthy_interval: {}, unhealthy_edge_interval: {}, healthy_edge_interval: {}", d(4, 0), d(4, 0), d(1, 0)),
        ],
    );
}

/// A service with `failover` gets defaults that keep a failing region out
/// (every host ejectable, gateway failures enforced, a 1 s sweep, a merge
/// window well under a second); one without keeps Envoy's; set values win.
#[test]
fn failover_defaults() {
    let yaml = with_regions(
        "kind: service
name: plain
spec: {port: 80}
---
kind: service
name: fo
spec: {port: 80, failover: {}}
---
kind: service
name: set
spec:
  port: 80
  failover: {thresholdPercent: 50}
  updateMergeWindow: 0ms
  panicThresholdPercent: 0
  outlierDetection: {consecutiveGatewayFailure: 3, maxEjectionTime: 1m, maxEjectionPercent: 50, interval: 2s}",
    );
    let d = |s: i64| format!("Some(Duration {{ seconds: {s}, nanos: 0 }})");
    check(
        &yaml,
        "us-east",
        &[
            &format!("cluster/plain: interval: {}, base_ejection_time: {}, max_ejection_percent: Some(UInt32Value {{ value: 10 }})", d(10), d(30)),
            "cluster/plain: consecutive_gateway_failure: None",
            "cluster/plain: enforcing_consecutive_gateway_failure: None",
            &format!("cluster/plain: max_ejection_time: {}", d(300)),
            "cluster/plain: healthy_panic_threshold: Some(Percent { value: 50.0 }), update_merge_window: Some(Duration { seconds: 1, nanos: 0 })",
            &format!("cluster/fo: interval: {}, base_ejection_time: {}, max_ejection_percent: Some(UInt32Value {{ value: 100 }})", d(1), d(30)),
            "cluster/fo: consecutive_gateway_failure: Some(UInt32Value { value: 5 })",
            "cluster/fo: enforcing_consecutive_gateway_failure: Some(UInt32Value { value: 100 })",
            "cluster/fo: healthy_panic_threshold: Some(Percent { value: 50.0 }), update_merge_window: Some(Duration { seconds: 0, nanos: 100000000 })",
            &format!("cluster/set: interval: {}, base_ejection_time: {}, max_ejection_percent: Some(UInt32Value {{ value: 50 }})", d(2), d(30)),
            "cluster/set: consecutive_gateway_failure: Some(UInt32Value { value: 3 })",
            &format!("cluster/set: max_ejection_time: {}", d(60)),
            "cluster/set: healthy_panic_threshold: Some(Percent { value: 0.0 }), update_merge_window: Some(Duration { seconds: 0, nanos: 0 })",
        ],
    );
}

#[test]
fn grpc_config_source_option() {
    let yaml = with_regions("kind: service\nname: web\nspec: {port: 8080}");
    let opts = TranslateOptions {
        config_source: ConfigSourceKind::Grpc {
            cluster: "meridian".into(),
        },
    };
    check_with(
        &yaml,
        Viewer::new("us-east", None),
        opts,
        &[
            "cluster/web: api_type: Grpc",
            "cluster/web: cluster_name: \"meridian\"",
        ],
    );
}

#[test]
fn routes_and_listeners_of_the_example() {
    let ex = example();
    check_with(
        &ex,
        Viewer::new("eu-west", Some("edge")),
        TranslateOptions::default(),
        &[
            // Listeners: address, port, RDS over ADS, router, TLS by SDS.
            "listener/public-http: address: \"0.0.0.0\", resolver_name: \"\", ipv4_compat: false, network_namespace_filepath: \"\", port_specifier: Some(PortValue(10000))",
            "hcm/public-http: stat_prefix: \"public-http\"",
            "hcm/public-http: route_specifier: Some(Rds(Rds { config_source: Some(ConfigSource { authorities: [], initial_fetch_timeout: None, resource_api_version: V3, config_source_specifier: Some(Ads(AggregatedConfigSource)) }), route_config_name: \"public-http\" }))",
            "hcm/public-http: name: \"envoy.filters.http.router\"",
            "tls/public-http: <absent>",
            "listener/public-https: port_specifier: Some(PortValue(10443))",
            "tls/public-https: tls_certificate_sds_secret_configs: [SdsSecretConfig { name: \"shop-tls\", sds_config: Some(ConfigSource {",
            "secret/shop-tls: name: \"shop-tls\"",
            "secret/shop-tls: InlineString(\"-----BEGIN CERTIFICATE-----",
            "tcp/catalog-tcp: stat_prefix: \"catalog-tcp\"",
            "tcp/catalog-tcp: cluster_specifier: Some(Cluster(\"catalog\"))",
            // Route table: virtual host per Route, rules in order.
            "route/public-http: name: \"public-http\", virtual_hosts: [VirtualHost { name: \"shop\", domains: [\"shop.example.com\", \"*.shop.example.com\"]",
            "route/public-http: path_specifier: Some(Prefix(\"/catalog.v1.Catalog/\"))",
            "route/public-http: HeaderMatcher { name: \"content-type\", invert_match: false, treat_missing_header_as_empty: false, header_match_specifier: Some(StringMatch(StringMatcher { ignore_case: false, match_pattern: Some(Prefix(\"application/grpc\")) }))",
            "route/public-http: timeout: Some(Duration { seconds: 2, nanos: 0 })",
            "route/public-http: HeaderMatcher { name: \":method\", invert_match: false, treat_missing_header_as_empty: false, header_match_specifier: Some(StringMatch(StringMatcher { ignore_case: false, match_pattern: Some(SafeRegex(RegexMatcher { regex: \"^(GET|HEAD)$\"",
            "route/public-http: WeightedClusters(WeightedCluster { clusters: [ClusterWeight { name: \"storefront\", cluster_header: \"\", weight: Some(UInt32Value { value: 90 })",
            "route/public-http: ClusterWeight { name: \"storefront-canary\", cluster_header: \"\", weight: Some(UInt32Value { value: 10 })",
            "route/public-http: retry_on: \"5xx,connect-failure,reset\", num_retries: Some(UInt32Value { value: 3 }), per_try_timeout: Some(Duration { seconds: 5, nanos: 0 })",
            "route/public-http: retry_back_off: Some(RetryBackOff { base_interval: Some(Duration { seconds: 0, nanos: 25000000 }), max_interval: Some(Duration { seconds: 0, nanos: 250000000 }) })",
            "route/public-http: prefix_rewrite: \"/\"",
            "route/public-http: request_mirror_policies: [RequestMirrorPolicy { cluster: \"storefront-canary\", cluster_header: \"\", runtime_fraction: Some(RuntimeFractionalPercent { default_value: Some(FractionalPercent { numerator: 5, denominator: Hundred }),",
            "route/public-http: request_headers_to_add: [HeaderValueOption { header: Some(HeaderValue { key: \"x-meridian-route\", value: \"shop-api\", raw_value: [] }), append: None, append_action: OverwriteIfExistsOrAdd",
            "route/public-http: request_headers_to_remove: [\"x-debug\"]",
            "route/public-http: response_headers_to_add: [HeaderValueOption { header: Some(HeaderValue { key: \"x-served-by\", value: \"meridian\", raw_value: [] }), append: None, append_action: AppendIfExistsOrAdd",
            "route/public-http: SafeRegex(RegexMatcher { regex: \"^/old-(home|index)$\"",
            "route/public-http: response_code: PermanentRedirect",
            "route/public-http: PathRedirect(\"/\")",
            "route/public-http: DirectResponse(DirectResponseAction { status: 200, body: Some(DataSource { watched_directory: None, specifier: Some(InlineString(\"User-agent: *\\nDisallow: /api/\\n\")) })",
            "route/public-http: timeout: None, idle_timeout: None",
            "route/public-http: cluster_specifier: Some(Cluster(\"storefront\")), host_rewrite_specifier: None",
            // The catalog service is never sent ap-south endpoints unless the
            // proxy is in ap-south.
            "priorities/catalog: eu-west-a=0 eu-west-b=0 us-east-a=1 us-east-b=1",
            "priorities/storefront: eu-west-a=0 eu-west-b=0 us-east-a=1 us-east-b=1 ap-south-a=2 ap-south-b=2",
        ],
    );
    // Without the edge group the TCP listener is not sent.
    check(&ex, "ap-south", &["listener/catalog-tcp: <absent>", "listener/public-http: name: \"public-http\"", "priorities/catalog: ap-south-a=0 ap-south-b=0 eu-west-a=1 eu-west-b=1 us-east-a=2 us-east-b=2"]);
}

#[test]
fn query_params_and_redirect_fields() {
    let yaml = with_regions(
        "kind: service
name: web
spec: {port: 8080}
---
kind: route
name: r
spec:
  hosts: [a.example]
  rules:
    - matches: [{path: {exact: /x}, queryParams: [{name: q, exact: v}, {name: p, present: true}, {name: re, regex: \"^a\"}], headers: [{name: x-h, present: true}]}]
      backends: [{service: web}]
      rewrite: {host: b.example}
    - redirect: {scheme: https, host: c.example, port: 8443, code: 307}
---
kind: listener
name: l
spec: {port: 80, address: 10.1.2.3, routes: [r]}",
    );
    check(
        &yaml,
        "us-east",
        &[
            "route/l: path_specifier: Some(Path(\"/x\"))",
            "route/l: QueryParameterMatcher { name: \"q\", query_parameter_match_specifier: Some(StringMatch(StringMatcher { ignore_case: false, match_pattern: Some(Exact(\"v\")) })) }",
            "route/l: QueryParameterMatcher { name: \"p\", query_parameter_match_specifier: Some(PresentMatch(true)) }",
            "route/l: QueryParameterMatcher { name: \"re\", query_parameter_match_specifier: Some(StringMatch(StringMatcher { ignore_case: false, match_pattern: Some(SafeRegex(RegexMatcher { regex: \"^a\"",
            "route/l: header_match_specifier: Some(PresentMatch(true))",
            "route/l: host_rewrite_specifier: Some(HostRewriteLiteral(\"b.example\"))",
            "route/l: host_redirect: \"c.example\", port_redirect: 8443",
            "route/l: response_code: TemporaryRedirect",
            "route/l: SchemeRedirect(\"https\")",
            "listener/l: address: \"10.1.2.3\"",
        ],
    );
}

#[test]
fn versions_are_hashes_of_bytes() {
    let config = must_parse(&example());
    let eps = endpoints_for(&["storefront", "storefront-canary", "catalog"]);
    let res = must_translate(&config, &eps, "us-east");
    use sha2::Digest;
    for by_name in res.by_type.values() {
        for r in by_name.values() {
            assert_eq!(r.version, hex::encode(sha2::Sha256::digest(&r.encoded)));
        }
    }
    assert_eq!(
        res.by_type.keys().copied().collect::<Vec<_>>(),
        vec![CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET]
    );
    // Debug of a secret resource shows no key material.
    let secret = res.get(SECRET, "shop-tls").unwrap();
    assert!(!format!("{secret:?}").contains("PRIVATE"));
}

/// One Envoy route as the retry tests read it: its name, the `:method`
/// regex it matches (if any), and its retry policy as `on/retries/host
/// predicate/priority update frequency/status codes`.
fn retry_table(yaml: &str) -> Vec<(String, Option<String>, Option<String>)> {
    use envoy_types::pb::envoy::{
        config::route::v3::{header_matcher::HeaderMatchSpecifier, retry_policy, route},
        extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig,
        r#type::matcher::v3::string_matcher::MatchPattern,
    };
    let config = must_parse(yaml);
    let services: Vec<&str> = config.services().map(|(n, _)| n).collect();
    let res = must_translate(&config, &endpoints_for(&services), "us-east");
    let rc = RouteConfiguration::decode(&*res.get(ROUTE, "l").unwrap().encoded).unwrap();
    let mut out = Vec::new();
    for r in &rc.virtual_hosts[0].routes {
        let method = r.r#match.as_ref().unwrap().headers.iter().find_map(|h| {
            match (&h.name[..], &h.header_match_specifier) {
                (":method", Some(HeaderMatchSpecifier::StringMatch(m))) => match &m.match_pattern {
                    Some(MatchPattern::SafeRegex(re)) => Some(re.regex.clone()),
                    _ => None,
                },
                _ => None,
            }
        });
        let policy = match &r.action {
            Some(route::Action::Route(ra)) => ra.retry_policy.as_ref().map(|p| {
                let hosts: Vec<&str> = p.retry_host_predicate.iter().map(|h| &h.name[..]).collect();
                let prio = p.retry_priority.as_ref().map(|rp| {
                    assert_eq!(rp.name, "envoy.retry_priorities.previous_priorities");
                    let Some(retry_policy::retry_priority::ConfigType::TypedConfig(any)) =
                        &rp.config_type
                    else {
                        panic!("retry priority without config")
                    };
                    PreviousPrioritiesConfig::decode(&*any.value)
                        .unwrap()
                        .update_frequency
                });
                format!(
                    "{}/{}/{}x{}/{:?}/{:?}",
                    p.retry_on,
                    p.num_retries.unwrap().value,
                    hosts.join("+"),
                    p.host_selection_retry_max_attempts,
                    prio,
                    p.retriable_status_codes
                )
            }),
            _ => None,
        };
        out.push((r.name.clone(), method, policy));
    }
    out
}

fn retry_yaml(rules: &str) -> String {
    with_regions(&format!(
        "kind: service
name: fo
spec: {{port: 8080, failover: {{}}}}
---
kind: service
name: plain
spec: {{port: 8081}}
---
kind: route
name: r
spec:
  hosts: [\"*\"]
  rules:
{rules}
---
kind: listener
name: l
spec: {{port: 80, routes: [r]}}"
    ))
}

/// The failover retry default: idempotent methods retried on 5xx, every
/// other method only on failures that never reached the application, both
/// to other hosts and then other regions; a rule's own `retries` replaces
/// it (for every method), `attempts: 0` turns it off, and a service
/// without failover gets no default.
#[test]
fn failover_services_get_retries_to_other_hosts_and_regions() {
    const PH: &str = "envoy.retry_host_predicates.previous_hosts";
    const IDEM: &str = "^(GET|HEAD|OPTIONS|TRACE|PUT|DELETE)$";
    let s = |x: &str| Some(x.to_string());
    let cases: Vec<(&str, Vec<(String, Option<String>, Option<String>)>)> = vec![
        (
            "    - backends: [{service: fo}]",
            vec![
                ("r/0/0".into(), s(IDEM), s(&format!("5xx,reset,connect-failure,refused-stream/2/{PH}x3/Some(2)/[]"))),
                ("r/0/0/non-idempotent".into(), None, s(&format!("connect-failure,refused-stream,reset-before-request/2/{PH}x3/Some(2)/[]"))),
            ],
        ),
        (
            // A rule already restricted to methods keeps only its share.
            "    - matches: [{methods: [GET, POST]}]\n      backends: [{service: fo}, {service: plain}]\n    - matches: [{methods: [PATCH]}]\n      backends: [{service: fo}]\n    - matches: [{methods: [HEAD]}]\n      backends: [{service: fo}]",
            vec![
                ("r/0/0".into(), s("^(GET)$"), s(&format!("5xx,reset,connect-failure,refused-stream/2/{PH}x3/Some(2)/[]"))),
                ("r/0/0/non-idempotent".into(), s("^(GET|POST)$"), s(&format!("connect-failure,refused-stream,reset-before-request/2/{PH}x3/Some(2)/[]"))),
                ("r/1/0".into(), s("^(PATCH)$"), s(&format!("connect-failure,refused-stream,reset-before-request/2/{PH}x3/Some(2)/[]"))),
                ("r/2/0".into(), s("^(HEAD)$"), s(&format!("5xx,reset,connect-failure,refused-stream/2/{PH}x3/Some(2)/[]"))),
            ],
        ),
        (
            "    - backends: [{service: fo}]\n      retries: {on: [retriable-status-codes, reset], attempts: 1}\n    - backends: [{service: fo}]\n      retries: {attempts: 0}\n    - backends: [{service: plain}]\n    - backends: [{service: plain}]\n      retries: {on: [retriable-status-codes], statusCodes: [502, 503], attempts: 3}",
            vec![
                ("r/0/0".into(), None, s(&format!("retriable-status-codes,reset/1/{PH}x3/Some(1)/[503]"))),
                ("r/1/0".into(), None, None),
                ("r/2/0".into(), None, None),
                ("r/3/0".into(), None, s(&format!("retriable-status-codes/3/{PH}x3/None/[502, 503]"))),
            ],
        ),
    ];
    for (rules, want) in cases {
        assert_eq!(retry_table(&retry_yaml(rules)), want, "rules:\n{rules}");
    }
}
