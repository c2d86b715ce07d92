//! Agents' writes from any node: routed to the leader's endpoint lane, over
//! the peer listener when another node leads (never the client API, because
//! these writes skip config validation).

use meridian_peer::{wire, Faults};
use meridian_proto::v1::internal_service_client::InternalServiceClient;
use meridian_proto::v1::RaftMessage;
use meridian_store::{NodeId, NodeInfo, Txn, TxnOutcome};

use crate::error::ApiError;
use crate::routing::{Router, Target};
use crate::write::EndpointWrites;

#[derive(Clone)]
pub(crate) struct AgentWrites {
    router: Router,
    lane: EndpointWrites,
    faults: Faults,
}

impl AgentWrites {
    pub(crate) fn new(router: Router, lane: EndpointWrites, faults: Faults) -> Self {
        AgentWrites {
            router,
            lane,
            faults,
        }
    }

    /// Commits an agent's transaction through the leader's endpoint lane.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<TxnOutcome, ApiError> {
        let txn = &txn;
        self.router
            .route(false, |target, deadline| async move {
                match target {
                    Target::Here => self.lane.submit(txn.clone(), deadline).await,
                    Target::Leader(id, info) => self.forward(id, &info, txn).await,
                }
            })
            .await
    }

    async fn forward(
        &self,
        to: NodeId,
        leader: &NodeInfo,
        txn: &Txn,
    ) -> Result<TxnOutcome, ApiError> {
        // Through the same faults as Raft's own RPCs: a partition cuts agents'
        // writes off too.
        self.faults
            .send(to)
            .await
            .map_err(|d| ApiError::Unavailable(d.to_string()))?;
        let msg = RaftMessage {
            payload: wire::encode(txn),
            from: self.router.leadership().id(),
            ..Default::default()
        };
        let reply = InternalServiceClient::new(self.router.peer_channel(leader)?)
            .agent_txn(msg)
            .await?;
        let r: Result<TxnOutcome, String> = wire::decode(&reply.into_inner().payload)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // Errors come back as a status, which keeps their kind; only an
        // older build puts one into the payload.
        r.map_err(ApiError::Unavailable)
    }
}
