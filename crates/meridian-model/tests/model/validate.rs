use meridian_model::{spec::RegionSpec, ConfigSet, Kind, Object, Spec, MAX_OBJECT_BYTES};

use crate::{check, must_parse};

const BASE: &str = "
kind: region
name: us-east
spec: {}
---
kind: service
name: web
spec:
  port: 8080
";

fn with_base(extra: &str) -> Vec<String> {
    check(&format!("{BASE}---\n{extra}"))
}

#[test]
fn weight_range_exact_message() {
    let errs = with_base(
        "kind: route\nname: frontend\nspec:\n  hosts: [a.com]\n  rules:\n    - backends: [{service: web}]\n    - backends: [{service: web}]\n    - backends: [{service: web, weight: 0}]\n",
    );
    assert_eq!(
        errs,
        vec!["route/frontend: rules[2].backends[0].weight: must be between 1 and 10000"]
    );
}

#[test]
fn names() {
    let cases = [
        (
            "Web",
            "name contains 'W'; use lowercase letters a-z, digits 0-9 and '-'",
        ),
        ("1web", "name must start with a lowercase letter"),
        ("web-", "name must end with a letter or digit"),
        (
            "web_1",
            "name contains '_'; use lowercase letters a-z, digits 0-9 and '-'",
        ),
    ];
    for (name, reason) in cases {
        let errs = check(&format!("kind: region\nname: {name}\nspec: {{}}\n"));
        assert_eq!(errs, vec![format!("region/{name}: {reason}")]);
    }
    let long = "a".repeat(64);
    let errs = check(&format!("kind: region\nname: {long}\nspec: {{}}\n"));
    assert_eq!(
        errs,
        vec![format!(
            "region/{long}: name is 64 characters long, at most 63 allowed"
        )]
    );
    assert!(check(&format!(
        "kind: region\nname: {}\nspec: {{}}\n",
        "a".repeat(63)
    ))
    .is_empty());
}

#[test]
fn size_limit() {
    let big = Object::new(
        "big",
        Spec::Region(RegionSpec {
            failover: vec!["abcdefghij".into(); MAX_OBJECT_BYTES / 12],
        }),
    );
    let errs: Vec<String> = big.validate().iter().map(ToString::to_string).collect();
    assert!(
        errs.iter().any(|e| e.starts_with("region/big: object is ")
            && e.ends_with("at most 1048576 (1 MiB) allowed")),
        "{errs:?}"
    );
}

