use super::*;

fn key(service: &str, address: &str, port: u16) -> EndpointKey {
    EndpointKey {
        service: service.into(),
        address: address.into(),
        port,
    }
}

fn state(zone: &str, weight: u32, health: Health) -> EndpointState {
    EndpointState {
        zone: zone.into(),
        weight,
        health,
    }
}

#[test]
fn diff_of_equal_sets_is_empty() {
    let a: EndpointMap = [(key("web", "10.0.0.1", 80), EndpointState::default())].into();
    assert!(diff(&a, &a).is_empty());
    assert!(diff(&EndpointMap::new(), &EndpointMap::new()).is_empty());
}

#[test]
fn diff_finds_additions_changes_and_removals() {
    let old: EndpointMap = [
        (key("web", "10.0.0.1", 80), state("a", 1, Health::Healthy)),
        (key("web", "10.0.0.2", 80), state("a", 1, Health::Healthy)),
        (key("api", "10.0.0.3", 90), state("b", 1, Health::Healthy)),
    ]
    .into();
    let new: EndpointMap = [
        (key("web", "10.0.0.1", 80), state("a", 1, Health::Healthy)),
        (key("web", "10.0.0.2", 80), state("a", 1, Health::Unhealthy)),
        (key("web", "10.0.0.2", 81), state("a", 1, Health::Healthy)),
    ]
    .into();
    let d = diff(&old, &new);
    assert_eq!(
        d.upserts,
        vec![
            (key("web", "10.0.0.2", 80), state("a", 1, Health::Unhealthy)),
            (key("web", "10.0.0.2", 81), state("a", 1, Health::Healthy)),
        ]
    );
    assert_eq!(d.removals, vec![key("api", "10.0.0.3", 90)]);
    assert_eq!(apply(&old, &d), new);
}

#[test]
fn diff_from_empty_is_everything_and_to_empty_removes_everything() {
    let set: EndpointMap = [
        (key("web", "10.0.0.1", 80), state("", 2, Health::Draining)),
        (key("web", "fd00::1", 80), state("", 1, Health::Healthy)),
    ]
    .into();
    let up = diff(&EndpointMap::new(), &set);
    assert_eq!(up.upserts.len(), 2);
    assert!(up.removals.is_empty());
    let down = diff(&set, &EndpointMap::new());
    assert!(down.upserts.is_empty());
    assert_eq!(down.removals.len(), 2);
}

#[test]
fn weight_or_zone_change_is_an_upsert() {
    let old: EndpointMap = [(key("web", "10.0.0.1", 80), state("a", 1, Health::Healthy))].into();
    let new: EndpointMap = [(key("web", "10.0.0.1", 80), state("b", 3, Health::Healthy))].into();
    let d = diff(&old, &new);
    assert_eq!(d.upserts.len(), 1);
    assert!(d.removals.is_empty());
}

#[test]
fn counts_by_health_and_display_of_keys() {
    let set: EndpointMap = [
        (key("web", "10.0.0.1", 80), state("", 1, Health::Healthy)),
        (key("web", "10.0.0.2", 80), state("", 1, Health::Unhealthy)),
        (key("web", "fd00::2", 80), state("", 1, Health::Draining)),
    ]
    .into();
    let c = counts(&set);
    assert_eq!((c.total, c.healthy, c.unhealthy, c.draining), (3, 1, 1, 1));
    assert_eq!(key("web", "fd00::2", 80).to_string(), "web/[fd00::2]:80");
    assert_eq!(key("web", "10.0.0.1", 80).to_string(), "web/10.0.0.1:80");
}
