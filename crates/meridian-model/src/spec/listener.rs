use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{check_range, check_ref_name};
use crate::error::Errors;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSpec {
    /// IP address to bind; default `0.0.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Proxy groups (Envoy `node.cluster`) that get this listener; empty
    /// means every proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_groups: Vec<String>,
    /// HTTP only: the Route objects served, one virtual host each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// TCP only: the Service connections are forwarded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl ListenerSpec {
    pub const DEFAULT_ADDRESS: &'static str = "0.0.0.0";

    pub fn address(&self) -> &str {
        self.address.as_deref().unwrap_or(Self::DEFAULT_ADDRESS)
    }

    /// Whether a proxy in `group` (None: a proxy without a group) gets this
    /// listener.
    pub fn applies_to(&self, group: Option<&str>) -> bool {
        self.proxy_groups.is_empty()
            || group.is_some_and(|g| self.proxy_groups.iter().any(|p| p == g))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
}

/// TLS termination with the certificate in a Secret object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    pub secret: String,
}

impl ListenerSpec {
    pub(crate) fn validate(&self, errs: &mut Errors<'_>) {
        if let Some(a) = &self.address {
            if a.parse::<IpAddr>().is_err() {
                errs.push("address", format!("\"{a}\" is not an IP address"));
            }
        }
        check_range(errs, "port", self.port.into(), 1, 65535);
        for (i, g) in self.proxy_groups.iter().enumerate() {
            check_ref_name(errs, &format!("proxyGroups[{i}]"), g);
        }
        match self.protocol {
            ListenerProtocol::Http => {
                if self.routes.is_empty() {
                    errs.push("routes", "an http listener needs at least one route");
                }
                if self.service.is_some() {
                    errs.push(
                        "service",
                        "only allowed with protocol tcp; http listeners use routes",
                    );
                }
            }
            ListenerProtocol::Tcp => {
                if self.service.is_none() {
                    errs.push("service", "a tcp listener needs the service it forwards to");
                }
                if !self.routes.is_empty() {
                    errs.push("routes", "only allowed with protocol http");
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            check_ref_name(errs, &format!("routes[{i}]"), r);
            if !seen.insert(r) {
                errs.push(
                    format!("routes[{i}]"),
                    format!("route \"{r}\" is listed twice"),
                );
            }
        }
        if let Some(s) = &self.service {
            check_ref_name(errs, "service", s);
        }
        if let Some(t) = &self.tls {
            check_ref_name(errs, "tls.secret", &t.secret);
        }
    }
}
