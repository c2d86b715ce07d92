//! Lease expiry, decided once, by the leader, through the log.
//!
//! A renewal the leader saw happen is measured on its own monotonic clock.
//! A lease it inherits (it became leader, or first sees the lease) keeps the
//! deadline the lease carries in replicated state: the leader time of its
//! last renewal (`updated_at_ms`, from the command) plus its TTL, plus
//! [`CLOCK_SLACK`] for skew between the leaders' clocks, and never more
//! than TTL + slack from now. So a leader that flaps faster than the TTL
//! cannot keep a dead agent's lease alive: it expires at most TTL + slack
//! after its last renewal as long as the controllers' clocks agree within
//! the slack. The expiry itself is a transaction guarded by the lease's
//! revision, so a renewal that races with it wins.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_model::reported::{Lease, KIND_LEASE};
use meridian_store::{ObjectKey, Txn, TxnOp, TxnOutcome};
use tokio::sync::watch;
use tracing::{info, warn};

use meridian_store::StateMachineStore;

use crate::agent_writes::AgentWrites;
use crate::leadership::{LeaderIs, Leadership};
use crate::metrics::WriteMetrics;
use crate::request_ids;

/// How far the controllers' wall clocks may disagree before an inherited
/// lease expires early (a new leader ahead) or late (behind).
pub(crate) const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// How long an inherited lease has left: until the leader time of its last
/// change plus its TTL and the slack, at most TTL + slack.
fn inherited_left(updated_at_ms: u64, ttl_ms: u64, now_ms: u64) -> Duration {
    let slack_ms = CLOCK_SLACK.as_millis() as u64;
    let deadline_ms = updated_at_ms
        .saturating_add(ttl_ms)
        .saturating_add(slack_ms);
    Duration::from_millis(deadline_ms.saturating_sub(now_ms).min(ttl_ms + slack_ms))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) async fn run(
    leadership: Leadership,
    sm: StateMachineStore,
    writes: AgentWrites,
    metrics: Arc<WriteMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // cluster -> (lease revision, when it expires on this leader's clock)
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
            // New leadership: every lease is inherited.
            seen.clear();
            was_leader = true;
        }
        let (now, wall_ms) = (Instant::now(), now_ms());
        for (key, obj) in sm.list(Some(KIND_LEASE)) {
            let Ok(lease) = serde_json::from_slice::<Lease>(&obj.value) else {
                continue;
            };
            let deadline = match seen.get(&key.name) {
                Some(&(revision, deadline)) if revision == obj.revision => deadline,
                // Renewed under this leadership, so proposed by this node.
                Some(_) => now + Duration::from_millis(lease.ttl_ms),
                None => now + inherited_left(obj.updated_at_ms, lease.ttl_ms, wall_ms),
            };
            seen.insert(key.name.clone(), (obj.revision, deadline));
            if lease.expired || now < deadline {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{inherited_left, CLOCK_SLACK};

    #[test]
    fn an_inherited_lease_keeps_its_replicated_deadline() {
        let slack = CLOCK_SLACK.as_millis() as u64;
        let (renewed, ttl) = (1_000_000, 4_000);
        // A new leader 3 s after the last renewal: 1 s of TTL and the slack.
        assert_eq!(
            inherited_left(renewed, ttl, renewed + 3_000),
            Duration::from_millis(1_000 + slack)
        );
        // Long past it: at once, however often leadership changed meanwhile.
        assert_eq!(
            inherited_left(renewed, ttl, renewed + 60_000),
            Duration::ZERO
        );
        // A clock far behind the renewer's gives no more than TTL + slack.
        assert_eq!(
            inherited_left(renewed, ttl, 0),
            Duration::from_millis(ttl + slack)
        );
    }
}
