//! When a step has baked, decided on each node's monotonic clock.
//!
//! Every node, followers too, notes when it saw each step start (a run's
//! step and `step_started_at_ms` changing, once it has replayed the log it
//! found at start): that step has baked at then + bake time, and a node
//! that becomes leader keeps what it noted. No wall clock decides it, so a
//! new leader whose clock is minutes ahead does not promote a step the
//! moment it is elected (the chaos suite's `skewed-successor` shape, for
//! rollouts), and one minutes behind does not hold it for minutes.
//!
//! A step a node never saw start (it restarted since, or installed a
//! snapshot) is inherited from the replicated `step_started_at_ms` (the
//! leader's time, `write::leader_time`). Unlike a lease, a bake errs
//! towards waiting: the elapsed time is the lesser of what this node's
//! wall clock and the log's time say, and with no log time yet (nothing
//! applied since it started) the step bakes in full from now. A leader
//! that restarts again and again only delays a rollout; it never promotes
//! one early.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meridian_model::rollout_run::{RolloutRun, RunState};

/// A step of a run: its id, step index and replicated start time.
type StepKey = (String, usize, u64);

#[derive(Default)]
pub(crate) struct Bakes {
    /// When each progressing step has baked, on this node's clock.
    ends: HashMap<StepKey, Instant>,
}

impl Bakes {
    /// Notes the progressing runs' steps. `live`: this node has replayed
    /// the log it found at start, so a new step of a run it already knew
    /// started now (to within a tick); other steps are inherited. `log`:
    /// the last batch's time and when this node applied it.
    pub(crate) fn observe<'a>(
        &mut self,
        runs: impl Iterator<Item = (&'a str, &'a RolloutRun)>,
        live: bool,
        wall_ms: u64,
        log: Option<(u64, Instant)>,
        now: Instant,
    ) {
        let mut keep = Vec::new();
        for (id, run) in runs.filter(|(_, r)| r.state == RunState::Progressing) {
            let key = (id.to_string(), run.step, run.step_started_at_ms);
            let bake = Duration::from_millis(run.spec.bake_time(run.step).as_millis());
            if !self.ends.contains_key(&key) {
                // A run seen before moved to a new step (or resumed) since
                // the last tick: it started now. A run never seen is read
                // from its replicated time, however it came to be.
                let moved = self.ends.keys().any(|(i, _, _)| i == id);
                let end = if live && moved {
                    now + bake
                } else {
                    now + inherited_left(run.step_started_at_ms, bake, wall_ms, log, now)
                };
                self.ends.insert(key.clone(), end);
            }
            keep.push(key);
        }
        self.ends.retain(|k, _| keep.contains(k));
    }

    /// Whether the run's current step has baked (false if never observed).
    pub(crate) fn baked(&self, id: &str, run: &RolloutRun, now: Instant) -> bool {
        self.ends
            .get(&(id.to_string(), run.step, run.step_started_at_ms))
            .is_some_and(|end| now >= *end)
    }
}

/// How much of an inherited step's bake is left: the bake less the time
/// since it started by the slower of the wall clock and the log's time;
/// all of it with no log time.
fn inherited_left(
    started_ms: u64,
    bake: Duration,
    wall_ms: u64,
    log: Option<(u64, Instant)>,
    now: Instant,
) -> Duration {
    let Some(log_ms) = crate::write::leader_time::log_now_ms(log, now) else {
        return bake;
    };
    let elapsed = Duration::from_millis(wall_ms.min(log_ms).saturating_sub(started_ms));
    bake.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use meridian_model::rollout_run::RolloutRun;

    use super::{inherited_left, Bakes};

    const T: u64 = 1_800_000_000_000;
    const BAKE: Duration = Duration::from_secs(60);

    fn run(step: usize, started_ms: u64) -> RolloutRun {
        let mut r = crate::rollout::tests::run(step);
        r.spec.bake_time = Some(meridian_model::Duration::from_secs(60));
        r.step_started_at_ms = started_ms;
        r
    }

    /// A node that saw the step start bakes it on its own clock, whatever
    /// its wall clock says later (a new leader 10 minutes ahead).
    #[test]
    fn a_step_seen_starting_bakes_on_the_monotonic_clock() {
        let t0 = Instant::now();
        let mut b = Bakes::default();
        let (r0, r1) = (run(0, T), run(1, T + 5_000));
        b.observe([("r", &r0)].into_iter(), true, T, None, t0);
        let seen = t0 + Duration::from_secs(5);
        b.observe([("r", &r1)].into_iter(), true, T + 600_000, None, seen);
        assert!(!b.baked("r", &r1, seen + BAKE - Duration::from_millis(1)));
        assert!(b.baked("r", &r1, seen + BAKE));
    }

    /// Inherited steps err towards waiting: the slower clock counts, and
    /// with no log time the bake starts over.
    #[test]
    fn an_inherited_step_bakes_by_the_slower_clock() {
        let now = Instant::now();
        let started = T;
        // Wall 10 min ahead, log 20 s on: 40 s left, not zero.
        let log = Some((T + 20_000, now));
        assert_eq!(
            inherited_left(started, BAKE, T + 600_000, log, now),
            Duration::from_secs(40)
        );
        // Both say it baked.
        assert_eq!(
            inherited_left(started, BAKE, T + 90_000, Some((T + 80_000, now)), now),
            Duration::ZERO
        );
        assert_eq!(inherited_left(started, BAKE, T + 90_000, None, now), BAKE);
        // A run first seen is inherited even once live.
        let mut b = Bakes::default();
        let r = run(0, started);
        b.observe([("r", &r)].into_iter(), true, T + 600_000, log, now);
        assert!(!b.baked("r", &r, now + Duration::from_secs(39)));
        assert!(b.baked("r", &r, now + Duration::from_secs(40)));
    }
}
