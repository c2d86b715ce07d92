//! Lease expiry, decided once, by the leader, through the log.
//!
//! The leader measures each lease's silence on its own monotonic clock from
//! the moment it saw the lease's last change (or from when it became
//! leader), never from timestamps another node wrote: clock skew between
//! nodes cannot expire a live agent. After a leader change every lease gets
//! a full TTL again. The expiry itself is a transaction guarded by the
//! lease's revision, so a renewal that races with it wins.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_model::reported::{Lease, KIND_LEASE};
use meridian_store::{ObjectKey, Txn, TxnOp, TxnOutcome};
use tokio::sync::watch;
use tracing::{info, warn};

use meridian_store::StateMachineStore;

use crate::agent_writes::AgentWrites;
use crate::leadership::{LeaderIs, Leadership};
use crate::metrics::WriteMetrics;
use crate::request_ids;

pub(crate) async fn run(
    leadership: Leadership,
    sm: StateMachineStore,
    writes: AgentWrites,
    metrics: Arc<WriteMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // cluster -> (lease revision, when this leader saw it change)
    let mut seen: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut was_leader = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        let is_leader = matches!(leadership.leader(), LeaderIs::Me);
        if !is_leader {
            was_leader = false;
            continue;
        }
        if !was_leader {
            // New leadership: every lease starts a fresh TTL now.
            seen.clear();
            was_leader = true;
        }
        let now = Instant::now();
        for (key, obj) in sm.list(Some(KIND_LEASE)) {
            let Ok(lease) = serde_json::from_slice::<Lease>(&obj.value) else {
                continue;
            };
            let entry = seen.entry(key.name.clone()).or_insert((obj.revision, now));
            if entry.0 != obj.revision {
                *entry = (obj.revision, now);
            }
            if lease.expired || now.duration_since(entry.1) < Duration::from_millis(lease.ttl_ms) {
                continue;
            }
            let expired = Lease {
                expired: true,
                ..lease.clone()
            };
            let txn = Txn {
                request_id: format!("{}{}-{}", request_ids::EXPIRY, key.name, obj.revision),
                ops: vec![TxnOp::Put {
                    key: ObjectKey::new(KIND_LEASE, key.name.clone()),
                    value: serde_json::to_vec(&expired).expect("plain struct"),
                    expected_revision: Some(obj.revision),
                }],
            };
            match writes.commit(txn).await {
                Ok(TxnOutcome::Committed { .. }) => {
                    metrics.lease_expiries.fetch_add(1, Ordering::Relaxed);
                    info!(cluster = %key.name, session = %lease.session, policy = ?lease.on_expiry, ttl_ms = lease.ttl_ms, "agent lease expired");
                }
                Ok(_) => {} // renewed meanwhile, or already expired
                Err(e) => {
                    warn!(cluster = %key.name, error = %e, "could not expire lease")
                }
            }
        }
        seen.retain(|name, _| sm.get(&ObjectKey::new(KIND_LEASE, name.clone())).is_some());
    }
}
