//! CSDS: the status registry rendered as `ClientStatusResponse`.

use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::Timestamp;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::server::XdsServer;
use crate::status::ProxyStatus;
use crate::subscription::{ResourceState, SyncState};

type CsdsStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

impl XdsServer {
    /// Every connected Envoy matching the request's node matchers (all when
    /// none), one `ClientConfig` per stream. Resource contents are never
    /// included: CSDS here reports state, not config dumps.
    pub fn client_status(&self, req: &ClientStatusRequest) -> ClientStatusResponse {
        let config = self
            .status()
            .into_iter()
            .filter(|p| {
                req.node_matchers.is_empty()
                    || req
                        .node_matchers
                        .iter()
                        .any(|m| node_matches(m, &p.node_id))
            })
            .map(client_config)
            .collect();
        ClientStatusResponse { config }
    }
}

fn node_matches(m: &NodeMatcher, node_id: &str) -> bool {
    m.node_id
        .as_ref()
        .is_none_or(|s| string_matches(s, node_id))
}

fn string_matches(m: &StringMatcher, value: &str) -> bool {
    let (v, fold) = if m.ignore_case {
        (value.to_lowercase(), true)
    } else {
        (value.to_string(), false)
    };
    let norm = |p: &str| {
        if fold {
            p.to_lowercase()
        } else {
            p.to_string()
        }
    };
    match &m.match_pattern {
        None => true,
        Some(MatchPattern::Exact(p)) => v == norm(p),
        Some(MatchPattern::Prefix(p)) => v.starts_with(&norm(p)),
        Some(MatchPattern::Suffix(p)) => v.ends_with(&norm(p)),
        Some(MatchPattern::Contains(p)) => v.contains(&norm(p)),
        // Regex and custom matchers are not supported: match nothing rather
        // than everything, so a filter never leaks unrelated clients.
        Some(_) => false,
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn client_config(p: ProxyStatus) -> ClientConfig {
    let mut generic = Vec::new();
    for (t, ts) in &p.types {
        let config_status = match ts.state {
            SyncState::Synced => ConfigStatus::Synced,
            SyncState::NotSent => ConfigStatus::NotSent,
            SyncState::Stale => ConfigStatus::Stale,
            SyncState::Nacked => ConfigStatus::Error,
        };
        for r in &ts.resources {
            let client_status = match r.state {
                ResourceState::Requested => ClientResourceStatus::Requested,
                ResourceState::DoesNotExist => ClientResourceStatus::DoesNotExist,
                ResourceState::Acked => ClientResourceStatus::Acked,
                ResourceState::Nacked => ClientResourceStatus::Nacked,
            };
            let error_state = match (r.state, &ts.last_nack) {
                (ResourceState::Nacked, Some(n)) => Some(UpdateFailureState {
                    failed_configuration: None,
                    last_update_attempt: Some(timestamp(n.at)),
                    details: n.message.clone(),
                    version_info: n.version.clone(),
                }),
                _ => None,
            };
            generic.push(GenericXdsConfig {
                type_url: t.clone(),
                name: r.name.clone(),
                version_info: r.version.clone().unwrap_or_default(),
                xds_config: None,
                last_updated: ts.last_ack.map(timestamp),
                config_status: config_status as i32,
                client_status: client_status as i32,
                error_state,
                is_static_resource: false,
            });
        }
    }
    ClientConfig {
        node: Some(p.node),
        generic_xds_configs: generic,
        client_scope: String::new(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for XdsServer {
    type StreamClientStatusStream = CsdsStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<CsdsStream>, Status> {
        let server = self.clone();
        let out = request
            .into_inner()
            .map(move |req| req.map(|r| server.client_status(&r)));
        Ok(Response::new(Box::pin(out)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        Ok(Response::new(self.client_status(request.get_ref())))
    }
}
