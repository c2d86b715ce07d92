use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use meridian_agent::source::kubernetes::mapping::{self, Skip, SliceStore};
use meridian_agent::{EndpointKey, EndpointMap, EndpointState, Health};

/// `kubectl get endpointslices -A -o json`.
#[derive(serde::Deserialize)]
struct List {
    items: Vec<EndpointSlice>,
}

fn recorded() -> Vec<EndpointSlice> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/endpointslices-all-namespaces.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<List>(&text).unwrap().items
}

fn slice(name: &str) -> EndpointSlice {
    recorded()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no slice {name} in the fixture"))
}

fn ep(
    service: &str,
    address: &str,
    port: u16,
    zone: &str,
    health: Health,
) -> (EndpointKey, EndpointState) {
    (
        EndpointKey {
            service: service.into(),
            address: address.into(),
            port,
        },
        EndpointState {
            zone: zone.into(),
            weight: 1,
            health,
        },
    )
}

#[test]
fn readiness_and_termination_map_to_health() {
    let got = mapping::slice_endpoints(&slice("web-4k7xq")).unwrap();
    assert_eq!(
        got,
        vec![
            ep("web", "10.244.1.5", 8080, "europe-west1-a", Health::Healthy),
            ep(
                "web",
                "10.244.2.7",
                8080,
                "europe-west1-b",
                Health::Unhealthy
            ),
            ep(
                "web",
                "10.244.1.9",
                8080,
                "europe-west1-a",
                Health::Draining
            ),
        ]
    );
}

#[test]
fn missing_conditions_mean_ready_and_missing_zone_means_the_agents() {
    let got = mapping::slice_endpoints(&slice("kubernetes")).unwrap();
    assert_eq!(
        got,
        vec![ep("kubernetes", "172.18.0.2", 6443, "", Health::Healthy)]
    );
}

#[test]
fn labels_choose_the_service_and_the_port_by_name() {
    let s = slice("checkout-r5z8m");
    assert_eq!(mapping::service_name(&s), Some("checkout-eu"));
    assert_eq!(mapping::port(&s), Ok(9000));
    assert_eq!(
        mapping::slice_endpoints(&s).unwrap(),
        vec![ep(
            "checkout-eu",
            "10.244.2.21",
            9000,
            "europe-west1-b",
            Health::Healthy
        )]
    );
}

#[test]
fn an_annotation_on_the_slice_overrides_the_service_name() {
    let s = slice("db-manual");
    assert_eq!(mapping::service_name(&s), Some("legacy-db"));
    assert_eq!(
        mapping::slice_endpoints(&s).unwrap(),
        vec![ep("legacy-db", "192.168.50.10", 5432, "", Health::Healthy)]
    );
}

#[test]
fn a_port_name_that_does_not_exist_skips_the_slice() {
    let mut s = slice("web-4k7xq");
    s.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("meridian.io/port".into(), "grpc".into());
    assert_eq!(
        mapping::slice_endpoints(&s),
        Err(Skip::NoSuchPort("grpc".into()))
    );
    // Naming an existing port that is not the first one.
    s.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("meridian.io/port".into(), "metrics".into());
    assert_eq!(mapping::port(&s), Ok(9090));
}

#[test]
fn fqdn_slices_and_slices_without_a_service_are_skipped() {
    assert_eq!(
        mapping::slice_endpoints(&slice("payments-external")),
        Err(Skip::AddressType("FQDN".into()))
    );
    let mut s = slice("web-4k7xq");
    s.metadata.labels = None;
    assert_eq!(mapping::slice_endpoints(&s), Err(Skip::NoService));
}

#[test]
fn an_empty_slice_contributes_nothing() {
    let s = slice("batch-q2w7e");
    assert_eq!(mapping::port(&s), Ok(0));
    assert_eq!(mapping::slice_endpoints(&s), Ok(vec![]));
}

/// The whole recorded list: several slices per service merged, dual-stack
/// addresses in canonical form, the endpoint listed in two slices (one
/// ready, one not, as during a rebalance) reported once and healthy.
fn expected_all() -> EndpointMap {
    [
        ep(
            "checkout-eu",
            "10.244.2.21",
            9000,
            "europe-west1-b",
            Health::Healthy,
        ),
        ep("kubernetes", "172.18.0.2", 6443, "", Health::Healthy),
        ep("legacy-db", "192.168.50.10", 5432, "", Health::Healthy),
        ep("web", "10.244.1.5", 8080, "europe-west1-a", Health::Healthy),
        ep(
            "web",
            "10.244.1.9",
            8080,
            "europe-west1-a",
            Health::Draining,
        ),
        ep(
            "web",
            "10.244.2.7",
            8080,
            "europe-west1-b",
            Health::Unhealthy,
        ),
        ep(
            "web",
            "10.244.3.11",
            8080,
            "europe-west1-c",
            Health::Healthy,
        ),
        ep(
            "web",
            "fd00:10:244:1::5",
            8080,
            "europe-west1-a",
            Health::Healthy,
        ),
    ]
    .into_iter()
    .collect()
}

#[test]
fn the_recorded_list_maps_to_the_expected_set() {
    let slices = recorded();
    assert_eq!(slices.len(), 8);
    assert_eq!(mapping::endpoints_from_slices(&slices), expected_all());
}

#[test]
fn the_store_publishes_after_the_first_list_and_follows_events() {
    let slices = recorded();
    let mut store = SliceStore::default();
    store.init();
    for s in &slices {
        store.apply(s);
        assert_eq!(
            store.endpoints(),
            None,
            "nothing before the list is complete"
        );
    }
    store.init_done();
    assert_eq!(store.endpoints(), Some(expected_all()));

    // The extra web slice goes away: 10.244.3.11 with it, 10.244.1.5 stays.
    store.delete(&slice("web-9tb2n"));
    let set = store.endpoints().unwrap();
    assert_eq!(set.len(), 7);
    assert!(!set.keys().any(|k| k.address == "10.244.3.11"));

    // A pod turns terminating.
    let mut web = slice("web-4k7xq");
    web.endpoints[0].conditions.as_mut().unwrap().terminating = Some(true);
    store.apply(&web);
    let set = store.endpoints().unwrap();
    let (_, state) = ep("web", "10.244.1.5", 8080, "", Health::Draining);
    let got = set
        .iter()
        .find(|(k, _)| k.address == "10.244.1.5")
        .map(|(_, v)| v.health);
    assert_eq!(got, Some(state.health));

    // A re-list that no longer has the checkout slice replaces everything.
    store.init();
    for s in slices
        .iter()
        .filter(|s| s.metadata.name.as_deref() != Some("checkout-r5z8m"))
    {
        store.apply(s);
    }
    assert_eq!(
        store.endpoints().unwrap().len(),
        7,
        "old set until the re-list is done"
    );
    store.init_done();
    let mut want = expected_all();
    want.retain(|k, _| k.service != "checkout-eu");
    assert_eq!(store.endpoints(), Some(want));
}
