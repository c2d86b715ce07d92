use std::time::Duration;

use meridian_store::{Batch, Entry, NodeInfo, ObjectKey, Request, Txn, TxnOp, Vote};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::AppendEntriesRequest;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::{PeerNetworkFactory, MAX_MESSAGE_BYTES};
use crate::faults::Faults;

/// One log entry holding one transaction of `bytes` bytes of value.
fn entry(index: u64, bytes: usize) -> Entry {
    let txn = Txn {
        request_id: format!("r{index}"),
        ops: vec![TxnOp::Put {
            key: ObjectKey::new("endpoints", "c.web"),
            value: vec![b' '; bytes],
            expected_revision: None,
        }],
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::Batch(Batch {
            base_config_seq: None,
            proposed_at_ms: 0,
            txns: vec![txn],
        })),
    }
}

#[tokio::test]
async fn an_append_entries_over_the_message_cap_asks_for_fewer_entries() {
    // Nothing listens there: the request must be turned down before it is sent.
    let node = NodeInfo {
        peer_addr: "127.0.0.1:9".into(),
        ..Default::default()
    };
    let mut client = PeerNetworkFactory::new(1, Faults::default(), Duration::from_millis(100))
        .new_client(2, &node)
        .await;
    let per_entry = 16 * 1024 * 1024;
    let n = 6; // 96 MiB in all, over the 64 MiB cap
    let rpc = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: (1..=n).map(|i| entry(i, per_entry)).collect(),
        leader_commit: None,
    };
    let option = RPCOption::new(Duration::from_secs(1));
    match client.append_entries(rpc, option).await {
        Err(RPCError::PayloadTooLarge(too_large)) => {
            let hint = too_large.entries_hint();
            assert!((1..n).contains(&hint), "hint {hint} of {n} entries");
            assert!(
                hint as usize * per_entry < MAX_MESSAGE_BYTES,
                "hint {hint} still too large"
            );
        }
        other => panic!("a 96 MiB append-entries: {other:?}"),
    }
}
