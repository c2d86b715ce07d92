//! Starting and stopping a node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_peer::{Activity, Faults, PeerNetworkFactory, PeerService};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_proto::v1::{
    cluster_service_server::ClusterServiceServer, config_service_server::ConfigServiceServer,
};
use meridian_store::{NodeId, NodeInfo, Raft, StateMachineStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::api::ConfigApi;
use crate::cluster_api::{info_to_pb, ClusterApi};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::leader::ApiChannels;
use crate::metrics::WriteMetrics;
use crate::proposer::Proposer;

/// State shared by the node's services.
pub(crate) struct Shared {
    pub id: NodeId,
    pub info: NodeInfo,
    pub config: NodeConfig,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub proposer: Proposer,
    pub channels: ApiChannels,
    pub write_timeout: Duration,
    pub started: Instant,
    pub faults: Faults,
    pub activity: Activity,
    pub write_metrics: Arc<WriteMetrics>,
    pub shutdown: watch::Receiver<bool>,
    pub xds: meridian_xds::XdsServer,
    pub xds_source: Arc<crate::xds_source::StoreSource>,
    pub lane: crate::lane::EndpointLane,
    pub peer_channels: ApiChannels,
}

impl Shared {
    pub(crate) fn leader_contact_recent(&self) -> bool {
        let limit = self.config.raft.election_max_ms;
        self.activity
            .millis_since_append()
            .is_some_and(|ms| ms <= limit)
    }
}

pub struct Node;

/// A running node. Dropping it does not stop it: call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), String>>,
}

impl Node {
    /// Opens the data dir, starts Raft and every listener, and returns once
    /// they accept connections.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let raft_config = config.openraft_config().map_err(NodeError::Config)?;
        let fresh =
            crate::identity::check_or_create(&config.data_dir, config.node_id, &config.region)?;
        let adv = config.advertised().clone();
        let info = NodeInfo {
            region: config.region.clone(),
            peer_addr: adv.peer.to_string(),
            api_addr: adv.api.to_string(),
            xds_addr: adv.xds.to_string(),
            admin_addr: adv.admin.to_string(),
        };

        // Bind first: a port in use is the most common start-up error and
        // must be reported before anything touches the data dir's store.
        let bind = |what: &'static str, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| NodeError::Listen(format!("{what} listener: cannot bind {addr}: {e}")))
        };
        let peer_l = bind("peer", config.listen.peer).await?;
        let api_l = bind("api", config.listen.api).await?;
        let admin_l = bind("admin", config.listen.admin).await?;
        let xds_l = bind("xds", config.listen.xds).await?;

        let (log_store, sm) = meridian_store::open(&config.data_dir)
            .await
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let faults = Faults::default();
        let activity = Activity::default();
        let network =
            PeerNetworkFactory::new(config.node_id, faults.clone(), Duration::from_secs(2));
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        let xds_source = Arc::new(crate::xds_source::StoreSource::new(sm.clone()));
        let xds = meridian_xds::XdsServer::new(
            xds_source.clone(),
            meridian_xds::XdsConfig {
                identifier: format!("meridian-{}-{}", config.region, config.node_id),
                region: config.region.clone(),
                debounce_quiet: Duration::from_millis(config.xds.debounce_ms),
                debounce_max: Duration::from_millis(config.xds.debounce_max_ms),
                debounce_max_endpoints: Duration::from_millis(config.xds.debounce_max_endpoints_ms),
                push_concurrency: config.xds.push_concurrency,
                max_connection_age: (config.xds.max_connection_age_s > 0)
                    .then(|| Duration::from_secs(config.xds.max_connection_age_s)),
                ..Default::default()
            },
        );
        let (stop, shutdown) = watch::channel(false);
        let write_metrics = Arc::new(WriteMetrics::default());
        let lane = crate::lane::EndpointLane::start(
            raft.clone(),
            config.write_timeout(),
            write_metrics.clone(),
        );
        let proposer = Proposer::start(
            raft.clone(),
            sm.clone(),
            config.write_timeout(),
            write_metrics.clone(),
        );
        let shared = Arc::new(Shared {
            id: config.node_id,
            info: info.clone(),
            write_timeout: config.write_timeout(),
            config: config.clone(),
            raft: raft.clone(),
            sm,
            proposer,
            channels: ApiChannels::default(),
            started: Instant::now(),
            faults: faults.clone(),
            activity: activity.clone(),
            write_metrics,
            shutdown: shutdown.clone(),
            xds: xds.clone(),
            xds_source,
            lane,
            peer_channels: ApiChannels::default(),
        });

        let mut tasks = JoinSet::new();
        let until_stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };

        let peer_svc = PeerService::new(raft.clone(), faults, activity).into_server();
        let internal_svc = meridian_proto::v1::internal_service_server::InternalServiceServer::new(
            crate::internal::InternalApi::new(shared.clone()),
        );
        let rx = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(peer_svc)
                .add_service(internal_svc)
                .serve_with_incoming_shutdown(incoming(peer_l), until_stop(rx))
                .await
                .map_err(|e| format!("peer listener: {e}"))
        });

        let config_svc = ConfigServiceServer::new(ConfigApi::new(shared.clone()))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        let cluster_svc = ClusterServiceServer::new(ClusterApi::new(shared.clone()))
            .max_encoding_message_size(256 * 1024 * 1024);
        let agent_svc = meridian_proto::v1::agent_service_server::AgentServiceServer::new(
            crate::agents::AgentApi::new(shared.clone()),
        );
        // CSDS on the API port too, where operators' tools look for it.
        let csds_svc = envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer::new(shared.xds.clone());
        tasks.spawn(crate::leases::run(shared.clone(), shutdown.clone()));
        tasks.spawn(count_snapshots(
            raft.clone(),
            shared.write_metrics.clone(),
            shutdown.clone(),
        ));
        let rx = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(config_svc)
                .add_service(cluster_svc)
                .add_service(agent_svc)
                .add_service(csds_svc)
                .serve_with_incoming_shutdown(incoming(api_l), until_stop(rx))
                .await
                .map_err(|e| format!("api listener: {e}"))
        });

        let rx = shutdown.clone();
        tasks.spawn(async move {
            meridian_xds::serve(xds_l, xds, until_stop(rx))
                .await
                .map_err(|e| format!("xds listener: {e}"))
        });

        let router = crate::admin::router(shared.clone());
        let rx = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(admin_l, router)
                .with_graceful_shutdown(until_stop(rx))
                .await
                .map_err(|e| format!("admin listener: {e}"))
        });

        if fresh && config.bootstrap {
            let mut members = std::collections::BTreeMap::new();
            members.insert(config.node_id, info.clone());
            raft.initialize(members)
                .await
                .map_err(|e| NodeError::Raft(format!("bootstrap: {e}")))?;
            info!("bootstrapped a new single-node cluster");
        }
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        if !initialized && !config.join.is_empty() {
            let join = config.join.clone();
            let me = info_to_pb(config.node_id, &info);
            let rx = shutdown.clone();
            tasks.spawn(join_cluster(join, me, rx));
        } else if !initialized {
            info!("not part of a cluster yet: run `meridian cluster init` here, or add this node from a member");
        }

        info!(
            node = config.node_id,
            region = %config.region,
            peer = %adv.peer,
            api = %adv.api,
            xds = %adv.xds,
            admin = %adv.admin,
            data_dir = %config.data_dir.display(),
            "node started"
        );
        Ok(NodeHandle {
            shared,
            stop,
            tasks,
        })
    }
}

