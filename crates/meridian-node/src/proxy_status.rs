//! `GetProxyStatus`: what every Envoy connected to this node was sent and
//! what it did with it, converted from the xDS server's status registry.

use std::time::SystemTime;

use meridian_proto::v1 as pb;
use meridian_xds::{ProxyStatus, ResourceState, SnapshotSource, SyncState, Variant};
use prost::Message;

use crate::xds_source::StoreSource;

/// The Envoys connected to this node, as the xDS server tracks them.
#[derive(Clone)]
pub(crate) struct Proxies {
    controller_id: u64,
    controller_region: String,
    xds: meridian_xds::XdsServer,
    source: std::sync::Arc<StoreSource>,
}

pub(crate) fn short_type(type_url: &str) -> String {
    match type_url.rsplit('.').next().unwrap_or(type_url) {
        "Cluster" => "cds",
        "ClusterLoadAssignment" => "eds",
        "Listener" => "lds",
        "RouteConfiguration" => "rds",
        "Secret" => "sds",
        other => other,
    }
    .to_string()
}

pub(crate) fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::SotwAds => "sotw-ads",
        Variant::DeltaAds => "delta-ads",
        Variant::SotwPerType => "sotw",
        Variant::DeltaPerType => "delta",
    }
}

fn state_name(s: SyncState) -> &'static str {
    match s {
        SyncState::NotSent => "NOT_SENT",
        SyncState::Synced => "SYNCED",
        SyncState::Stale => "STALE",
        SyncState::Nacked => "NACKED",
    }
}

fn age_ms(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Proxies {
    pub(crate) fn new(
        controller_id: u64,
        controller_region: String,
        xds: meridian_xds::XdsServer,
        source: std::sync::Arc<StoreSource>,
    ) -> Self {
        Proxies {
            controller_id,
            controller_region,
            xds,
            source,
        }
    }

    pub(crate) fn local(&self) -> Vec<pb::ProxyInfo> {
        self.xds
            .status()
            .into_iter()
            .map(|p| self.convert(p))
            .collect()
    }

    /// The resources this node serves to the Envoy `node_id`, decoded for
    /// people; `None` when that Envoy is not connected here.
    pub(crate) fn config(&self, node_id: &str) -> Option<pb::ProxyConfigResponse> {
        let p = self
            .xds
            .status()
            .into_iter()
            .find(|p| p.node_id == node_id)?;
        let view = self.source.snapshot(&p.viewer);
        let mut resources = Vec::new();
        for t in p.types.values() {
            let all = view.resources(&t.type_url);
            for r in &t.resources {
                let text = all
                    .get(&r.name)
                    .map(|v| decode_text(&t.type_url, &v.resource.value))
                    .unwrap_or_default();
                resources.push(pb::ProxyResource {
                    r#type: short_type(&t.type_url),
                    name: r.name.clone(),
                    version: r.version.clone().unwrap_or_default(),
                    text,
                    state: match r.state {
                        ResourceState::Requested => "REQUESTED",
                        ResourceState::DoesNotExist => "DOES_NOT_EXIST",
                        ResourceState::Acked => "ACKED",
                        ResourceState::Nacked => "NACKED",
                    }
                    .into(),
                });
            }
        }
        Some(pb::ProxyConfigResponse {
            proxy: Some(self.convert(p)),
            resources,
        })
    }

    fn convert(&self, p: ProxyStatus) -> pb::ProxyInfo {
        let synced_revision = p.synced_revision().unwrap_or(0);
        let types = p
            .types
            .values()
            .map(|t| {
                let nack = if t.state == SyncState::Nacked {
                    t.last_nack.clone()
                } else {
                    None
                };
                pb::ProxyTypeStatus {
                    r#type: short_type(&t.type_url),
                    state: state_name(t.state).into(),
                    sent_version: t.sent_version.clone().unwrap_or_default(),
                    acked_version: t.acked_version.clone().unwrap_or_default(),
                    last_ack_age_ms: t.last_ack.map(age_ms).unwrap_or(0),
                    acked: t.last_ack.is_some(),
                    nack_message: nack.as_ref().map(|n| n.message.clone()).unwrap_or_default(),
                    nack_resources: nack.map(|n| n.resource_names).unwrap_or_default(),
                    resources: t.resources.len() as u64,
                }
            })
            .collect();
        pb::ProxyInfo {
            node_id: p.node_id,
            controller_id: self.controller_id,
            controller_region: self.controller_region.clone(),
            region: p.viewer.region,
            proxy_group: p.viewer.proxy_group,
            variant: variant_name(p.variant).into(),
            types,
            connected_ms: age_ms(p.connected_at),
            view_revision: p.view_revision,
            synced_revision,
            // Filled from the stats sink by `GetProxyStatus`.
            ..Default::default()
        }
    }
}

/// Envoy's v3 resources have no serde; their `Debug` form is the readable one.
fn decode_text(type_url: &str, bytes: &[u8]) -> String {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    let decoded = match short_type(type_url).as_str() {
        "cds" => Cluster::decode(bytes).map(|m| format!("{m:#?}")),
        "eds" => ClusterLoadAssignment::decode(bytes).map(|m| format!("{m:#?}")),
        "lds" => Listener::decode(bytes).map(|m| format!("{m:#?}")),
        "rds" => RouteConfiguration::decode(bytes).map(|m| format!("{m:#?}")),
        // A secret's key material is never shown, only that it is there.
        "sds" => Secret::decode(bytes)
            .map(|m| format!("Secret {{ name: {:?}, <key material redacted> }}", m.name)),
        _ => return format!("{} bytes", bytes.len()),
    };
    decoded.unwrap_or_else(|e| format!("undecodable: {e}"))
}
