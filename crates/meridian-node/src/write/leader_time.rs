//! The time a leader stamps on the batches it proposes (`proposed_at_ms`,
//! which becomes each changed object's `updated_at_ms`).
//!
//! A leader's wall clock alone is not enough: one stepped minutes back
//! stamps every lease renewal it commits minutes in the past, and the next
//! node to lead that never saw those renewals live (it just restarted)
//! expires them at once, taking live agents' endpoints out of Envoy's EDS
//! (the chaos suite's `skewed-successor`, seeds 11 and 17). So a leader
//! carries on the log's time: the time the last batch it applied carried,
//! plus how long ago it applied it on its monotonic clock, whenever that is
//! later than its wall clock. The log's time then never runs backwards
//! across leaders, as far as each leader saw it.
//!
//! Two bounds keep one bad clock from steering the log for good:
//! - a leader carries the log's time at most [`MAX_LEAD`] ahead of its own
//!   wall clock (one set a year ahead by mistake does not pin every later
//!   stamp a year ahead);
//! - while it carries a lead, the log's time runs at 1 - 1/[`SLEW`] of real
//!   time, so the lead melts away (ten minutes in under three hours) and the
//!   stamps return to the leaders' wall clocks, as NTP slews rather than
//!   steps. Durations read from stamps are then at most 1/SLEW short, which
//!   errs towards keeping a lease, never towards expiring one early.

use std::time::{Duration, Instant};

/// Most the log's time is carried ahead of a leader's own wall clock.
pub(crate) const MAX_LEAD: Duration = Duration::from_secs(600);

/// A carried lead shrinks by 1/SLEW of the time that passes.
pub(crate) const SLEW: u64 = 16;

/// The log's time now, unslewed: the last applied batch's time plus how
/// long ago this node applied it (`None`: nothing applied since it started).
pub(crate) fn log_now_ms(last_batch: Option<(u64, Instant)>, now: Instant) -> Option<u64> {
    let (at_ms, applied) = last_batch?;
    Some(at_ms.saturating_add(now.saturating_duration_since(applied).as_millis() as u64))
}

/// The stamp for a batch proposed now: the later of the wall clock and the
/// log's time (the last batch applied here, run on since, slewed), the
/// latter at most [`MAX_LEAD`] ahead of the wall clock.
pub(crate) fn proposed_at_ms(
    wall_ms: u64,
    last_batch: Option<(u64, Instant)>,
    now: Instant,
) -> u64 {
    let Some((at_ms, applied)) = last_batch else {
        return wall_ms;
    };
    let since = now.saturating_duration_since(applied).as_millis() as u64;
    let log_ms = at_ms.saturating_add(since - since / SLEW);
    let cap = wall_ms.saturating_add(MAX_LEAD.as_millis() as u64);
    wall_ms.max(log_ms.min(cap))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{proposed_at_ms, MAX_LEAD, SLEW};

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn a_leader_with_no_log_time_stamps_its_wall_clock() {
        assert_eq!(proposed_at_ms(T, None, Instant::now()), T);
    }

    #[test]
    fn a_leader_behind_the_log_carries_the_log_time_on() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(16);
        // Stepped 300 s back: it stamps the log's time, 15 of 16 s on.
        assert_eq!(
            proposed_at_ms(T - 300_000 + 16_000, Some((T, t0)), later),
            T + 15_000
        );
        // A wall clock ahead of the log's time wins.
        assert_eq!(proposed_at_ms(T + 60_000, Some((T, t0)), later), T + 60_000);
    }

    #[test]
    fn the_carried_lead_is_bounded_and_melts() {
        let t0 = Instant::now();
        let lead = MAX_LEAD.as_millis() as u64;
        // A log a day ahead (one leader's clock set wrong): carried only
        // MAX_LEAD ahead.
        assert_eq!(proposed_at_ms(T, Some((T + 86_400_000, t0)), t0), T + lead);
        // Each batch stamped so feeds the next: the lead shrinks by 1/SLEW
        // of the time between them, until the wall clock wins again.
        let (mut at, mut wall, mut now) = (T + lead, T, t0);
        let step = 10_000;
        for _ in 0..(lead / (step / SLEW) + 1) {
            now += Duration::from_millis(step);
            wall += step;
            at = proposed_at_ms(wall, Some((at, now - Duration::from_millis(step))), now);
            assert!(at >= wall && at <= wall + lead);
        }
        assert_eq!(at, wall);
    }
}