/// Each rule of every object kind, by the exact message it produces.
#[test]
fn per_object_rules() {
    let cases: &[(&str, &str)] = &[
        ("kind: service\nname: s\nspec: {port: 0}", "service/s: port: must be between 1 and 65535"),
        ("kind: service\nname: s\nspec: {port: 1, connectTimeout: 0ms}", "service/s: connectTimeout: must be between 1ms and 5m"),
        ("kind: service\nname: s\nspec: {port: 1, circuitBreakers: {maxRequests: 0}}", "service/s: circuitBreakers.maxRequests: must be between 1 and 1000000"),
        ("kind: service\nname: s\nspec: {port: 1, outlierDetection: {maxEjectionPercent: 101}}", "service/s: outlierDetection.maxEjectionPercent: must be between 0 and 100"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: tcp, path: /h}}", "service/s: healthCheck.path: only allowed with protocol http"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: http, path: h}}", "service/s: healthCheck.path: must start with '/'"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: http, interval: 1s, timeout: 2s}}", "service/s: healthCheck.timeout: must not exceed the interval (1s)"),
        ("kind: service\nname: s\nspec: {port: 1, protocol: tcp, healthCheck: {protocol: http}}", "service/s: healthCheck.protocol: a tcp service can only have a tcp health check"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: http, noTrafficInterval: 50ms}}", "service/s: healthCheck.noTrafficInterval: must be between 100ms and 1h"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: http, unhealthyInterval: 2h}}", "service/s: healthCheck.unhealthyInterval: must be between 100ms and 1h"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: http, unhealthyEdgeInterval: 0ms}}", "service/s: healthCheck.unhealthyEdgeInterval: must be between 100ms and 1h"),
        ("kind: service\nname: s\nspec: {port: 1, healthCheck: {protocol: http, healthyEdgeInterval: 99ms}}", "service/s: healthCheck.healthyEdgeInterval: must be between 100ms and 1h"),
        ("kind: service\nname: s\nspec: {port: 1, outlierDetection: {consecutiveGatewayFailure: 0}}", "service/s: outlierDetection.consecutiveGatewayFailure: must be between 1 and 1000"),
        ("kind: service\nname: s\nspec: {port: 1, outlierDetection: {maxEjectionTime: 10s}}", "service/s: outlierDetection.maxEjectionTime: must not be less than baseEjectionTime (30s)"),
        ("kind: service\nname: s\nspec: {port: 1, outlierDetection: {maxEjectionTime: 2h, baseEjectionTime: 1s}}", "service/s: outlierDetection.maxEjectionTime: must be between 100ms and 1h"),
        ("kind: service\nname: s\nspec: {port: 1, updateMergeWindow: 2m}", "service/s: updateMergeWindow: must be between 0s and 1m"),
        ("kind: service\nname: s\nspec: {port: 1, panicThresholdPercent: 101}", "service/s: panicThresholdPercent: must be between 0 and 100"),
        ("kind: service\nname: s\nspec: {port: 1, failover: {thresholdPercent: 0}}", "service/s: failover.thresholdPercent: must be between 1 and 100"),
        ("kind: service\nname: s\nspec: {port: 1, failover: {thresholdPercent: 50, allOrNothing: true}}", "service/s: failover.thresholdPercent: cannot be combined with allOrNothing"),
        ("kind: service\nname: s\nspec: {port: 1, failover: {regions: [us-east], excludeRegions: [us-east]}}", "service/s: failover.regions[0]: region \"us-east\" is also excluded"),
        ("kind: region\nname: r\nspec: {failover: [r]}", "region/r: failover[0]: a region does not fail over to itself; it is always first"),
        ("kind: listener\nname: l\nspec: {port: 80, address: localhost, protocol: tcp, service: web}", "listener/l: address: \"localhost\" is not an IP address"),
        ("kind: listener\nname: l\nspec: {port: 80}", "listener/l: routes: an http listener needs at least one route"),
        ("kind: listener\nname: l\nspec: {port: 80, protocol: tcp}", "listener/l: service: a tcp listener needs the service it forwards to"),
        ("kind: route\nname: r\nspec: {hosts: [], rules: [{backends: [{service: web}]}]}", "route/r: hosts: at least one host is required; use \"*\" for any"),
        ("kind: route\nname: r\nspec: {hosts: [\"a.*.com\"], rules: [{backends: [{service: web}]}]}", "route/r: hosts[0]: \"a.*.com\": '*' is only allowed once, at the start or the end"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: []}", "route/r: rules: at least one rule is required"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{}]}", "route/r: rules[0]: exactly one of backends, redirect, directResponse is required, found none"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], directResponse: {status: 200}}]}", "route/r: rules[0]: exactly one of backends, redirect, directResponse is required, found backends, directResponse"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{directResponse: {status: 200}, timeout: 1s}]}", "route/r: rules[0].timeout: only allowed with backends"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{directResponse: {status: 99}}]}", "route/r: rules[0].directResponse.status: must be between 200 and 599"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{matches: [{path: {regex: \"(\"}}], backends: [{service: web}]}]}", "route/r: rules[0].matches[0].path.regex: invalid regex: error: unclosed group"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{matches: [{path: {exact: /a, prefix: /b}}], backends: [{service: web}]}]}", "route/r: rules[0].matches[0].path: exactly one of exact, prefix, regex is required, found exact, prefix"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{matches: [{methods: [GTE]}], backends: [{service: web}]}]}", "route/r: rules[0].matches[0].methods[0]: unknown method \"GTE\", did you mean \"GET\"?"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{matches: [{headers: [{name: X-A, exact: b}]}], backends: [{service: web}]}]}", "route/r: rules[0].matches[0].headers[0].name: \"X-A\" is not a lowercase header name"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], retries: {on: [5xxx]}}]}", "route/r: rules[0].retries.on[0]: unknown retry condition \"5xxx\", did you mean \"5xx\"?"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], retries: {attempts: 11}}]}", "route/r: rules[0].retries.attempts: must be between 0 and 10"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], retries: {on: [retriable-status-codes], statusCodes: [503, 200]}}]}", "route/r: rules[0].retries.statusCodes[1]: must be between 400 and 599"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], retries: {on: [retriable-status-codes], statusCodes: [503, 503]}}]}", "route/r: rules[0].retries.statusCodes[1]: status code 503 is listed twice"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], retries: {on: [5xx], statusCodes: [503]}}]}", "route/r: rules[0].retries.statusCodes: only used with the condition retriable-status-codes in retries.on"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], retries: {backoff: {base: 1s, max: 10ms}}}]}", "route/r: rules[0].retries.backoff.max: must not be less than base"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{matches: [{path: {exact: /a}}], backends: [{service: web}], rewrite: {pathPrefix: /b}}]}", "route/r: rules[0].rewrite.pathPrefix: needs every match of the rule to use path.prefix"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], requestHeaders: {set: [{name: host, value: x}]}}]}", "route/r: rules[0].requestHeaders.set[0].name: the host header cannot be modified here; use rewrite.host"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{redirect: {code: 300}}]}", "route/r: rules[0].redirect.code: must be one of 301, 302, 303, 307, 308"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], mirror: {service: web, percent: 101}}]}", "route/r: rules[0].mirror.percent: must be between 0 and 100"),
    ];
    for (yaml, want) in cases {
        let errs = with_base(yaml);
        assert_eq!(errs, vec![want.to_string()], "for {yaml}");
    }
}

