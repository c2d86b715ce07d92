//! The peer-only service: the leader's side of [`crate::agent_writes`].

use std::time::Duration;

use meridian_peer::{wire, Faults};
use meridian_proto::v1::internal_service_server::InternalService;
use meridian_proto::v1::{RaftMessage, RaftReply};
use meridian_store::{Txn, TxnOutcome};
use tonic::{Request, Response, Status};

use crate::retry::request_deadline;
use crate::write::EndpointWrites;

pub(crate) struct InternalApi {
    lane: EndpointWrites,
    faults: Faults,
    write_timeout: Duration,
}

impl InternalApi {
    pub(crate) fn new(lane: EndpointWrites, faults: Faults, write_timeout: Duration) -> Self {
        InternalApi {
            lane,
            faults,
            write_timeout,
        }
    }
}

#[tonic::async_trait]
impl InternalService for InternalApi {
    async fn agent_txn(&self, req: Request<RaftMessage>) -> Result<Response<RaftReply>, Status> {
        // Like every RPC on the peer listener: through the faults first.
        let txn: Txn = meridian_peer::accept(&self.faults, req)?;
        let outcome = self
            .lane
            .submit(txn, request_deadline(self.write_timeout))
            .await?;
        let result: Result<TxnOutcome, String> = Ok(outcome);
        Ok(Response::new(RaftReply {
            payload: wire::encode(&result),
            is_error: false,
            // Not a Raft message: no incarnation is checked here.
            ..Default::default()
        }))
    }
}
