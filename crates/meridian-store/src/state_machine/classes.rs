//! One write class's memory: its request ids and its change events, each
//! under the class's own budget (see [`crate::limits`]).

use std::collections::{HashMap, VecDeque};

use crate::limits::{DEDUP_CAPACITY, DEDUP_HARD_CAP, DEDUP_MIN_AGE_MS, EVENT_HISTORY};
use crate::types::{DedupEntry, Event, TxnOutcome};

pub(super) struct ClassLog {
    dedup: VecDeque<DedupEntry>,
    index: HashMap<String, TxnOutcome>,
    events: VecDeque<Event>,
    /// Every event of this class with a revision above this is retained.
    floor: u64,
}

impl ClassLog {
    pub(super) fn from_data(dedup: Vec<DedupEntry>, events: Vec<Event>, revision: u64) -> Self {
        let index = dedup
            .iter()
            .map(|d| (d.request_id.clone(), d.outcome.clone()))
            .collect();
        // A snapshot does not say whether events of its oldest revision were
        // partly dropped; a full history may have been trimmed, so assume so.
        let floor = if events.len() < EVENT_HISTORY {
            0
        } else {
            events.first().map_or(revision, |e| e.revision)
        };
        ClassLog {
            dedup: dedup.into(),
            index,
            events: events.into(),
            floor,
        }
    }

    pub(super) fn dedup_data(&self) -> Vec<DedupEntry> {
        self.dedup.iter().cloned().collect()
    }

    pub(super) fn events_data(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    pub(super) fn outcome(&self, request_id: &str) -> Option<&TxnOutcome> {
        self.index.get(request_id)
    }

    /// Remembers an outcome at leader time `at_ms`, forgetting the oldest
    /// ids beyond the budget.
    pub(super) fn remember(&mut self, request_id: String, outcome: TxnOutcome, at_ms: u64) {
        self.index.insert(request_id.clone(), outcome.clone());
        self.dedup.push_back(DedupEntry {
            request_id,
            outcome,
            at_ms,
        });
        while self.dedup.len() > DEDUP_CAPACITY {
            let young = self
                .dedup
                .front()
                .is_some_and(|d| d.at_ms.saturating_add(DEDUP_MIN_AGE_MS) > at_ms);
            if young && self.dedup.len() <= DEDUP_HARD_CAP {
                break;
            }
            if let Some(old) = self.dedup.pop_front() {
                self.index.remove(&old.request_id);
            }
        }
    }

    pub(super) fn record(&mut self, events: &[Event]) {
        self.events.extend(events.iter().cloned());
        while self.events.len() > EVENT_HISTORY {
            if let Some(dropped) = self.events.pop_front() {
                self.floor = self.floor.max(dropped.revision);
            }
        }
    }

    pub(super) fn floor(&self) -> u64 {
        self.floor
    }

    pub(super) fn events(&self) -> &VecDeque<Event> {
        &self.events
    }
}

/// The events of both classes after `from`, in revision order (one log
/// entry's events are all of one class, so ordering by revision keeps each
/// entry's op order).
pub(super) fn merged_after(a: &ClassLog, b: &ClassLog, from: u64) -> Vec<Event> {
    let after = |c: &ClassLog| {
        let start = c.events.partition_point(|e| e.revision <= from);
        c.events.range(start..).cloned().collect::<Vec<_>>()
    };
    let (a, b) = (after(a), after(b));
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.revision <= y.revision,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
}