/// Rules about the whole set.
#[test]
fn set_rules() {
    let cases: &[(&str, &str)] = &[
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: nope}]}]}", "route/r: rules[0].backends[0].service: service \"nope\" does not exist"),
        ("kind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: web}], mirror: {service: gone}}]}", "route/r: rules[0].mirror.service: service \"gone\" does not exist"),
        ("kind: listener\nname: l\nspec: {port: 80, routes: [nope]}", "listener/l: routes[0]: route \"nope\" does not exist"),
        ("kind: listener\nname: l\nspec: {port: 80, protocol: tcp, service: web, tls: {secret: nope}}", "listener/l: tls.secret: secret \"nope\" does not exist"),
        ("kind: region\nname: eu\nspec: {failover: [mars]}", "region/eu: failover[0]: region \"mars\" does not exist"),
        ("kind: service\nname: s\nspec: {port: 1, failover: {regions: [mars]}}", "service/s: failover.regions[0]: region \"mars\" does not exist"),
        (
            "kind: service\nname: t\nspec: {port: 1, protocol: tcp}\n---\nkind: route\nname: r\nspec: {hosts: [a], rules: [{backends: [{service: t}]}]}",
            "route/r: rules[0].backends[0].service: service \"t\" has protocol tcp; routes need an http1, http2 or grpc service",
        ),
        (
            "kind: listener\nname: a\nspec: {port: 80, protocol: tcp, service: web}\n---\nkind: listener\nname: b\nspec: {port: 80, protocol: tcp, service: web, proxyGroups: [edge]}",
            "listener/b: port: port 80 is already used by listener/a on the same proxy group",
        ),
        (
            "kind: route\nname: r1\nspec: {hosts: [a.com, b.com], rules: [{backends: [{service: web}]}]}\n---\nkind: route\nname: r2\nspec: {hosts: [b.com], rules: [{backends: [{service: web}]}]}\n---\nkind: listener\nname: l\nspec: {port: 80, routes: [r1, r2]}",
            "listener/l: routes[1]: host \"b.com\" is served by both route/r1 and route/r2",
        ),
    ];
    for (yaml, want) in cases {
        let errs = with_base(yaml);
        assert_eq!(errs, vec![want.to_string()], "for {yaml}");
    }
    // Different proxy groups may share a port.
    let ok = with_base(
        "kind: listener\nname: a\nspec: {port: 80, protocol: tcp, service: web, proxyGroups: [x]}\n---\nkind: listener\nname: b\nspec: {port: 80, protocol: tcp, service: web, proxyGroups: [y]}",
    );
    assert!(ok.is_empty(), "{ok:?}");
}

#[test]
fn referrers_and_guarded_delete() {
    let mut set: ConfigSet = must_parse(&format!(
        "{BASE}---\nkind: route\nname: r\nspec: {{hosts: [a], rules: [{{backends: [{{service: web}}], mirror: {{service: web}}}}]}}\n---\nkind: listener\nname: l\nspec: {{port: 80, routes: [r]}}\n---\nkind: listener\nname: t\nspec: {{port: 81, protocol: tcp, service: web}}\n"
    ));
    assert_eq!(
        set.referrers(Kind::Service, "web"),
        vec![
            (Kind::Route, "r".to_string()),
            (Kind::Listener, "t".to_string())
        ]
    );
    let err = set.remove(Kind::Service, "web").unwrap_err();
    assert_eq!(err.to_string(), "service/web: cannot delete: referenced by route/r, listener/t; change or delete those first");
    assert!(set.get(Kind::Service, "web").is_some());
    set.remove(Kind::Listener, "t").unwrap();
    set.remove(Kind::Listener, "l").unwrap();
    set.remove(Kind::Route, "r").unwrap();
    assert!(set.remove(Kind::Service, "web").unwrap().is_some());
}

/// The failover and health-check knobs at their limits are accepted, and
/// round-trip through the stored form.
#[test]
fn failover_and_health_check_knobs_at_their_limits() {
    let yaml = "kind: region\nname: us-east\nspec: {}\n---\nkind: service\nname: s\nspec:\n  port: 1\n  updateMergeWindow: 0ms\n  panicThresholdPercent: 100\n  failover: {}\n  outlierDetection: {consecutiveGatewayFailure: 1000, baseEjectionTime: 1h, maxEjectionTime: 1h}\n  healthCheck: {protocol: http, noTrafficInterval: 100ms, unhealthyInterval: 1h, unhealthyEdgeInterval: 100ms, healthyEdgeInterval: 1h}\n";
    assert!(check(yaml).is_empty(), "{:?}", check(yaml));
    let set = must_parse(yaml);
    let svc = set.service("s").unwrap();
    let json = serde_json::to_string(svc).unwrap();
    let back: meridian_model::ServiceSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, svc);
}
