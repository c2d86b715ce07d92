//! A running cluster's APIs: gRPC clients per node, node status, and the
//! waits tests build on (leader, readiness, membership, applied index).

use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use tonic::transport::Channel;

use super::{http_get, http_request, Cluster};
use crate::eventually;

impl Cluster {
    pub async fn channel(&self, id: u64) -> Channel {
        let addr = self.node(id).api_addr();
        eventually(
            &format!("node {id} API at {addr}"),
            Duration::from_secs(20),
            || {
                let addr = addr.clone();
                async move {
                    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                        .ok()?
                        .connect_timeout(Duration::from_secs(1));
                    self.connect(ep).await.ok()
                }
            },
        )
        .await
    }

    /// Connects `ep`, over TLS as the kit's admin when the cluster has TLS.
    pub async fn connect(
        &self,
        ep: tonic::transport::Endpoint,
    ) -> Result<Channel, tonic::transport::Error> {
        let admin = self.pki().map(|p| p.admin_source());
        meridian_tls::connect(
            ep,
            admin.as_ref().map(|s| (s, meridian_tls::Expect::AnyNode)),
        )
        .await
    }

    pub async fn config(&self, id: u64) -> ConfigServiceClient<Channel> {
        ConfigServiceClient::new(self.channel(id).await)
            .max_decoding_message_size(256 * 1024 * 1024)
    }

    pub async fn cluster(&self, id: u64) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel(id).await)
    }

    pub async fn status(&self, id: u64) -> Option<pb::NodeStatus> {
        let ep =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.node(id).api_addr()))
                .ok()?
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(2));
        let ch = self.connect(ep).await.ok()?;
        ClusterServiceClient::new(ch)
            .get_node_status(pb::NodeStatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until a running node leads and the running nodes agree on it.
    pub async fn wait_leader(&self) -> u64 {
        let ids = self.running_ids();
        eventually(
            "a leader the running nodes agree on",
            Duration::from_secs(30),
            || {
                let ids = ids.clone();
                async move {
                    let mut leader = None;
                    for id in &ids {
                        let st = self.status(*id).await?;
                        if !st.has_leader || !ids.contains(&st.leader_id) {
                            return None;
                        }
                        match leader {
                            None => leader = Some(st.leader_id),
                            Some(l) if l != st.leader_id => return None,
                            _ => {}
                        }
                    }
                    leader
                }
            },
        )
        .await
    }

    /// A running node other than `leader`.
    pub fn a_follower(&self, leader: u64) -> u64 {
        self.running_ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a running node besides the leader")
    }

    /// Sets node `id`'s peer-transport faults (`PUT /debug/faults`, a
    /// `FaultConfig` as JSON; `{}` heals); the cluster must run with
    /// `fault_injection`.
    pub async fn set_faults(&self, id: u64, body: &str) {
        self.put_admin(id, "/debug/faults", body).await
    }

    /// Sets node `id`'s disk faults (`PUT /debug/disk-faults`, a
    /// `DiskFaultConfig` as JSON; `{}` clears them).
    pub async fn set_disk_faults(&self, id: u64, body: &str) {
        self.put_admin(id, "/debug/disk-faults", body).await
    }

    async fn put_admin(&self, id: u64, path: &str, body: &str) {
        let url = self.node(id).admin_url(path);
        let (code, text) = http_request("PUT", &url, Some(body))
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert_eq!(code, 200, "PUT {url} {body}: {text}");
    }

    pub async fn wait_ready(&self, id: u64) {
        let url = self.node(id).admin_url("/readyz");
        eventually(&format!("node {id} ready"), Duration::from_secs(30), || {
            let url = url.clone();
            async move { (http_get(&url).await.ok()?.0 == 200).then_some(()) }
        })
        .await
    }

    /// Waits until the membership (as the leader sees it) has exactly these voters.
    pub async fn wait_voters(&self, want: &[u64]) {
        eventually(&format!("voters {want:?}"), Duration::from_secs(60), || {
            self.has_voters(want)
        })
        .await
    }

    /// Whether the leader's membership is exactly `want`, all voters.
    pub(super) async fn has_voters(&self, want: &[u64]) -> Option<()> {
        let mut want = want.to_vec();
        want.sort_unstable();
        for id in self.running_ids() {
            let st = self.status(id).await?;
            if st.role == "leader" {
                let mut v = st.voters.clone();
                v.sort_unstable();
                return (v == want && st.learners.is_empty()).then_some(());
            }
        }
        None
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) -> pb::NodeStatus {
        eventually(
            &format!("node {id} applied index {index}"),
            Duration::from_secs(60),
            || async move {
                let st = self.status(id).await?;
                (st.applied_index >= index).then_some(st)
            },
        )
        .await
    }

    /// Envoy `node`'s entry in `meridian proxy-status -o json` (asked of
    /// every running controller; only live streams are listed), if any.
    pub fn proxy_status(&self, node: &str) -> Option<serde_json::Value> {
        let out = self.cli(&["proxy-status", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["proxies"]
            .as_array()?
            .iter()
            .find(|p| p["node_id"] == node)
            .cloned()
    }

    /// How many of `service`'s endpoints `meridian endpoints` shows HEALTHY
    /// (`None` when the CLI fails or answers something else).
    pub fn healthy_endpoints(&self, service: &str) -> Option<usize> {
        let out = self.cli(&["endpoints", service, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(
            v["endpoints"]
                .as_array()?
                .iter()
                .filter(|e| e["health"] == "HEALTHY")
                .count(),
        )
    }

    /// After the controllers `dead` were killed: waits until Envoy `node`
    /// is listed on another controller (only live streams are listed, so
    /// that is its move), then until it is SYNCED there; returns both
    /// instants. Panics if it is listed on a dead one.
    pub async fn wait_moved_then_synced(
        &self,
        node: &str,
        dead: &[u64],
    ) -> (std::time::Instant, std::time::Instant) {
        let moved = eventually(
            &format!("Envoy {node} to be listed on a live controller"),
            Duration::from_secs(60),
            || async move {
                let p = self.proxy_status(node)?;
                let on = p["controller"].as_u64();
                assert!(
                    !on.is_some_and(|id| dead.contains(&id)),
                    "listed on a killed controller: {p}"
                );
                Some(std::time::Instant::now())
            },
        )
        .await;
        let synced = eventually(
            &format!("proxy-status to show Envoy {node} SYNCED"),
            Duration::from_secs(30),
            || async move { self.proxy_synced(node).then(std::time::Instant::now) },
        )
        .await;
        (moved, synced)
    }

    /// Whether `meridian proxy-status` shows Envoy `node` with every type
    /// SYNCED (or with nothing to send), CDS among them with an ACKed
    /// version, and the revision it runs: what an operator reads as "this
    /// Envoy runs the current config".
    pub fn proxy_synced(&self, node: &str) -> bool {
        self.proxy_status(node).is_some_and(|p| proxy_is_synced(&p))
    }
}

/// See [`Cluster::proxy_synced`]; `p` is one entry of `proxy-status -o json`.
pub fn proxy_is_synced(p: &serde_json::Value) -> bool {
    let types = p["types"].as_array().cloned().unwrap_or_default();
    let all = !types.is_empty()
        && types
            .iter()
            .all(|t| t["state"] == "SYNCED" || t["state"] == "NOT_SENT");
    let cds = types.iter().any(|t| {
        t["type"] == "cds"
            && t["state"] == "SYNCED"
            && t["acked"] == true
            && t["acked_version"].as_str().is_some_and(|v| !v.is_empty())
    });
    all && cds && p["synced_revision"].as_u64().unwrap_or(0) > 0
}
