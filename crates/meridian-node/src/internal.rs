//! Peer-only writes: a node serving an agent hands the agent's transactions
//! to the leader's endpoint lane. On the peer listener, never the client API,
//! because these writes skip config validation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_peer::wire;
use meridian_proto::v1::internal_service_client::InternalServiceClient;
use meridian_proto::v1::internal_service_server::InternalService;
use meridian_proto::v1::{RaftMessage, RaftReply};
use meridian_store::{Txn, TxnOutcome};
use tonic::{Request, Response, Status};

use crate::leader::LeaderIs;
use crate::node::Shared;
use crate::proposer::WriteError;

pub(crate) struct InternalApi {
    s: Arc<Shared>,
}

impl InternalApi {
    pub(crate) fn new(s: Arc<Shared>) -> Self {
        InternalApi { s }
    }
}

#[tonic::async_trait]
impl InternalService for InternalApi {
    async fn agent_txn(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        let txn: Txn = wire::decode(&req.into_inner().payload)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result: Result<TxnOutcome, String> = match self.s.lane.submit(txn).await {
            Ok(o) => Ok(o),
            Err(WriteError::NotLeader) => {
                return Err(Status::unavailable("this node is not the leader"))
            }
            Err(WriteError::Api(e)) => Err(e.to_string()),
        };
        Ok(Response::new(RaftReply {
            payload: wire::encode(&result),
            is_error: result.is_err(),
        }))
    }
}

impl Shared {
    /// Commits an agent's transaction through the leader's endpoint lane,
    /// from any node; retries while leadership moves, up to the write timeout.
    pub(crate) async fn submit_agent_txn(&self, txn: Txn) -> Result<TxnOutcome, Status> {
        let deadline = self.request_deadline();
        loop {
            let err = match self.await_leader(deadline).await? {
                LeaderIs::Me => match self.lane.submit(txn.clone()).await {
                    Ok(o) => return Ok(o),
                    Err(WriteError::NotLeader) => Status::unavailable("leader changed"),
                    Err(WriteError::Api(e)) => return Err(e.into_status()),
                },
                LeaderIs::Other(info) => {
                    let ch = self
                        .peer_channels
                        .get(&info.peer_addr)
                        .map_err(Status::internal)?;
                    let msg = RaftMessage {
                        payload: wire::encode(&txn),
                        from: self.id,
                    };
                    match InternalServiceClient::new(ch).agent_txn(msg).await {
                        Ok(reply) => {
                            let r: Result<TxnOutcome, String> =
                                wire::decode(&reply.into_inner().payload)
                                    .map_err(|e| Status::internal(e.to_string()))?;
                            return r.map_err(Status::unavailable);
                        }
                        Err(st) if st.code() == tonic::Code::Unavailable => st,
                        Err(st) => return Err(st),
                    }
                }
                LeaderIs::Unknown | LeaderIs::Removed => Status::unavailable("no leader"),
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
