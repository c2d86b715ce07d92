//! The SotW wire of the test client: a request names the whole
//! subscription and the version it accepted.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::{open_rpc, rejection, Client, Wire};
use crate::testing::fixtures::resource_name;

/// State-of-the-world messages and methods.
pub struct SotwWire;

impl Wire for SotwWire {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    open_rpc!(
        stream_aggregated_resources,
        stream_listeners,
        stream_routes,
        stream_clusters,
        stream_endpoints,
        stream_secrets
    );

    fn node_mut(req: &mut DiscoveryRequest) -> &mut Option<Node> {
        &mut req.node
    }

    fn describe(r: &DiscoveryResponse) -> String {
        format!("type {} names {:?}", r.type_url, names(r))
    }
}

impl Client<SotwWire> {
    /// A plain request: names (empty for legacy wildcard), last accepted
    /// version, and the nonce it answers.
    pub async fn request(&mut self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(DiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.to_string(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        })
        .await
    }

    /// ACKs `resp`, keeping the subscription at `names`.
    pub async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        self.request(&resp.type_url, names, &resp.version_info, &resp.nonce)
            .await
    }

    /// NACKs `resp` with Envoy's message; `accepted` is the last good version.
    pub async fn nack(
        &mut self,
        resp: &DiscoveryResponse,
        names: &[&str],
        accepted: &str,
        message: &str,
    ) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: accepted.to_string(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(rejection(message)),
            ..Default::default()
        })
        .await
    }
}

/// Resource names in a SotW response, in order.
pub fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(resource_name).collect()
}
