//! `meridian ui`: the status page on this machine's loopback, kubectl-proxy
//! style. The page is the admin listener's (`meridian_node::ui`); its data
//! comes over the API with this operator's credentials, so with TLS on the
//! controllers' role check applies (viewer and up), and nothing but the
//! operator's own browser reaches it (loopback only, loopback Host only).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use meridian_node::ui::{history_request, list_request, rollouts_request, Access, Page, UiSource};
use meridian_proto::v1 as pb;
use tonic::Status;

use super::Global;
use crate::client::Servers;

#[derive(clap::Args, Debug)]
pub struct UiArgs {
    /// Where to serve the page: a loopback address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub listen: SocketAddr,
}

pub async fn run(a: UiArgs, g: &Global) -> Result<()> {
    if !a.listen.ip().is_loopback() {
        bail!(
            "--listen {}: must be a loopback address (127.0.0.1 or [::1]); the page shows the cluster with your credentials to whoever reaches it",
            a.listen
        );
    }
    let servers = g.servers();
    let who = g
        .tls()?
        .map(|t| t.identity().to_string())
        .unwrap_or_else(|| "no client certificate (plaintext)".into());
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", a.listen))?;
    let addr = listener.local_addr()?;
    let page = Page::new(Arc::new(ApiSource { servers }), Access::Loopback);
    println!("serving the status page at http://{addr}/ui as {who}; Ctrl-C to stop");
    meridian_node::ui::serve(listener, page, super::agent::shutdown_signal())
        .await
        .context("serving the status page")
}

/// The cluster and config APIs, asked as the operator.
struct ApiSource {
    servers: Servers,
}

/// The page shows the message; a failover between controllers already
/// happened inside `Servers::call`.
fn status(e: anyhow::Error) -> Status {
    Status::unavailable(format!("{e:#}"))
}

impl UiSource for ApiSource {
    fn rollouts(&self) -> BoxFuture<'_, Result<pb::ListRolloutsResponse, Status>> {
        Box::pin(async move {
            self.servers
                .call(|ch| async move {
                    pb::rollout_service_client::RolloutServiceClient::new(ch)
                        .list_rollouts(rollouts_request())
                        .await
                        .map(|r| r.into_inner())
                })
                .await
                .map_err(status)
        })
    }

    fn cluster_status(&self) -> BoxFuture<'_, Result<pb::ClusterStatusResponse, Status>> {
        Box::pin(async move {
            self.servers
                .cluster_call(|mut c| async move {
                    c.get_cluster_status(pb::ClusterStatusRequest {}).await
                })
                .await
                .map_err(status)
        })
    }

    fn proxy_status(&self) -> BoxFuture<'_, Result<pb::ProxyStatusResponse, Status>> {
        Box::pin(async move {
            self.servers
                .cluster_call(|mut c| async move {
                    c.get_proxy_status(pb::ProxyStatusRequest { local_only: false })
                        .await
                })
                .await
                .map_err(status)
        })
    }

    fn history(&self, limit: u32) -> BoxFuture<'_, Result<pb::HistoryResponse, Status>> {
        Box::pin(async move {
            self.servers
                .config_request(&history_request(limit), |mut c, r| async move {
                    c.get_history(r).await
                })
                .await
                .map_err(status)
        })
    }

    fn list(&self, kind: &'static str) -> BoxFuture<'_, Result<pb::ListResponse, Status>> {
        Box::pin(async move {
            self.servers
                .config_request(
                    &list_request(kind),
                    |mut c, r| async move { c.list(r).await },
                )
                .await
                .map_err(status)
        })
    }
}
