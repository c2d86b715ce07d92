use super::*;

fn ctl(r: &str, a: &str) -> (String, String) {
    (r.into(), a.into())
}

#[test]
fn own_region_first_then_failover_then_by_name_without_gaps() {
    let mut s = BootstrapSpec::new(
        "e",
        "eu",
        9901,
        vec![
            ctl("us", "10.0.0.1:1"),
            ctl("ap", "10.0.0.2:1"),
            ctl("eu", "10.0.0.3:1"),
        ],
    );
    s.failover = vec!["us".into()];
    let b = bootstrap(&s).unwrap();
    let eps = b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let order: Vec<(u64, &str)> = eps
        .iter()
        .map(|e| {
            (
                e["priority"].as_u64().unwrap(),
                e["locality"]["region"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(order, vec![(0, "eu"), (1, "us"), (2, "ap")]);
    assert_eq!(b["static_resources"]["clusters"][0]["type"], "STATIC");
    assert_eq!(
        b["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
    assert!(b["node"]["locality"].get("zone").is_none());
}

#[test]
fn hostnames_resolve_by_dns_and_bad_addresses_are_errors() {
    let mut s = BootstrapSpec::new("e", "us", 9901, vec![ctl("us", "ctl.example:18000")]);
    s.variant = AdsVariant::Sotw;
    s.zone = "a".into();
    let b = bootstrap(&s).unwrap();
    assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
    assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    assert_eq!(b["node"]["locality"]["zone"], "a");
    s.controllers = vec![ctl("us", "nohost")];
    assert!(matches!(bootstrap(&s), Err(BootstrapError::NoPort(_))));
    s.controllers = vec![ctl("us", "h:x")];
    assert!(matches!(bootstrap(&s), Err(BootstrapError::BadPort(..))));
}

#[test]
fn ads_reconnects_with_a_short_jittered_back_off() {
    let b = bootstrap(&BootstrapSpec::new(
        "e",
        "us",
        9901,
        vec![ctl("us", "10.0.0.1:1")],
    ))
    .unwrap();
    let grpc = &b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"];
    assert_eq!(grpc["cluster_name"], XDS_CLUSTER);
    assert_eq!(
        grpc["retry_policy"]["retry_back_off"],
        json!({"base_interval": "0.5s", "max_interval": "3s"})
    );
}

#[test]
fn a_controller_that_refuses_connections_is_ejected_at_once() {
    let b = bootstrap(&BootstrapSpec::new(
        "e",
        "us",
        9901,
        vec![ctl("us", "10.0.0.1:1"), ctl("us", "10.0.0.2:1")],
    ))
    .unwrap();
    let od = &b["static_resources"]["clusters"][0]["outlier_detection"];
    assert_eq!(od["split_external_local_origin_errors"], true);
    assert_eq!(od["consecutive_local_origin_failure"], 1);
    assert_eq!(od["enforcing_consecutive_local_origin_failure"], 100);
    // Every controller may be ejected (a dead region moves to the next),
    // and nothing but a failed connection ejects one.
    assert_eq!(od["max_ejection_percent"], 100);
    for never in [
        "enforcing_consecutive_5xx",
        "enforcing_consecutive_gateway_failure",
        "enforcing_success_rate",
        "enforcing_local_origin_success_rate",
    ] {
        assert_eq!(od[never], 0, "{never}");
    }
}

#[test]
fn counters_are_pushed_as_totals_through_the_xds_cluster() {
    let mut s = BootstrapSpec::new("e", "us", 9901, vec![ctl("us", "10.0.0.1:1")]);
    let b = bootstrap(&s).unwrap();
    assert_eq!(b["stats_flush_interval"], "5.000s");
    let sink = &b["stats_sinks"][0];
    assert_eq!(sink["name"], "envoy.stat_sinks.metrics_service");
    let cfg = &sink["typed_config"];
    assert_eq!(
        cfg["grpc_service"]["envoy_grpc"]["cluster_name"],
        XDS_CLUSTER
    );
    assert_eq!(cfg["report_counters_as_deltas"], false);
    assert_eq!(cfg["transport_api_version"], "V3");
    s.stats_flush_interval = Some(Duration::from_millis(2500));
    assert_eq!(bootstrap(&s).unwrap()["stats_flush_interval"], "2.500s");
    for bad in [Duration::from_millis(999), Duration::from_secs(301)] {
        s.stats_flush_interval = Some(bad);
        assert!(matches!(
            bootstrap(&s),
            Err(BootstrapError::StatsFlushInterval(_))
        ));
    }
    s.stats_flush_interval = None;
    let b = bootstrap(&s).unwrap();
    assert!(b.get("stats_sinks").is_none() && b.get("stats_flush_interval").is_none());
}

#[test]
fn readiness_checks_on_admin_ports_when_every_controller_has_one() {
    let mut s = BootstrapSpec::new(
        "e",
        "us",
        9901,
        vec![ctl("us", "10.0.0.1:18000"), ctl("eu", "10.0.0.2:18000")],
    );
    let cluster =
        |s: &BootstrapSpec| bootstrap(s).unwrap()["static_resources"]["clusters"][0].clone();
    // No admin address: TCP connect to the xDS port.
    let c = cluster(&s);
    assert_eq!(c["health_checks"][0]["tcp_health_check"], json!({}));
    assert!(c["health_checks"][0].get("http_health_check").is_none());
    // Only some: still TCP (one check applies to every host).
    s.controller_admin
        .insert("10.0.0.1:18000".into(), "10.0.0.1:9000".into());
    assert!(cluster(&s)["health_checks"][0]
        .get("tcp_health_check")
        .is_some());
    // All: GET /readyz on each admin port; a distinct IP is named, an
    // unspecified one means the xDS host.
    s.controller_admin
        .insert("10.0.0.2:18000".into(), "0.0.0.0:9001".into());
    let c = cluster(&s);
    assert_eq!(
        c["health_checks"][0]["http_health_check"],
        json!({"path": "/readyz", "codec_client_type": "HTTP1"})
    );
    assert!(c["health_checks"][0].get("tcp_health_check").is_none());
    let eps = c["load_assignment"]["endpoints"].as_array().unwrap();
    assert_eq!(
        eps[0]["lb_endpoints"][0]["endpoint"]["health_check_config"],
        json!({"port_value": 9000})
    );
    assert_eq!(
        eps[1]["lb_endpoints"][0]["endpoint"]["health_check_config"],
        json!({"port_value": 9001})
    );
    s.controller_admin
        .insert("10.0.0.2:18000".into(), "10.0.0.9:9001".into());
    let c = cluster(&s);
    assert_eq!(
        c["load_assignment"]["endpoints"][1]["lb_endpoints"][0]["endpoint"]["health_check_config"],
        json!({"address": {"socket_address": {"address": "10.0.0.9", "port_value": 9001}}, "port_value": 9001})
    );
    s.controller_admin
        .insert("10.0.0.2:18000".into(), "10.0.0.9".into());
    assert!(matches!(bootstrap(&s), Err(BootstrapError::NoPort(_))));
}

#[test]
fn tls_presents_the_proxy_certificate_and_checks_controllers_by_node_identity() {
    let mut s = BootstrapSpec::new("e", "us", 9901, vec![ctl("us", "10.0.0.1:18000")]);
    assert!(bootstrap(&s).unwrap()["static_resources"]["clusters"][0]
        .get("transport_socket")
        .is_none());
    s.tls = Some(XdsTls {
        cert: "/certs/proxy-default.pem".into(),
        key: "/certs/proxy-default-key.pem".into(),
        ca: "/certs/ca.pem".into(),
        trust_domain: "corp.example".into(),
    });
    let c = bootstrap(&s).unwrap()["static_resources"]["clusters"][0].clone();
    let ctx = &c["transport_socket"]["typed_config"]["common_tls_context"];
    assert_eq!(
        ctx["tls_certificates"][0]["certificate_chain"]["filename"],
        "/certs/proxy-default.pem"
    );
    assert_eq!(
        ctx["tls_certificates"][0]["private_key"]["filename"],
        "/certs/proxy-default-key.pem"
    );
    let v = &ctx["validation_context"];
    assert_eq!(v["trusted_ca"]["filename"], "/certs/ca.pem");
    assert_eq!(
        v["match_typed_subject_alt_names"],
        json!([{"san_type": "URI", "matcher": {"safe_regex": {"regex": "^spiffe://corp\\.example/node/[1-9][0-9]*$"}}}])
    );
    // TCP checks go to the xDS port, over TLS like the stream.
    assert!(c.get("transport_socket_matches").is_none());
    assert!(c["health_checks"][0]
        .get("transport_socket_match_criteria")
        .is_none());

    // Readiness checks go to the plain admin port.
    s.controller_admin
        .insert("10.0.0.1:18000".into(), "10.0.0.1:9000".into());
    let c = bootstrap(&s).unwrap()["static_resources"]["clusters"][0].clone();
    let criteria = &c["health_checks"][0]["transport_socket_match_criteria"];
    assert_eq!(
        &c["transport_socket_matches"][0]["match"], criteria,
        "the health checks' criteria select the plain socket"
    );
    assert_eq!(
        c["transport_socket_matches"][0]["transport_socket"]["name"],
        "envoy.transport_sockets.raw_buffer"
    );
}
