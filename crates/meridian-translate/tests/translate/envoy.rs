//! A real Envoy accepts what we generate: every example is translated for
//! every region, folded into a static bootstrap and checked with
//! `envoy --mode validate`.

use std::process::Command;

use meridian_translate::{translate, TranslateOptions, Viewer};

use crate::{endpoints_for, example, must_parse, must_translate, REGIONS};

fn run_validate(envoy: &std::path::Path, file: &std::path::Path) -> (bool, String) {
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(file)
        .output()
        .expect("envoy runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must_validate_with_envoy(yaml: &str, services: &[&str], group: Option<&str>) {
    let envoy = meridian_testkit::envoy::envoy_bin();
    let config = must_parse(yaml);
    let endpoints = endpoints_for(services);
    let dir = tempfile::tempdir().unwrap();
    for region in REGIONS {
        let res = translate(
            &config,
            &endpoints,
            &Viewer::new(region, group),
            &TranslateOptions::default(),
        )
        .unwrap();
        let pb = res.to_static_bootstrap_pb().unwrap();
        let file = dir.path().join(format!("{region}.pb"));
        std::fs::write(&file, pb).unwrap();
        let (ok, log) = run_validate(&envoy, &file);
        assert!(ok, "envoy rejected the config for {region}:\n{log}");
        assert!(
            !log.contains("[error]") && !log.contains("[critical]"),
            "envoy logged errors for {region}:\n{log}"
        );
    }
}

#[test]
fn example_multi_region() {
    must_validate_with_envoy(
        &example(),
        &["storefront", "storefront-canary", "catalog"],
        Some("edge"),
    );
}

#[test]
fn weighted_split_retries_tls_and_failover() {
    let cert = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/example-cert.pem"
    ))
    .unwrap();
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/example-key.pem"
    ))
    .unwrap();
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let yaml = format!(
        r#"
kind: region
name: us-east
spec: {{failover: [ap-south, eu-west]}}
---
kind: region
name: eu-west
spec: {{}}
---
kind: region
name: ap-south
spec: {{failover: [us-east]}}
---
kind: service
name: api
spec:
  protocol: http2
  port: 8443
  loadBalancing: maglev
  healthCheck: {{protocol: tcp}}
  failover: {{allOrNothing: true}}
---
kind: service
name: api-v2
spec:
  port: 8080
  loadBalancing: random
  healthCheck: {{protocol: http}}
---
kind: route
name: api
spec:
  hosts: ["api.example.com", "api.example.com:8443"]
  rules:
    - matches:
        - path: {{regex: "^/v[12]/.*"}}
          queryParams: [{{name: debug, present: true}}, {{name: mode, exact: fast}}, {{name: x, regex: "[a-z]+"}}]
          headers: [{{name: x-canary, present: true}}, {{name: x-user, regex: "^u[0-9]+$"}}, {{name: x-env, exact: prod}}]
          methods: [POST, PUT]
      backends:
        - {{service: api, weight: 70}}
        - {{service: api-v2, weight: 30}}
      retries: {{on: [gateway-error, retriable-4xx], attempts: 5, perTryTimeout: 300ms, backoff: {{base: 10ms}}}}
      rewrite: {{host: internal.example.com}}
      requestHeaders: {{add: [{{name: x-a, value: "1"}}], set: [{{name: x-b, value: "2"}}], remove: [x-c]}}
      responseHeaders: {{set: [{{name: cache-control, value: no-store}}], remove: [server]}}
    - matches: [{{path: {{exact: /moved}}}}]
      redirect: {{scheme: https, host: www.example.com, port: 443, code: 302}}
    - directResponse: {{status: 404, body: "not here"}}
---
kind: route
name: other
spec:
  hosts: ["*.example.org"]
  rules:
    - backends: [{{service: api-v2}}]
      mirror: {{service: api}}
---
kind: secret
name: cert
spec:
  certificateChain: |
{cert}  privateKey: |
{key}---
kind: listener
name: https
spec:
  address: 127.0.0.1
  port: 8443
  routes: [api, other]
  tls: {{secret: cert}}
---
kind: listener
name: tcp-tls
spec:
  port: 9000
  protocol: tcp
  service: api
  tls: {{secret: cert}}
"#,
        cert = indent(&cert),
        key = indent(&key)
    );
    must_validate_with_envoy(&yaml, &["api", "api-v2"], None);
}

