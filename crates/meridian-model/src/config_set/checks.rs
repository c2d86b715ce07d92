//! Rules about the whole set rather than one object.

use std::collections::BTreeMap;

use super::{is_http_service, ConfigSet};
use crate::{Kind, ModelError, Spec};

pub(super) fn references(set: &ConfigSet) -> Vec<ModelError> {
    let mut errs = Vec::new();
    for obj in set.iter() {
        for (path, kind, name) in super::references(obj) {
            let Some(target) = set.get(kind, &name) else {
                errs.push(ModelError::new(
                    obj.kind,
                    &obj.name,
                    path,
                    format!("{kind} \"{name}\" does not exist"),
                ));
                continue;
            };
            // A reference can resolve and still be of the wrong sort.
            match (&obj.spec, &target.spec) {
                (Spec::Route(_), Spec::Service(s)) if !is_http_service(s.protocol) => errs.push(ModelError::new(
                    obj.kind,
                    &obj.name,
                    path,
                    format!("service \"{name}\" has protocol tcp; routes need an http1, http2 or grpc service"),
                )),
                _ => {}
            }
        }
    }
    errs
}

pub(super) fn listener_ports(set: &ConfigSet) -> Vec<ModelError> {
    let mut errs = Vec::new();
    let listeners: Vec<_> = set.listeners().collect();
    for (i, (name, l)) in listeners.iter().enumerate() {
        for (other, o) in &listeners[..i] {
            if l.port != o.port {
                continue;
            }
            let overlap = l.proxy_groups.is_empty()
                || o.proxy_groups.is_empty()
                || l.proxy_groups.iter().any(|g| o.proxy_groups.contains(g));
            if overlap {
                errs.push(ModelError::new(
                    Kind::Listener,
                    name,
                    "port",
                    format!(
                        "port {} is already used by listener/{other} on the same proxy group",
                        l.port
                    ),
                ));
            }
        }
    }
    errs
}

pub(super) fn listener_domains(set: &ConfigSet) -> Vec<ModelError> {
    let mut errs = Vec::new();
    for (name, l) in set.listeners() {
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, route_name) in l.routes.iter().enumerate() {
            let Some(route) = set.route(route_name) else {
                continue;
            };
            for host in &route.hosts {
                if let Some(first) = owner.insert(host, route_name) {
                    if first != route_name {
                        errs.push(ModelError::new(
                            Kind::Listener,
                            name,
                            format!("routes[{i}]"),
                            format!("host \"{host}\" is served by both route/{first} and route/{route_name}"),
                        ));
                    }
                }
            }
        }
    }
    errs
}
