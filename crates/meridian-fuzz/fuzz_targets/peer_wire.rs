//! Every message the peer listener decodes, and every reply a leader
//! decodes: arbitrary bytes are an error, never a panic or an abort.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_peer::wire::decode;
use meridian_store::{NodeId, NodeInfo, Txn, TxnOutcome, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = decode::<VoteRequest<NodeId>>(data);
    let _ = decode::<InstallSnapshotRequest<TypeConfig>>(data);
    let _ = decode::<AppendEntriesResponse<NodeId>>(data);
    let _ = decode::<VoteResponse<NodeId>>(data);
    let _ = decode::<InstallSnapshotResponse<NodeId>>(data);
    let _ = decode::<RaftError<NodeId>>(data);
    let _ = decode::<RaftError<NodeId, InstallSnapshotError>>(data);
    let _ = decode::<NodeInfo>(data);
    // The internal forwarding RPC: an agent's transaction and its outcome.
    let _ = decode::<Txn>(data);
    let _ = decode::<Result<TxnOutcome, String>>(data);
});
