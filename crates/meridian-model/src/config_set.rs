use std::collections::{BTreeMap, BTreeSet};

use crate::{spec::Protocol, Kind, ModelError, Object, Spec};

mod checks;

/// A whole configuration: every object, keyed by (kind, name). Ordered, so
/// iteration (and everything built from it) is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSet {
    objects: BTreeMap<(Kind, String), Object>,
}

impl ConfigSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object; returns the one replaced.
    pub fn insert(&mut self, object: Object) -> Option<Object> {
        self.objects
            .insert((object.kind, object.name.clone()), object)
    }

    /// Removes an object unless others reference it; the error lists the
    /// referrers so the operator knows what to change first.
    pub fn remove(&mut self, kind: Kind, name: &str) -> Result<Option<Object>, ModelError> {
        let referrers = self.referrers(kind, name);
        if !referrers.is_empty() {
            let list: Vec<String> = referrers.iter().map(|(k, n)| format!("{k}/{n}")).collect();
            return Err(ModelError::new(
                kind,
                name,
                "",
                format!(
                    "cannot delete: referenced by {}; change or delete those first",
                    list.join(", ")
                ),
            ));
        }
        Ok(self.objects.remove(&(kind, name.to_string())))
    }

    /// Removes an object whatever references it; for callers that remove a
    /// group of objects at once and check the referrers of the group.
    pub fn remove_unchecked(&mut self, kind: Kind, name: &str) -> Option<Object> {
        self.objects.remove(&(kind, name.to_string()))
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&Object> {
        self.objects.get(&(kind, name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    /// Objects of one kind, in name order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects.values().filter(move |o| o.kind == kind)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// The endpoints Services declare in their spec, in the form agents
    /// report, so translation treats both alike.
    pub fn static_endpoints(&self) -> crate::EndpointSet {
        let mut set = crate::EndpointSet::new();
        for (name, svc) in self.services() {
            for e in &svc.endpoints {
                set.insert(crate::Endpoint {
                    service: name.to_string(),
                    cluster: crate::spec::StaticEndpoint::CLUSTER.to_string(),
                    region: e.region.clone(),
                    zone: e.zone.clone(),
                    address: e.address.clone(),
                    port: e.port.unwrap_or(svc.port),
                    weight: e.weight.unwrap_or(1),
                    health: crate::Health::Healthy,
                });
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Objects that name (kind, name), sorted.
    pub fn referrers(&self, kind: Kind, name: &str) -> Vec<(Kind, String)> {
        let mut out = BTreeSet::new();
        for obj in self.objects.values() {
            if references(obj)
                .iter()
                .any(|(_, k, n)| *k == kind && n == name)
            {
                out.insert((obj.kind, obj.name.clone()));
            }
        }
        out.into_iter().collect()
    }

    /// Every object on its own, then the rules about the whole set:
    /// references resolve, no two listeners of one proxy group share a port,
    /// no domain appears twice on one listener.
    pub fn validate(&self) -> Vec<ModelError> {
        let mut errs: Vec<ModelError> = self.objects.values().flat_map(Object::validate).collect();
        errs.extend(self.validate_relations());
        errs
    }

    /// Only the rules between objects (references resolve, no port or
    /// domain clashes), for callers that validated each object on its own
    /// already and must not pay for it again.
    pub fn validate_relations(&self) -> Vec<ModelError> {
        let mut errs = checks::references(self);
        errs.extend(checks::listener_ports(self));
        errs.extend(checks::listener_domains(self));
        errs
    }

    pub fn services(&self) -> impl Iterator<Item = (&str, &crate::ServiceSpec)> {
        self.objects.values().filter_map(|o| match &o.spec {
            Spec::Service(s) => Some((o.name.as_str(), s)),
            _ => None,
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = (&str, &crate::RouteSpec)> {
        self.objects.values().filter_map(|o| match &o.spec {
            Spec::Route(s) => Some((o.name.as_str(), s)),
            _ => None,
        })
    }

    pub fn listeners(&self) -> impl Iterator<Item = (&str, &crate::ListenerSpec)> {
        self.objects.values().filter_map(|o| match &o.spec {
            Spec::Listener(s) => Some((o.name.as_str(), s)),
            _ => None,
        })
    }

    pub fn regions(&self) -> impl Iterator<Item = (&str, &crate::RegionSpec)> {
        self.objects.values().filter_map(|o| match &o.spec {
            Spec::Region(s) => Some((o.name.as_str(), s)),
            _ => None,
        })
    }

    pub fn service(&self, name: &str) -> Option<&crate::ServiceSpec> {
        match self.get(Kind::Service, name).map(|o| &o.spec) {
            Some(Spec::Service(s)) => Some(s),
            _ => None,
        }
    }

    pub fn route(&self, name: &str) -> Option<&crate::RouteSpec> {
        match self.get(Kind::Route, name).map(|o| &o.spec) {
            Some(Spec::Route(s)) => Some(s),
            _ => None,
        }
    }

    pub fn secret(&self, name: &str) -> Option<&crate::SecretSpec> {
        match self.get(Kind::Secret, name).map(|o| &o.spec) {
            Some(Spec::Secret(s)) => Some(s),
            _ => None,
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&crate::ClusterSpec> {
        match self.get(Kind::Cluster, name).map(|o| &o.spec) {
            Some(Spec::Cluster(s)) => Some(s),
            _ => None,
        }
    }

    pub fn region(&self, name: &str) -> Option<&crate::RegionSpec> {
        match self.get(Kind::Region, name).map(|o| &o.spec) {
            Some(Spec::Region(s)) => Some(s),
            _ => None,
        }
    }
}

impl FromIterator<Object> for ConfigSet {
    fn from_iter<T: IntoIterator<Item = Object>>(iter: T) -> Self {
        let mut set = Self::new();
        for o in iter {
            set.insert(o);
        }
        set
    }
}

/// (field path, kind, name) of everything `obj` refers to.
fn references(obj: &Object) -> Vec<(String, Kind, String)> {
    let mut out = Vec::new();
    match &obj.spec {
        Spec::Service(s) => {
            if let Some(f) = &s.failover {
                for (i, r) in f.regions.iter().flatten().enumerate() {
                    out.push((format!("failover.regions[{i}]"), Kind::Region, r.clone()));
                }
            }
        }
        Spec::Route(r) => {
            for (path, svc) in r.referenced_services() {
                out.push((path, Kind::Service, svc.to_string()));
            }
        }
        Spec::Listener(l) => {
            for (i, r) in l.routes.iter().enumerate() {
                out.push((format!("routes[{i}]"), Kind::Route, r.clone()));
            }
            if let Some(s) = &l.service {
                out.push(("service".into(), Kind::Service, s.clone()));
            }
            if let Some(t) = &l.tls {
                out.push(("tls.secret".into(), Kind::Secret, t.secret.clone()));
            }
        }
        Spec::Region(r) => {
            for (i, name) in r.failover.iter().enumerate() {
                out.push((format!("failover[{i}]"), Kind::Region, name.clone()));
            }
        }
        Spec::Secret(_) | Spec::Cluster(_) => {}
    }
    out
}

fn is_http_service(p: Protocol) -> bool {
    p != Protocol::Tcp

}
