//! The receiving side: the tonic `RaftService` handed to openraft.

use meridian_proto::v1::raft_service_server::RaftService;
use meridian_proto::v1::{RaftMessage, RaftReply};
use meridian_store::Raft;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

use crate::activity::Activity;
use crate::faults::Faults;
use crate::incarnation::Incarnations;
use crate::wire;

pub struct PeerService {
    raft: Raft,
    faults: Faults,
    activity: Activity,
    incarnations: Incarnations,
}

impl PeerService {
    pub fn new(raft: Raft, faults: Faults, activity: Activity) -> Self {
        PeerService {
            raft,
            faults,
            activity,
            incarnations: Incarnations::in_memory(0),
        }
    }

    /// Refuses Raft messages from a peer whose data dir changed, and those
    /// meant for an earlier life of this node's data dir.
    pub fn with_incarnations(mut self, incarnations: Incarnations) -> Self {
        self.incarnations = incarnations;
        self
    }

    fn accept_raft<T: DeserializeOwned>(&self, req: Request<RaftMessage>) -> Result<T, Status> {
        let (from, theirs, mine) = {
            let m = req.get_ref();
            (m.from, m.incarnation, m.target_incarnation)
        };
        // Faults and the sender's identity first, as for every peer message.
        let decoded = accept(&self.faults, req)?;
        let own = self.incarnations.own();
        if own != 0 && mine != 0 && mine != own {
            // This data dir is new, and the sender knew an older one: refuse
            // everything it sends, so that nothing of the old cluster's log
            // lands on top of an empty one.
            self.incarnations.refused_as_new(from, mine);
            return Err(Status::failed_precondition(format!(
                "this node's data dir is new (incarnation {own:016x}) but node {from} knew \
                 incarnation {mine:016x}: remove this node from the cluster (`meridian cluster \
                 remove-node ID`) and start it again with a new --node-id"
            )));
        }
        if own != 0 {
            self.incarnations
                .check(from, theirs)
                .map_err(|m| Status::failed_precondition(m.to_string()))?;
        }
        Ok(decoded)
    }

    pub fn into_server(self) -> meridian_proto::v1::raft_service_server::RaftServiceServer<Self> {
        meridian_proto::v1::raft_service_server::RaftServiceServer::new(self)
            .max_decoding_message_size(crate::client::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::client::MAX_MESSAGE_BYTES)
    }
}

/// Takes an RPC on the peer listener, for every service there: over TLS,
/// the sender it names must be the node the connection authenticated (a
/// node speaks only for itself); then the faults for its sender (a
/// partition drops it), then its payload decoded.
pub fn accept<T: DeserializeOwned>(
    faults: &Faults,
    req: Request<RaftMessage>,
) -> Result<T, Status> {
    let caller = req.extensions().get::<meridian_tls::Caller>().cloned();
    let msg = req.into_inner();
    if let Some(caller) = caller {
        if caller.identity != (meridian_pki::Identity::Node { id: msg.from }) {
            tracing::warn!(
                caller = %caller.identity,
                claimed = msg.from,
                "peer message refused: its sender is not the authenticated node"
            );
            return Err(Status::permission_denied(format!(
                "{} may not send messages as node/{}: a node speaks only for itself",
                caller.identity, msg.from
            )));
        }
    }
    faults.admit(msg.from)?;
    wire::decode(&msg.payload).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize, E: Serialize>(
    incarnation: u64,
    result: Result<T, E>,
) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(match result {
        Ok(v) => RaftReply {
            payload: wire::encode(&v),
            is_error: false,
            incarnation,
        },
        Err(e) => RaftReply {
            payload: wire::encode(&e),
            is_error: true,
            incarnation,
        },
    }))
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.accept_raft(req)?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if r.is_success()) {
            self.activity.touch();
        }
        reply(self.incarnations.own(), result)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.accept_raft(req)?;
        reply(self.incarnations.own(), self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.accept_raft(req)?;
        reply(
            self.incarnations.own(),
            self.raft.install_snapshot(rpc).await,
        )
    }
}
