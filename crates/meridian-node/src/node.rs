//! The composition root: binds the listeners, opens the store, starts Raft,
//! builds the seams (leadership, routing, the write lanes) and hands each
//! service only the seams it uses.
//!
//! This file is long because it is the one place where every service is
//! built and wired to its seams, in start order, read top to bottom.

mod tasks;

use std::sync::Arc;
use std::time::Duration;

use meridian_peer::{Activity, Faults, PeerNetworkFactory, PeerService};
use meridian_proto::v1::agent_service_server::AgentServiceServer;
use meridian_proto::v1::internal_service_server::InternalServiceServer;
use meridian_proto::v1::rollout_service_server::RolloutServiceServer;
use meridian_proto::v1::{
    cluster_service_server::ClusterServiceServer, config_service_server::ConfigServiceServer,
};
use meridian_store::{NodeId, NodeInfo, Raft, StateMachineStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::agent_api::AgentApi;
use crate::agent_writes::AgentWrites;
use crate::authz::AuthzLayer;
use crate::cluster_api::ClusterApi;
use crate::config::NodeConfig;
use crate::config_api::ConfigApi;
use crate::error::NodeError;
use crate::internal_api::InternalApi;
use crate::leadership::Leadership;
use crate::membership::Membership;
use crate::metrics::WriteMetrics;
use crate::proxy_status::Proxies;
use crate::routing::Router;
use crate::status::{info_to_pb, LocalStatus};
use crate::tls::NodeTls;
use crate::traffic_stats::{Limits, MetricsSink, TrafficStats};
use crate::write::{ConfigWrites, EndpointWrites};
use crate::xds_source::{StoreSource, XdsGate};
use tasks::{count_snapshots, exit_on_raft_fatal, forget_removed_peers, incoming, join_cluster};

pub struct Node;

/// A running node. Dropping it does not stop it: call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    id: NodeId,
    raft: Raft,
    sm: StateMachineStore,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), String>>,
}

fn xds_config(config: &NodeConfig) -> meridian_xds::XdsConfig {
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
    }
}

impl Node {
    /// Opens the data dir, starts Raft and every listener, and returns once
    /// they accept connections.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let raft_config = config.openraft_config().map_err(NodeError::Config)?;
        // Before the data dir or any port: a missing or mismatched
        // certificate is a configuration error, reported as such.
        let tls = match &config.tls {
            Some(c) => Some(NodeTls::load(c).map_err(NodeError::Config)?),
            None => None,
        };
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

        let disk_faults = meridian_store::DiskFaults::default();
        let (mut log_store, sm) = meridian_store::open(&config.data_dir, disk_faults.clone())
            .await
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        // Read before openraft starts: its metrics say nothing of the log
        // until its core task has loaded it (see `Leadership`).
        let startup_log = {
            use openraft::storage::RaftLogStorage;
            log_store
                .get_log_state()
                .await
                .map_err(|e| NodeError::Storage(e.to_string()))?
                .last_log_id
                .map_or(0, |l| l.index)
        };
        let faults = Faults::default();
        let activity = Activity::default();
        let incarnations = meridian_peer::Incarnations::open(&config.data_dir)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let mut network =
            PeerNetworkFactory::new(config.node_id, faults.clone(), Duration::from_secs(2))
                .with_incarnations(incarnations.clone());
        if let Some(t) = &tls {
            network = network.with_tls(t.client.clone());
        }
        let unreachable_peers = network.unreachables();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        let xds_gate = XdsGate::default();
        let xds_source = Arc::new(StoreSource::new(sm.clone(), xds_gate.clone()));
        // On a TLS listener an Envoy views only as the group its
        // certificate names; plaintext (--insecure) trusts node.cluster.
        let authorizer = tls.as_ref().map(|_| {
            Arc::new(crate::xds_authz::ProxyGroupBinding) as Arc<dyn meridian_xds::StreamAuthorizer>
        });
        let xds = meridian_xds::XdsServer::with_authorizer(
            xds_source.clone(),
            xds_config(&config),
            authorizer,
        );
        let (stop, shutdown) = watch::channel(false);

