//! The sending side: openraft's network factory and per-peer clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::v1::raft_service_client::RaftServiceClient;
use meridian_proto::v1::RaftMessage;
use meridian_store::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::faults::Faults;
use crate::incarnation::Incarnations;
use crate::unreachable::Unreachables;
use crate::wire;

/// The largest message the peer transport sends or takes, both ways.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Room for the message's own framing around the payload.
const FRAMING_BYTES: usize = 1024;

/// Creates clients for peers. Channels are cached per address and shared by
/// the clients openraft creates, so reconnecting replication streams does not
/// open new TCP connections.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    self_id: NodeId,
    faults: Faults,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    tls: Option<Arc<meridian_tls::TlsSource>>,
    unreachable: Unreachables,
    incarnations: Incarnations,
}

impl PeerNetworkFactory {
    /// The per-peer failure counts (and their rate-limited log) of every
    /// client this factory makes.
    pub fn unreachables(&self) -> Unreachables {
        self.unreachable.clone()
    }

    pub fn new(self_id: NodeId, faults: Faults, connect_timeout: Duration) -> Self {
        PeerNetworkFactory {
            self_id,
            faults,
            channels: Default::default(),
            connect_timeout,
            tls: None,
            unreachable: Unreachables::default(),
            // Incarnation 0 sends none and checks none: for tests without a
            // data dir; a node passes its own (`with_incarnations`).
            incarnations: Incarnations::in_memory(0),
        }
    }

    /// Sends this data dir's incarnation and refuses peers whose own changed.
    pub fn with_incarnations(mut self, incarnations: Incarnations) -> Self {
        self.incarnations = incarnations;
        self
    }

    /// Dials peers over mutual TLS with this (the node's) certificate, and
    /// insists each peer is the node openraft meant to reach.
    pub fn with_tls(mut self, tls: Arc<meridian_tls::TlsSource>) -> Self {
        self.tls = Some(tls);
        self
    }

    fn channel(&self, addr: &str, target: NodeId) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        // Keyed by id too: over TLS a channel is pinned to the node it dials.
        let key = format!("{target}@{addr}");
        if let Some(ch) = channels.get(&key) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = meridian_tls::connect_lazy(
            endpoint,
            self.tls
                .as_ref()
                .map(|t| (t, meridian_tls::Expect::Node(target))),
        );
        channels.insert(key, ch.clone());
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
            channel: self.channel(&node.peer_addr, target),
            faults: self.faults.clone(),
            unreachable: self.unreachable.clone(),
            incarnations: self.incarnations.clone(),
        }
    }
}

pub struct PeerClient {
    self_id: NodeId,
    target: NodeId,
    node: NodeInfo,
    channel: Result<Channel, String>,
    faults: Faults,
    unreachable: Unreachables,
    incarnations: Incarnations,
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

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Append => "append-entries",
            Rpc::Vote => "vote",
            Rpc::Snapshot => "install-snapshot",
        }
    }
}

impl PeerClient {
    async fn call<Resp, E>(
        &self,
        rpc: Rpc,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
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
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let msg = RaftMessage {
            payload,
            from: self.self_id,
            incarnation: self.incarnations.own(),
            target_incarnation: self.incarnations.known(self.target),
        };
        let fut = async {
            match rpc {
                Rpc::Append => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::Snapshot => client.install_snapshot(msg).await,
            }
        };
        let note = |error: &str| {
            self.unreachable
                .note(self.target, &self.node.peer_addr, rpc.name(), error)
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(_) => {
                let error = format!(
                    "peer {} did not answer within {:?}",
                    self.target,
                    option.hard_ttl()
                );
                note(&error);
                return Err(RPCError::Network(NetworkError::new(&TransportError(error))));
            }
            // The peer refused us for its own changed data dir (it logged
            // why): unreachable, so openraft backs off instead of spinning.
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    format!("peer {}: {}", self.target, status.message()),
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
                    tonic::Code::Unavailable => {
                        note(status.message());
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        // A follower whose data dir changed must never reach openraft: its
        // empty log would read as a log going backwards (openraft asserts
        // it never does), and its answers are not the ones counted on.
        if let Err(m) = self.incarnations.check(self.target, reply.incarnation) {
            return Err(RPCError::Unreachable(Unreachable::new(&m)));
        }
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
        let payload = wire::encode(&rpc);
        if let Some(hint) = entries_hint(payload.len(), rpc.entries.len()) {
            // openraft splits the range only on this error; a network error
            // would resend the same range forever.
            tracing::debug!(
                target = self.target,
                bytes = payload.len(),
                entries = rpc.entries.len(),
                hint,
                "append-entries too large, asking for fewer entries"
            );
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.call(Rpc::Append, payload, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, wire::encode(&rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, wire::encode(&rpc), &option).await
    }
}

/// How many entries to send instead, when `bytes` of `entries` entries would
/// not fit in one message: a share of them sized to fit, fewer than sent.
/// `None` when the message fits, or is one entry that cannot be split (the
/// lanes keep entries far smaller than a message).
fn entries_hint(bytes: usize, entries: usize) -> Option<u64> {
    let cap = MAX_MESSAGE_BYTES - FRAMING_BYTES;
    if bytes <= cap || entries <= 1 {
        return None;
    }
    let fitting = (entries as u128 * cap as u128 / bytes as u128) as u64;
    Some(fitting.clamp(1, entries as u64 - 1))
}

#[cfg(test)]
mod tests;
