//! Translation never panics and is deterministic on arbitrary valid models.

use meridian_model::{
    spec::{
        Backend, Failover, ListenerProtocol, ListenerSpec, LoadBalancing, Protocol, RegionSpec,
        Retries, RouteSpec, Rule,
    },
    ConfigSet, Duration, Endpoint, EndpointSet, Health, Object, ServiceSpec, Spec,
};
use meridian_translate::{translate, TranslateOptions, Viewer};
use proptest::prelude::*;

const REGIONS: [&str; 4] = ["us-east", "eu-west", "ap-south", "sa-east"];

fn service() -> impl Strategy<Value = ServiceSpec> {
    (
        prop::sample::select(vec![Protocol::Http1, Protocol::Http2, Protocol::Grpc]),
        1u16..,
        prop::sample::select(vec![
            LoadBalancing::RoundRobin,
            LoadBalancing::LeastRequest,
            LoadBalancing::RingHash,
            LoadBalancing::Maglev,
            LoadBalancing::Random,
        ]),
        prop::option::of(1u64..10_000),
        prop::option::of(1u32..=100),
        any::<bool>(),
        prop::option::of(prop::sample::subsequence(REGIONS.to_vec(), 0..4)),
        prop::sample::subsequence(REGIONS.to_vec(), 0..2),
    )
        .prop_map(
            |(protocol, port, lb, timeout, threshold, aon, order, exclude)| {
                let order: Option<Vec<String>> =
                    order.map(|o| o.iter().map(|s| s.to_string()).collect());
                let exclude: Vec<String> = exclude
                    .iter()
                    .map(|s| s.to_string())
                    .filter(|e| !order.iter().flatten().any(|o| o == e))
                    .collect();
                ServiceSpec {
                    protocol,
                    port,
                    load_balancing: lb,
                    connect_timeout: timeout.map(Duration::from_millis),
                    circuit_breakers: None,
                    outlier_detection: None,
                    health_check: None,
                    failover: Some(Failover {
                        regions: order,
                        exclude_regions: exclude,
                        threshold_percent: if aon { None } else { threshold },
                        all_or_nothing: aon,
                    }),
                    update_merge_window: None,
                    panic_threshold_percent: None,
                    endpoints: vec![],
                }
            },
        )
}

fn model() -> impl Strategy<Value = (ConfigSet, EndpointSet)> {
    (
        prop::collection::vec(service(), 1..4),
        prop::collection::vec(prop::collection::vec((0usize..4, 1u32..100), 1..3), 1..4),
        prop::collection::vec(
            (0usize..4, 0usize..4, 0u8..3, any::<u8>(), 0u32..200, 0u8..4),
            0..20,
        ),
    )
        .prop_map(|(services, rules, eps)| {
            let mut set = ConfigSet::new();
            for r in REGIONS {
                let failover = REGIONS
                    .iter()
                    .filter(|o| **o != r)
                    .rev()
                    .map(|s| s.to_string())
                    .collect();
                set.insert(Object::new(r, Spec::Region(RegionSpec { failover })));
            }
            let n = services.len();
            for (i, s) in services.into_iter().enumerate() {
                set.insert(Object::new(format!("svc-{i}"), Spec::Service(s)));
            }
            let rules = rules
                .into_iter()
                .map(|backends| Rule {
                    backends: backends
                        .into_iter()
                        .map(|(s, w)| Backend {
                            service: format!("svc-{}", s % n),
                            weight: Some(w),
                        })
                        .collect(),
                    retries: Some(Retries {
                        attempts: Some(2),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect();
            set.insert(Object::new(
                "r",
                Spec::Route(RouteSpec {
                    hosts: vec!["*".into()],
                    rules,
                }),
            ));
            set.insert(Object::new(
                "l",
                Spec::Listener(ListenerSpec {
                    address: None,
                    port: 80,
                    protocol: ListenerProtocol::Http,
                    proxy_groups: vec![],
                    routes: vec!["r".into()],
                    tls: None,
                    service: None,
                }),
            ));
            let endpoints = eps
                .into_iter()
                .map(|(s, r, z, host, w, h)| Endpoint {
                    service: format!("svc-{}", s % n),
                    cluster: "k".into(),
                    region: REGIONS[r].into(),
                    zone: format!("z{z}"),
                    address: format!("10.0.0.{host}"),
                    port: 8080,
                    weight: w,
                    health: [
                        Health::Healthy,
                        Health::Unhealthy,
                        Health::Draining,
                        Health::Unknown,
                    ][h as usize],
                })
                .collect();
            (set, endpoints)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn deterministic((config, endpoints) in model(), region in prop::sample::select(REGIONS.to_vec())) {
        prop_assert!(config.validate().is_empty(), "{:?}", config.validate());
        let viewer = Viewer::new(region, None);
        let a = translate(&config, &endpoints, &viewer, &TranslateOptions::default()).unwrap();
        let b = translate(&config.clone(), &endpoints.clone(), &viewer, &TranslateOptions::default()).unwrap();
        prop_assert_eq!(a, b);
    }
}