        // The seams.
        let write_timeout = config.write_timeout();
        let write_metrics = Arc::new(WriteMetrics::default());
        let _ = write_metrics.peers.set(unreachable_peers);
        if let Some(t) = &tls {
            let _ = write_metrics.tls.set(t.all());
        }
        let leadership = Leadership::new(
            config.node_id,
            raft.clone(),
            activity.clone(),
            config.raft.election_max_ms,
            startup_log,
        );
        let router = Router::new(
            leadership.clone(),
            write_timeout,
            tls.as_ref().map(|t| t.client.clone()),
        );
        let config_writes = ConfigWrites::start(
            raft.clone(),
            sm.clone(),
            write_timeout,
            write_metrics.clone(),
        );
        let endpoint_writes = EndpointWrites::start(
            raft.clone(),
            sm.clone(),
            write_timeout,
            write_metrics.clone(),
        );
        let agent_writes =
            AgentWrites::new(router.clone(), endpoint_writes.clone(), faults.clone());
        let status = LocalStatus::new(
            leadership.clone(),
            info.clone(),
            sm.clone(),
            xds_gate,
            tls.as_ref().map(|t| t.all()).unwrap_or_default(),
        );
        let proxies = Proxies::new(
            config.node_id,
            config.region.clone(),
            xds.clone(),
            xds_source,
        );

