//! The config lane's admission: each round's writes are validated one after
//! the other against the config as it will be (the [`Overlay`]), and the
//! accepted ones go into one log entry guarded by the config sequence number
//! they were validated against, so validation always sees a serial order
//! and invalid config never enters the log. Rejected in DECISIONS.md:
//! validating inside apply (a validator change between versions would make
//! replicas diverge).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_store::{StateMachineStore, TxnOutcome, WriteClass};
use tracing::warn;

use super::conflict::conflict_message;
use super::group_commit::{Admission, Admitted, Pending};
use super::overlay::{Overlay, Prepared, Undo, Verdict};
use crate::error::ApiError;
use crate::metrics::{Lane, WriteMetrics};

pub(crate) struct Validation {
    sm: StateMachineStore,
    metrics: Arc<WriteMetrics>,
    /// The overlay and the config sequence number it reflects.
    overlay: Option<(u64, Overlay)>,
    /// The sequence number of the batch in flight.
    proposed_seq: u64,
}

impl Validation {
    pub(crate) fn new(sm: StateMachineStore, metrics: Arc<WriteMetrics>) -> Self {
        Validation {
            sm,
            metrics,
            overlay: None,
            proposed_seq: 0,
        }
    }

    /// Answers a write that will not be proposed.
    fn refuse(&self, p: Pending, v: Verdict) {
        self.metrics.txns_rejected.fetch_add(1, Ordering::Relaxed);
        let err = match v {
            Verdict::Invalid(errors) => ApiError::Invalid(errors.join("\n")),
            Verdict::Conflict {
                key,
                expected,
                actual,
            } => ApiError::Conflict(conflict_message(&self.sm, &key, expected, actual)),
            Verdict::Locked(why) => ApiError::Conflict(why),
            Verdict::Defer => unreachable!("deferred transactions are carried, not refused"),
        };
        p.answer(Err(err));
    }

    /// The answer for a request id that was applied before, if it was.
    /// Answered before validation: against today's state the retry of a
    /// write that committed could look like a conflict.
    fn dedup_answer(&self, p: &Pending) -> Option<TxnOutcome> {
        if p.txn.request_id.is_empty() || p.dry_run {
            return None;
        }
        match self
            .sm
            .dedup_outcome(WriteClass::Config, &p.txn.request_id)?
        {
            TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision } => {
                Some(TxnOutcome::Duplicate { revision })
            }
            TxnOutcome::Retry => None,
            conflict => Some(conflict),
        }
    }
}

impl Admission for Validation {
    const LANE: Lane = Lane::Config;
    const MAX_BATCH: usize = 1024;

    fn admit(&mut self, queued: Vec<Pending>, later: &mut Vec<Pending>) -> Admitted {
        let seq = self.sm.config_seq();
        if self.overlay.as_ref().map(|(s, _)| *s) != Some(seq) {
            let (o, broken) = Overlay::from_state(self.sm.list(None));
            for b in broken {
                warn!(object = %b, "stored object no longer parses; left out of validation");
            }
            self.overlay = Some((seq, o));
        }
        self.proposed_seq = seq;
        let mut overlay = self.overlay.take().expect("set above").1;
        overlay.start_batch();
        let accepted = self.validate(&mut overlay, queued, later);
        self.overlay = Some((seq, overlay));
        Admitted {
            base_config_seq: Some(seq),
            accepted,
        }
    }

    fn committed(&mut self, batch: &[Pending], outcomes: &[TxnOutcome]) {
        let revisions: Option<Vec<u64>> = outcomes
            .iter()
            .map(|o| match o {
                TxnOutcome::Committed { revision } => Some(*revision),
                _ => None,
            })
            .collect();
        match (self.overlay.as_mut(), revisions) {
            (Some((s, o)), Some(revisions)) if revisions.len() == batch.len() => {
                o.committed(batch.iter().map(|p| &p.txn).zip(revisions));
                *s = self.proposed_seq + 1;
            }
            _ => self.overlay = None,
        }
    }

    fn failed(&mut self) {
        self.overlay = None;
    }
}

impl Validation {
    /// Each transaction is checked on its own and applied to the overlay;
    /// the rules between objects are then checked once for the whole batch.
    /// Only when that finds an error is the batch replayed one transaction at
    /// a time to find which ones to refuse.
    fn validate(
        &self,
        ov: &mut Overlay,
        queued: Vec<Pending>,
        later: &mut Vec<Pending>,
    ) -> Vec<Pending> {
        let mut accepted: Vec<(Pending, Prepared, Undo)> = Vec::new();
        for p in queued {
            if let Some(o) = self.dedup_answer(&p) {
                p.answer(Ok(o));
                continue;
            }
            let prepared = match ov.prepare(&p.txn) {
                Ok(pr) => pr,
                Err(Verdict::Defer) => {
                    later.push(p);
                    continue;
                }
                Err(v) => {
                    self.refuse(p, v);
                    continue;
                }
            };
            let undo = match ov.apply(&prepared) {
                Ok(u) => u,
                Err(errors) => {
                    self.refuse(p, Verdict::Invalid(errors));
                    continue;
                }
            };
            if p.dry_run {
                let errors = ov.relation_errors();
                ov.undo(undo);
                if errors.is_empty() {
                    let revision = self.sm.revision();
                    p.answer(Ok(TxnOutcome::Committed { revision }));
                } else {
                    self.refuse(p, Verdict::Invalid(errors));
                }
                continue;
            }
            accepted.push((p, prepared, undo));
        }
        if !ov.relation_errors().is_empty() {
            let mut prepared_all = Vec::new();
            while let Some((p, pr, undo)) = accepted.pop() {
                ov.undo(undo);
                prepared_all.push((p, pr));
            }
            prepared_all.reverse();
            for (p, pr) in prepared_all {
                match ov.apply(&pr) {
                    Err(errors) => self.refuse(p, Verdict::Invalid(errors)),
                    Ok(undo) => {
                        let errors = ov.relation_errors();
                        if errors.is_empty() {
                            accepted.push((p, pr, undo));
                        } else {
                            ov.undo(undo);
                            self.refuse(p, Verdict::Invalid(errors));
                        }
                    }
                }
            }
        }
        // What is proposed is the canonical form validation produced.
        accepted
            .into_iter()
            .map(|(mut p, pr, _)| {
                p.txn = pr.txn;
                p
            })
            .collect()
    }
}
