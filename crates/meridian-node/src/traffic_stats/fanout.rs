//! The whole cluster's Envoys: each other member is asked for its own
//! (`GetTrafficErrors` with `local_only`), as `GetProxyStatus` does. An
//! Envoy's stats stream may sit on another controller than its xDS stream
//! (both pick a controller of the same cluster independently), and after
//! a failover two controllers hold parts of its window: the parts add up.

use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;

use super::{sum, TrafficStats};

/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

impl TrafficStats {
    /// The Envoys `req` selects, with their counts since its time, from this
    /// node and (unless `local_only`) every other member; members that did
    /// not answer are listed in `unanswered`.
    pub(crate) async fn traffic(
        &self,
        req: &pb::TrafficErrorsRequest,
    ) -> pb::TrafficErrorsResponse {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (region, group) = (opt(&req.region), opt(&req.proxy_group));
        let mut per_envoy = self.local(region.as_deref(), group.as_deref(), req.since_unix_ms);
        let mut unanswered = Vec::new();
        if let (false, Some((router, membership))) = (req.local_only, &self.inner.peers) {
            let me = self.inner.node_id;
            let ask = pb::TrafficErrorsRequest {
                local_only: true,
                ..req.clone()
            };
            let asks = membership
                .current()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, info)| {
                    let (id, ch, ask) = (*id, router.api_channel(info), ask.clone());
                    async move {
                        let mut c =
                            ClusterServiceClient::new(ch.map_err(|e| format!("node {id}: {e}"))?);
                        match tokio::time::timeout(ASK_TIMEOUT, c.get_traffic_errors(ask)).await {
                            Ok(Ok(r)) => Ok(r.into_inner().per_envoy),
                            Ok(Err(st)) => Err(format!("node {id}: {}", st.message())),
                            Err(_) => Err(format!("node {id}: no answer within {ASK_TIMEOUT:?}")),
                        }
                    }
                })
                .collect::<Vec<_>>();
            for r in futures::future::join_all(asks).await {
                match r {
                    Ok(p) => per_envoy.extend(p),
                    Err(e) => unanswered.push(e),
                }
            }
        }
        per_envoy.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then(a.controller_id.cmp(&b.controller_id))
        });
        let total = sum(&per_envoy);
        pb::TrafficErrorsResponse {
            requests: total.requests,
            errors: total.errors,
            envoys: total.envoys,
            per_envoy,
            unanswered,
        }
    }
}
