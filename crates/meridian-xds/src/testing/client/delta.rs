//! The delta wire of the test client: a request subscribes and
//! unsubscribes names and correlates with a nonce.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use super::{open_rpc, rejection, Client, Wire};

/// Incremental messages and methods.
pub struct DeltaWire;

impl Wire for DeltaWire {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    open_rpc!(
        delta_aggregated_resources,
        delta_listeners,
        delta_routes,
        delta_clusters,
        delta_endpoints,
        delta_secrets
    );

    fn node_mut(req: &mut DeltaDiscoveryRequest) -> &mut Option<Node> {
        &mut req.node
    }

    fn describe(r: &DeltaDiscoveryResponse) -> String {
        format!(
            "type {} names {:?} removed {:?}",
            r.type_url,
            delta_names(r),
            r.removed_resources
        )
    }
}

impl Client<DeltaWire> {
    /// Subscribes and unsubscribes names, correlating with `nonce` (may be empty).
    pub async fn subscribe(
        &mut self,
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
        nonce: &str,
    ) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        })
        .await
    }

    /// The first request of a reconnecting client that holds `initial` versions.
    pub async fn resume(
        &mut self,
        type_url: &str,
        subscribe: &[&str],
        initial: HashMap<String, String>,
    ) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            initial_resource_versions: initial,
            ..Default::default()
        })
        .await
    }

    pub async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.subscribe(&resp.type_url, &[], &[], &resp.nonce).await
    }

    pub async fn nack(&mut self, resp: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(rejection(message)),
            ..Default::default()
        })
        .await
    }
}

/// Resource names in a delta response, in order.
pub fn delta_names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(|r| r.name.clone()).collect()
}