/// Every failover and health-check knob, set and defaulted, is accepted by
/// Envoy (the merge window of 0, a panic threshold of 0, the edge
/// intervals, gateway-failure enforcement, the ejection cap), and so are
/// the retries to other hosts and regions (the failover default, split by
/// method, and a rule's own with status codes).
#[test]
fn failover_and_health_check_knobs() {
    let yaml = r#"
kind: region
name: us-east
spec: {failover: [eu-west]}
---
kind: region
name: eu-west
spec: {}
---
kind: region
name: ap-south
spec: {}
---
kind: service
name: web
spec:
  port: 8080
  failover: {thresholdPercent: 50}
  updateMergeWindow: 0ms
  panicThresholdPercent: 0
  outlierDetection: {consecutiveGatewayFailure: 2, maxEjectionTime: 2m}
  healthCheck: {protocol: http, interval: 1s, noTrafficInterval: 1s, unhealthyInterval: 500ms, unhealthyEdgeInterval: 200ms, healthyEdgeInterval: 2s}
---
kind: service
name: api
spec:
  port: 8081
  failover: {}
  healthCheck: {protocol: tcp, interval: 1s}
---
kind: route
name: web
spec:
  hosts: ["*"]
  rules:
    - matches: [{methods: [GET, POST]}]
      backends: [{service: web}]
    - matches: [{path: {prefix: /codes}}]
      backends: [{service: api}]
      retries: {on: [retriable-status-codes, reset-before-request], statusCodes: [503, 429], attempts: 1}
    - backends: [{service: web}, {service: api}]
---
kind: listener
name: edge
spec: {address: 127.0.0.1, port: 8000, routes: [web]}
"#;
    must_validate_with_envoy(yaml, &["web", "api"], None);
}

/// The ADS bootstrap `meridian bootstrap` prints is accepted by Envoy in
/// both health-check forms: `/readyz` on each controller's admin port
/// (the same host, and a distinct IP) and the TCP fallback, with the xDS
/// retry back-off, over delta and SotW.
#[test]
fn ads_bootstrap_with_readiness_checks_and_retry_back_off() {
    use meridian_translate::bootstrap::{bootstrap, AdsVariant, BootstrapSpec};
    let envoy = meridian_testkit::envoy::envoy_bin();
    let dir = tempfile::tempdir().unwrap();
    let ctl = |r: &str, a: &str| (r.to_string(), a.to_string());
    let mut spec = BootstrapSpec::new(
        "validate",
        "us-east",
        9901,
        vec![
            ctl("us-east", "127.0.0.1:18000"),
            ctl("eu-west", "127.0.0.2:18000"),
            ctl("ap-south", "ctl.example:18000"),
        ],
    );
    spec.failover = vec!["eu-west".into()];
    for (i, with_admin) in [false, true].into_iter().enumerate() {
        if with_admin {
            spec.variant = AdsVariant::Sotw;
            spec.controllers.pop();
            spec.controller_admin
                .insert("127.0.0.1:18000".into(), "127.0.0.1:19000".into());
            spec.controller_admin
                .insert("127.0.0.2:18000".into(), "127.0.0.3:19000".into());
        }
        let b = bootstrap(&spec).unwrap();
        let hc = &b["static_resources"]["clusters"][0]["health_checks"][0];
        assert_eq!(hc.get("http_health_check").is_some(), with_admin, "{hc}");
        let file = dir.path().join(format!("ads-{i}.json"));
        std::fs::write(&file, b.to_string()).unwrap();
        let (ok, log) = run_validate(&envoy, &file);
        assert!(
            ok,
            "envoy rejected the ADS bootstrap (admin addresses: {with_admin}):\n{log}"
        );
        assert!(
            !log.contains("[error]") && !log.contains("[critical]"),
            "envoy logged errors:\n{log}"
        );
    }
}

/// The harness is not vacuous: a bootstrap Envoy must refuse (a listener
/// filter whose config does not decode) is reported as a failure.
#[test]
fn broken_bootstrap_is_rejected() {
    use prost::Message;
    let envoy = meridian_testkit::envoy::envoy_bin();
    let config = must_parse(&example());
    let endpoints = endpoints_for(&["storefront"]);
    let res = must_translate(&config, &endpoints, "us-east");
    let mut bootstrap = meridian_translate::static_bootstrap::to_static_bootstrap(&res).unwrap();
    let statics = bootstrap.static_resources.as_mut().unwrap();
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let Some(ConfigType::TypedConfig(any)) =
        &mut statics.listeners[0].filter_chains[0].filters[0].config_type
    else {
        panic!("listener without typed config")
    };
    any.value = vec![0xff, 0xff, 0xff];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.pb");
    std::fs::write(&file, bootstrap.encode_to_vec()).unwrap();
    let (ok, log) = run_validate(&envoy, &file);
    assert!(!ok, "envoy accepted an undecodable filter config:\n{log}");
}
