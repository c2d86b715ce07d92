//! Lease expiry, decided once, by the leader, through the log.
//!
//! Every node, follower or leader, watches the leases and notes on its own
//! monotonic clock when it saw each one renewed (its revision change, once
//! it has replayed the log it found at start): that renewal's deadline is
//! then + TTL. A new leader keeps the deadlines
//! it noted as a follower, so no wall clock decides them and a leader that
//! flaps faster than the TTL cannot keep a dead agent's lease alive (each
//! node's deadline for the last renewal stays where it was).
//!
//! A lease a node never saw renewed (it just started, or installed a
//! snapshot) is inherited: its deadline is the time of its last renewal
//! in replicated state (`updated_at_ms`, the proposing leader's clock) plus
//! TTL plus [`CLOCK_SLACK`], never more than TTL + slack from now. "Now" is read on two clocks there, and the later
//! deadline wins: this node's wall clock, and the log's (the time the last
//! batch it applied as a follower carried, plus how long ago it saw it, on
//! its monotonic clock). And the renewals themselves are stamped with the
//! log's time where the leader's wall clock is behind it
//! (`write::leader_time`), so one committed by a leader stepped back is not
//! stamped in the past for the next leader to read.
//!
//! Before, a new leader computed every deadline from its own wall clock:
//! one minutes ahead of the renewer's (or a renewal stamped by a leader
//! minutes behind) expired live agents' leases the moment it was elected,
//! and the `drop` policy took their endpoints out of Envoy's EDS (the chaos
//! suite's `skewed-successor`, 503s through Envoy). The expiry itself is a
//! transaction guarded by the lease's revision, so a renewal that races
//! with it wins.

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

/// The log's clock: the leader time the last applied batch carried, and
/// when this node applied it.
#[derive(Default)]
struct LogClock {
    last: Option<(u64, Instant)>,
}

impl LogClock {
    fn observe(&mut self, last_batch: Option<(u64, Instant)>) {
        if last_batch.is_some() {
            self.last = last_batch;
        }
    }

    fn now_ms(&self, now: Instant) -> Option<u64> {
        crate::write::leader_time::log_now_ms(self.last, now)
    }
}

/// How long an inherited lease has left: the later of what the wall clock
/// and the log's clock say. No floor: a node that restarted and leads at
/// once would give a dead agent's lease the floor again at every restart
/// (`leases_expire_under_leader_churn`).
fn inherited_deadline_left(
    updated_at_ms: u64,
    ttl_ms: u64,
    wall_ms: u64,
    log_ms: Option<u64>,
) -> Duration {
    let by_wall = inherited_left(updated_at_ms, ttl_ms, wall_ms);
    let by_log = log_ms.map_or(Duration::ZERO, |l| inherited_left(updated_at_ms, ttl_ms, l));
    by_wall.max(by_log)
}

pub(crate) async fn run(
    leadership: Leadership,
    sm: StateMachineStore,
    writes: AgentWrites,
    metrics: Arc<WriteMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // cluster -> (lease revision, when it expires on this node's clock)
    let mut seen: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut log_clock = LogClock::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        let is_leader = matches!(leadership.leader(), LeaderIs::Me);
        if !is_leader {
            // Only the earlier leaders' batches: this node's own, once it
            // leads, carry its own wall clock.
            log_clock.observe(sm.last_batch());
        }
        let (now, wall_ms) = (Instant::now(), now_ms());
        let log_ms = log_clock.now_ms(now);
        // A renewal replayed from this node's own log after a restart is
        // old news: its time is only known from the replicated state.
        let live = leadership.replayed_log_found_at_start();
        for (key, obj) in sm.list(Some(KIND_LEASE)) {
            let Ok(lease) = serde_json::from_slice::<Lease>(&obj.value) else {
                continue;
            };
            let deadline = match seen.get(&key.name) {
                Some(&(revision, deadline)) if revision == obj.revision => deadline,
                // Renewed since the last tick: seen now, to within a tick.
                Some(_) if live => now + Duration::from_millis(lease.ttl_ms),
                _ => {
                    now + inherited_deadline_left(obj.updated_at_ms, lease.ttl_ms, wall_ms, log_ms)
                }
            };
            seen.insert(key.name.clone(), (obj.revision, deadline));
            if !is_leader || lease.expired || now < deadline {
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

    use super::{inherited_deadline_left, inherited_left, LogClock, CLOCK_SLACK};

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

    /// A new leader whose wall clock is minutes ahead of the renewer's
    /// keeps a live agent's lease: the log's clock says it was renewed 3 s
    /// ago. Only when both clocks say it is past does it expire at once.
    #[test]
    fn a_skewed_new_leader_reads_the_log_clock_too() {
        let slack = CLOCK_SLACK.as_millis() as u64;
        let (renewed, ttl) = (1_000_000, 30_000);
        let wall_ahead = renewed + 339_000;
        assert_eq!(inherited_left(renewed, ttl, wall_ahead), Duration::ZERO);
        assert_eq!(
            inherited_deadline_left(renewed, ttl, wall_ahead, Some(renewed + 3_000)),
            Duration::from_millis(27_000 + slack)
        );
        assert_eq!(
            inherited_deadline_left(renewed, ttl, wall_ahead, Some(renewed + 60_000)),
            Duration::ZERO
        );
        // No batch applied since this node started: the wall clock alone.
        assert_eq!(
            inherited_deadline_left(renewed, ttl, renewed + 3_000, None),
            Duration::from_millis(27_000 + slack)
        );
    }

    /// Finding 6's open case (`skewed-successor` seeds 11 and 17): a
    /// renewal committed by a new leader whose clock is 300 s behind the
    /// old one's, read 2 s later by a node with a true clock that restarted
    /// after it (so it never saw it live and has no log clock yet).
    /// Stamped with that leader's wall clock it reads as 298 s past and
    /// expires at once; stamped with the log's time it has its TTL left.
    #[test]
    fn a_renewal_committed_by_a_leader_stepped_back_keeps_its_ttl() {
        use crate::write::leader_time::proposed_at_ms;
        let t0 = std::time::Instant::now();
        let (true_ms, ttl, slack) = (1_800_000_000_000, 30_000, CLOCK_SLACK.as_millis() as u64);
        let behind = true_ms - 300_000;
        // The old leader's last batch, applied 1 s before the renewal.
        let stamp = proposed_at_ms(
            behind,
            Some((true_ms - 1_000, t0)),
            t0 + Duration::from_secs(1),
        );
        let left = inherited_deadline_left(stamp, ttl, true_ms + 2_000, None);
        assert!(left >= Duration::from_millis(ttl - 2_100), "{left:?}");
        assert!(left <= Duration::from_millis(ttl + slack), "{left:?}");
        // What the wall clock alone stamped.
        assert_eq!(
            inherited_deadline_left(behind, ttl, true_ms + 2_000, None),
            Duration::ZERO
        );
    }

    #[test]
    fn the_log_clock_runs_on_from_the_last_batch_it_saw() {
        let t0 = std::time::Instant::now();
        let mut c = LogClock::default();
        assert_eq!(c.now_ms(t0), None);
        c.observe(Some((5_000, t0)));
        assert_eq!(c.now_ms(t0 + Duration::from_millis(700)), Some(5_700));
        // Nothing applied since a snapshot: the clock runs on.
        c.observe(None);
        assert_eq!(c.now_ms(t0 + Duration::from_millis(700)), Some(5_700));
        c.observe(Some((9_000, t0 + Duration::from_millis(800))));
        assert_eq!(c.now_ms(t0 + Duration::from_millis(800)), Some(9_000));
    }
}
