//! The cluster API's questions to every member: cluster status, and where
//! each Envoy is connected, with its traffic of the last minute.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::Either;
use meridian_proto::v1 as pb;
use meridian_store::{NodeId, NodeInfo};

use super::ClusterApi;
use crate::error::ApiError;
use crate::status::info_to_pb;

impl ClusterApi {
    /// The other members, as this node sees the membership.
    fn others(&self) -> Vec<(NodeId, NodeInfo)> {
        let me = self.status.id();
        self.membership
            .current()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    pub(super) async fn cluster_status(&self) -> pb::ClusterStatusResponse {
        let me = self.status.status();
        let mem = self.membership.current();
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        let mut asks = Vec::new();
        for (id, info) in mem.nodes() {
            let (id, info) = (*id, info.clone());
            let voter = voters.contains(&id);
            if id == self.status.id() {
                asks.push(Either::Left(futures::future::ready(pb::MemberStatus {
                    node: Some(info_to_pb(id, &info)),
                    voter,
                    status: Some(me.clone()),
                    error: String::new(),
                })));
                continue;
            }
            let client = self.client(&info);
            asks.push(Either::Right(async move {
                let status = match client {
                    Err(e) => Err(e.to_string()),
                    Ok(mut c) => match tokio::time::timeout(
                        Duration::from_secs(1),
                        c.get_node_status(pb::NodeStatusRequest {}),
                    )
                    .await
                    {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(st)) => Err(st.message().to_string()),
                        Err(_) => Err("no answer within 1s".to_string()),
                    },
                };
                let (status, error) = match status {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e),
                };
                pb::MemberStatus {
                    node: Some(info_to_pb(id, &info)),
                    voter,
                    status,
                    error,
                }
            }));
        }
        let members = futures::future::join_all(asks).await;
        pb::ClusterStatusResponse {
            leader_id: me.leader_id,
            term: me.term,
            members,
            answered_by: self.status.id(),
        }
    }

    pub(super) async fn proxy_status(&self, local_only: bool) -> pb::ProxyStatusResponse {
        let mut proxies = self.proxies.local();
        let mut errors = Vec::new();
        let minute_ago = crate::traffic_stats::now_ms().saturating_sub(60_000);
        let mut traffic = self.traffic.local(None, None, minute_ago);
        if !local_only {
            let asks = self.others().into_iter().map(|(id, info)| {
                let client = self.client(&info);
                async move {
                    let mut c = client.map_err(|e| format!("node {id}: {e}"))?;
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        c.get_proxy_status(pb::ProxyStatusRequest { local_only: true }),
                    )
                    .await
                    {
                        Ok(Ok(r)) => {
                            let r = r.into_inner();
                            Ok((r.proxies, r.traffic))
                        }
                        Ok(Err(st)) => Err(format!("node {id}: {}", st.message())),
                        Err(_) => Err(format!("node {id}: no answer within 2s")),
                    }
                }
            });
            for r in futures::future::join_all(asks).await {
                match r {
                    Ok((p, t)) => {
                        proxies.extend(p);
                        traffic.extend(t);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        // An Envoy's stats may reach another controller than its xDS
        // stream, or two after a move: every holder's part counts.
        for p in &mut proxies {
            let mine: Vec<_> = traffic
                .iter()
                .filter(|t| t.node_id == p.node_id)
                .cloned()
                .collect();
            let sum = crate::traffic_stats::sum(&mine);
            p.requests_1m = sum.requests;
            p.errors_1m = sum.errors;
            p.stats_reported = !mine.is_empty();
        }
        proxies.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then(a.controller_id.cmp(&b.controller_id))
        });
        pb::ProxyStatusResponse {
            proxies,
            errors,
            traffic,
        }
    }

    pub(super) async fn proxy_config(
        &self,
        msg: pb::ProxyConfigRequest,
    ) -> Result<pb::ProxyConfigResponse, ApiError> {
        if let Some(r) = self.proxies.config(&msg.node_id) {
            return Ok(r);
        }
        if !msg.local_only {
            for (_, info) in self.others() {
                let Ok(mut c) = self.client(&info) else {
                    continue;
                };
                let ask = pb::ProxyConfigRequest {
                    node_id: msg.node_id.clone(),
                    local_only: true,
                };
                if let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(2), c.get_proxy_config(ask)).await
                {
                    return Ok(r.into_inner());
                }
            }
        }
        Err(ApiError::NotFound(format!(
            "no Envoy with node id {:?} is connected to any controller; see `meridian proxy-status`",
            msg.node_id
        )))
    }
}