        let mut tasks = JoinSet::new();
        let until_stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };

        // Peer listener: Raft and the peer-only writes, both through `faults`.
        let peer_svc = PeerService::new(raft.clone(), faults.clone(), activity)
            .with_incarnations(incarnations.clone())
            .into_server();
        let internal_svc = InternalServiceServer::new(InternalApi::new(
            endpoint_writes,
            faults.clone(),
            write_timeout,
        ))
        // Room for the largest transaction the endpoint lane takes, so that
        // a bigger one is refused by the lane, which says why, rather than
        // by tonic's default 4 MiB cap.
        .max_decoding_message_size(2 * meridian_store::limits::MAX_TXN_BYTES);
        let rx = shutdown.clone();
        let peer_tls = tls.as_ref().map(|t| t.peer.clone());
        tasks.spawn(async move {
            // Who may send what here is checked at the handshake (nodes
            // only) and in `meridian_peer::accept` (each node as itself).
            let routes = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(peer_svc)
                .add_service(internal_svc);
            match peer_tls {
                Some(t) => {
                    routes
                        .serve_with_incoming_shutdown(
                            meridian_tls::incoming(peer_l, t),
                            until_stop(rx),
                        )
                        .await
                }
                None => {
                    routes
                        .serve_with_incoming_shutdown(incoming(peer_l), until_stop(rx))
                        .await
                }
            }
            .map_err(|e| format!("peer listener: {e}"))
        });

        let rollout_runs =
            crate::rollout::Runs::new(sm.clone(), config_writes.clone(), write_metrics.clone());
        // Shared with the status page, which asks them in process.
        let config_api = Arc::new(ConfigApi::new(
            router.clone(),
            config_writes,
            sm.clone(),
            shutdown.clone(),
        ));
        let membership = Membership::new(raft.clone(), sm.clone(), write_timeout);
        let traffic = TrafficStats::new(
            config.node_id,
            config.region.clone(),
            Limits::default(),
            write_metrics.clone(),
            Some((router.clone(), membership.clone())),
        );
        let rollout_api = Arc::new(crate::rollout_api::RolloutApi::new(
            router.clone(),
            rollout_runs.clone(),
        ));
        tasks.spawn(crate::rollout::run(
            leadership.clone(),
            rollout_runs,
            crate::rollout::Fleet {
                router: router.clone(),
                membership: membership.clone(),
                proxies: proxies.clone(),
                me: config.node_id,
            },
            traffic.clone(),
            shutdown.clone(),
        ));
        let cluster_api = Arc::new(ClusterApi::new(
            router.clone(),
            membership,
            status.clone(),
            proxies,
            sm.clone(),
            traffic.clone(),
        ));
        let ui = crate::ui::Page::new(
            Arc::new(crate::ui::NodeSource {
                cluster: cluster_api.clone(),
                config: config_api.clone(),
                rollouts: rollout_api.clone(),
            }),
            crate::ui::Access::for_admin(tls.is_some(), config.listen.admin),
        );
        let rollout_svc = RolloutServiceServer::from_arc(rollout_api);
        let config_svc = ConfigServiceServer::from_arc(config_api)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        let cluster_svc = ClusterServiceServer::from_arc(cluster_api)
            .max_encoding_message_size(256 * 1024 * 1024);
        let agent_svc = AgentServiceServer::new(AgentApi::new(
            agent_writes.clone(),
            sm.clone(),
            leadership.clone(),
            router.clone(),
            write_metrics.clone(),
            config.node_id,
            config.region.clone(),
            shutdown.clone(),
        ));
        // CSDS on the API port too, where operators' tools look for it.
        let csds_svc = envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer::new(xds.clone());
        tasks.spawn(crate::leases::run(
            leadership,
            sm.clone(),
            agent_writes,
            write_metrics.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::status::run_xds_gate(
            status.clone(),
            router.clone(),
            Duration::from_millis(config.xds.serve_persisted_after_ms),
            shutdown.clone(),
        ));
        tasks.spawn(exit_on_raft_fatal(raft.clone(), shutdown.clone()));
        tasks.spawn(forget_removed_peers(
            raft.clone(),
            incarnations.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(count_snapshots(
            raft.clone(),
            write_metrics.clone(),
            shutdown.clone(),
        ));
        let rx = shutdown.clone();
        let api_tls = tls.as_ref().map(|t| t.api.clone());
        tasks.spawn(async move {
            let routes = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .layer(AuthzLayer)
                .add_service(config_svc)
                .add_service(cluster_svc)
                .add_service(rollout_svc)
                .add_service(agent_svc)
                .add_service(csds_svc);
            match api_tls {
                Some(t) => {
                    routes
                        .serve_with_incoming_shutdown(
                            meridian_tls::incoming(api_l, t),
                            until_stop(rx),
                        )
                        .await
                }
                None => {
                    routes
                        .serve_with_incoming_shutdown(incoming(api_l), until_stop(rx))
                        .await
                }
            }
            .map_err(|e| format!("api listener: {e}"))
        });

        let admin = Arc::new(crate::admin::Admin {
            status,
            faults,
            disk_faults,
            incarnations,
            fault_injection: config.enable_fault_injection,
            write_metrics,
            xds: xds.clone(),
            sm: sm.clone(),
            ui,
        });
        let rx = shutdown.clone();
        let xds_tls = tls.as_ref().map(|t| t.xds.clone());
        // Envoys push their stats where they get their config: same
        // listener, TLS and identities.
        let sink =
            tonic::service::Routes::new(MetricsSink::new(traffic, shutdown.clone()).into_server());
        tasks.spawn(async move {
            match xds_tls {
                Some(t) => {
                    meridian_xds::serve_incoming_with(
                        meridian_tls::incoming(xds_l, t),
                        xds,
                        sink,
                        until_stop(rx),
                    )
                    .await
                }
                None => meridian_xds::serve_with(xds_l, xds, sink, until_stop(rx)).await,
            }
            .map_err(|e| format!("xds listener: {e}"))
        });
        if let (Some(t), Some(c)) = (&tls, &config.tls) {
            let every = Duration::from_millis(c.reload_interval_ms);
            let (sources, rx) = (t.all(), shutdown.clone());
            tasks.spawn(async move {
                meridian_tls::reload_loop(sources, every, until_stop(rx)).await;
                Ok(())
            });
        }

        let router = crate::admin::router(admin);
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
            let client = tls.as_ref().map(|t| t.client.clone());
            tasks.spawn(join_cluster(join, me, client, rx));
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
            tls = tls.is_some(),
            identity = %tls.as_ref().map(|t| t.client.identity().to_string()).unwrap_or_default(),
            data_dir = %config.data_dir.display(),
            "node started"
        );
        Ok(NodeHandle {
            id: config.node_id,
            raft,
            sm,
            stop,
            tasks,
        })
    }
}

impl NodeHandle {
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn state_machine(&self) -> &StateMachineStore {
        &self.sm
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
        self.raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Raft(format!("shutdown: {e}")))?;
        info!("node stopped");
        Ok(())
    }
}
