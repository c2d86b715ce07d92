//! The endpoint lane's admission: agents' reports and lease changes go into
//! the log as they come, without config validation and without the config
//! guard (`base_config_seq: None`), so endpoint churn never makes config
//! writes retry. Their own guards (the cluster's claim, a lease's revision)
//! are checked at apply, like any precondition.
//!
//! Skipping validation is safe only for the agents' own kinds, so that is
//! the one thing checked here: whatever reaches this lane (an agent's
//! session, a lease expiry, or another node's `AgentTxn` on the peer
//! listener) can touch nothing else, and no more than a bounded size.

use meridian_model::reported::{KIND_CLAIM, KIND_ENDPOINTS, KIND_LEASE};
use meridian_store::limits::MAX_TXN_BYTES;
use meridian_store::Txn;

use super::group_commit::{Admission, Admitted, Pending};
use crate::error::ApiError;
use crate::metrics::Lane;

/// Most operations in one agent transaction: a full resync of a large
/// cluster, one op per service.
const MAX_AGENT_OPS: usize = 10_000;
/// Agents' request ids carry cluster, session and stream.
const MAX_AGENT_REQUEST_ID: usize = 512;

pub(crate) struct AgentKindsOnly;

impl Admission for AgentKindsOnly {
    const LANE: Lane = Lane::Endpoint;
    const MAX_BATCH: usize = 4096;

    fn admit(&mut self, queued: Vec<Pending>, _later: &mut Vec<Pending>) -> Admitted {
        let mut accepted = Vec::with_capacity(queued.len());
        for p in queued {
            match check(&p.txn) {
                Ok(()) => accepted.push(p),
                Err(reason) => p.answer(Err(ApiError::Invalid(reason))),
            }
        }
        Admitted {
            base_config_seq: None,
            accepted,
        }
    }
}

/// Why an endpoint-lane transaction may not enter the log, if it may not.
fn check(txn: &Txn) -> Result<(), String> {
    if txn.ops.is_empty() {
        return Err("ops: an agent transaction needs at least one op".into());
    }
    if txn.ops.len() > MAX_AGENT_OPS {
        return Err(format!(
            "ops: {} operations, at most {MAX_AGENT_OPS} per agent transaction",
            txn.ops.len()
        ));
    }
    if txn.request_id.len() > MAX_AGENT_REQUEST_ID {
        return Err(format!("request_id: at most {MAX_AGENT_REQUEST_ID} bytes"));
    }
    for (i, op) in txn.ops.iter().enumerate() {
        let kind = op.key().kind.as_str();
        if ![KIND_CLAIM, KIND_LEASE, KIND_ENDPOINTS].contains(&kind) {
            return Err(format!(
                "ops[{i}].key.kind: {kind:?} is not an agent kind ({KIND_CLAIM}, {KIND_LEASE}, \
                 {KIND_ENDPOINTS}); config is written through the config API"
            ));
        }
    }
    let size = txn.size_bytes();
    if size > MAX_TXN_BYTES {
        return Err(format!(
            "ops: the transaction is {size} bytes, at most {MAX_TXN_BYTES}; report fewer endpoints per update"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
