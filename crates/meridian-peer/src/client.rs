//! The sending side: openraft's network factory and per-peer clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::v1::raft_service_client::RaftServiceClient;
use meridian_proto::v1::RaftMessage;
use meridian_store::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::faults::Faults;
use crate::wire;

/// Creates clients for peers. Channels are cached per address and shared by
/// the clients openraft creates, so reconnecting replication streams does not
/// open new TCP connections.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    self_id: NodeId,
    faults: Faults,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
}

impl PeerNetworkFactory {
    pub fn new(self_id: NodeId, faults: Faults, connect_timeout: Duration) -> Self {
        PeerNetworkFactory {
            self_id,
            faults,
            channels: Default::default(),
            connect_timeout,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = endpoint.connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        // openraft never asks for a client to the node itself; if it did, the
        // node would vote for itself twice.
        debug_assert_ne!(target, self.self_id);
        PeerClient {
            self_id: self.self_id,
            target,
            node: node.clone(),
            channel: self.channel(&node.peer_addr),
            faults: self.faults.clone(),
        }
    }
}

pub struct PeerClient {
    self_id: NodeId,
    target: NodeId,
    node: NodeInfo,
    channel: Result<Channel, String>,
    faults: Faults,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.faults
            .send(self.target)
            .await
            .map_err(|d| RPCError::Unreachable(Unreachable::new(&d)))?;
        let channel = self
            .channel
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let msg = RaftMessage {
            payload: wire::encode(req),
            from: self.self_id,
        };
        let fut = async {
            match rpc {
                Rpc::Append => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::Snapshot => client.install_snapshot(msg).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(
                    format!(
                        "peer {} did not answer within {:?}",
                        self.target,
                        option.hard_ttl()
                    ),
                ))))
            }
            Ok(Err(status)) => {
                let err = TransportError(format!(
                    "peer {} ({}): {}",
                    self.target,
                    self.node.peer_addr,
                    status.message()
                ));
                return Err(match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let decode_err = |e: wire::WireError| RPCError::Network(NetworkError::new(&e));
        if reply.is_error {
            let err: RaftError<NodeId, E> = wire::decode(&reply.payload).map_err(decode_err)?;
            Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                err,
            )))
        } else {
            wire::decode(&reply.payload).map_err(decode_err)
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