/// Accepted connections with Nagle's algorithm off: tonic ignores its own
/// `tcp_nodelay` for a caller-supplied listener, and Nagle plus delayed ACKs
/// put 40 ms stalls into Raft round trips and forwarded writes.
fn incoming(l: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(l).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Counts snapshots and purges as openraft's metrics report them, for
/// `/metrics` (openraft only exposes the latest log ids).
async fn count_snapshots(
    raft: Raft,
    m: Arc<WriteMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let mut rx = raft.metrics();
    let (mut snap, mut purged) = {
        let cur = rx.borrow();
        (cur.snapshot, cur.purged)
    };
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        let cur = rx.borrow().clone();
        if cur.snapshot != snap {
            snap = cur.snapshot;
            m.snapshots.fetch_add(1, Ordering::Relaxed);
        }
        if cur.purged != purged {
            purged = cur.purged;
            m.purges.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Asks the given members to admit this node until one does.
async fn join_cluster(
    addrs: Vec<String>,
    me: pb::NodeInfo,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(200);
    loop {
        for addr in &addrs {
            let ep = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
                Ok(ep) => ep.connect_timeout(Duration::from_secs(2)),
                Err(e) => return Err(format!("--join {addr:?}: {e}")),
            };
            let Ok(ch) = ep.connect().await else { continue };
            let req = pb::AddNodeRequest {
                node: Some(me.clone()),
                learner_only: false,
            };
            match ClusterServiceClient::new(ch).add_node(req).await {
                Ok(_) => {
                    info!(via = %addr, "joined the cluster");
                    return Ok(());
                }
                Err(st)
                    if st.code() == tonic::Code::FailedPrecondition
                        || st.code() == tonic::Code::AlreadyExists =>
                {
                    error!(via = %addr, error = %st.message(), "the cluster refused this node");
                    return Err(st.message().to_string());
                }
                Err(st) => {
                    warn!(via = %addr, error = %st.message(), "join attempt failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

impl NodeHandle {
    pub fn node_id(&self) -> NodeId {
        self.shared.id
    }

    pub fn raft(&self) -> &Raft {
        &self.shared.raft
    }

    pub fn state_machine(&self) -> &StateMachineStore {
        &self.shared.sm
    }

    /// Waits until a listener fails; returns its error.
    pub async fn wait(&mut self) -> Result<(), NodeError> {
        while let Some(res) = self.tasks.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(NodeError::Listen(e)),
                Err(e) => return Err(NodeError::Listen(format!("task panicked: {e}"))),
            }
        }
        Ok(())
    }

    /// Stops the listeners (ending every stream), then Raft, which flushes storage.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    warn!("listeners did not stop within 5s; aborting them");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.shared
            .raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Raft(format!("shutdown: {e}")))?;
        info!("node stopped");
        Ok(())
    }
}
