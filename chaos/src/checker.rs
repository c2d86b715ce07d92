//! A linearizability checker for per-key registers with compare-and-set:
//! the Wing–Gong search with Lowe's memoisation (the "WGL" algorithm that
//! Knossos and porcupine use), run on each key's history on its own, since
//! ops on different keys commute.
//!
//! The search walks the history's call and return events in time order and
//! tries to place ("linearize") each pending op at a point between its call
//! and its return; it backtracks when it meets the return of an op it could
//! not place. A state already seen (the set of ops placed, the register's
//! value) is never explored twice, which keeps typical histories linear.
//! An op with an unknown outcome has no return: it may be placed anywhere
//! after its call, or never (it did not take effect).
//!
//! Before the search, two anomalies are named directly because the search
//! would only say "not linearizable": a read of a value no op wrote, and two
//! CAS that both swapped from the same value (every written value is unique,
//! so a value is replaced at most once).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::history::{Op, OpKind, Outcome};

#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Search steps per key before the key is reported undecided.
    pub max_steps: u64,
    /// Wall time per key before the key is reported undecided.
    pub time_limit: Duration,
    /// Whether a CAS answered "precondition failed" is an observation (the
    /// value differed from the expected one at some point during the op).
    /// With false, such an op is treated as one that did not happen, as
    /// Jepsen treats a failed CAS.
    pub failed_cas_observes: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: 20_000_000,
            time_limit: Duration::from_secs(60),
            failed_cas_observes: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyKind {
    /// A read returned a value that no op wrote (or whose write failed).
    PhantomRead,
    /// Two CAS both swapped from the same value.
    DoubleCas,
    /// A read returned a value already overwritten before the read began,
    /// and a later read saw the newer value again.
    StaleRead,
    /// An acknowledged write that no later read reflects: reads after it
    /// returned an older value.
    LostWrite,
    /// No linearization exists; none of the named patterns fits.
    NotLinearizable,
}

#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// The offending ops: the one that cannot be placed first, then those
    /// that make it impossible.
    pub ops: Vec<Op>,
    pub explanation: String,
}

#[derive(Clone, Debug)]
pub enum Verdict {
    Linearizable,
    Anomaly(Anomaly),
    /// The search hit its bound: neither proven nor refuted.
    Undecided(String),
}

#[derive(Clone, Debug)]
pub struct KeyReport {
    pub key: String,
    pub ops: usize,
    pub verdict: Verdict,
}

/// Checks every key of `history` on its own, in key order.
pub fn check(history: &[Op], opts: &CheckOptions) -> Vec<KeyReport> {
    let mut by_key: HashMap<&str, Vec<Op>> = HashMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| {
            let ops = &by_key[k];
            KeyReport {
                key: k.to_string(),
                ops: ops.len(),
                verdict: check_key(ops, opts),
            }
        })
        .collect()
}

/// Checks the history of one key.
pub fn check_key(ops: &[Op], opts: &CheckOptions) -> Verdict {
    // Failed ops did not happen, and neither did a read without an answer.
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|o| match (&o.kind, o.outcome) {
            (_, Outcome::Failed) => false,
            (OpKind::Read { .. }, Outcome::Unknown) => false,
            (OpKind::Cas { swapped: false, .. }, Outcome::Ok) => opts.failed_cas_observes,
            _ => true,
        })
        .collect();
    if let Some(a) = phantom_read(&ops) {
        return Verdict::Anomaly(a);
    }
    if let Some(a) = double_cas(&ops) {
        return Verdict::Anomaly(a);
    }
    Search::new(&ops).run(opts)
}

fn phantom_read(ops: &[&Op]) -> Option<Anomaly> {
    let written: HashSet<&str> = ops.iter().filter_map(|o| o.written()).collect();
    let read = ops.iter().find(
        |o| matches!(&o.kind, OpKind::Read { saw: Some(v) } if !written.contains(v.as_str())),
    )?;
    Some(Anomaly {
        kind: AnomalyKind::PhantomRead,
        ops: vec![(*read).clone()],
        explanation:
            "the read returned a value that no op wrote (or whose write definitely failed)".into(),
    })
}

fn double_cas(ops: &[&Op]) -> Option<Anomaly> {
    let mut from: HashMap<&Option<String>, &Op> = HashMap::new();
    for o in ops {
        if let (
            OpKind::Cas {
                expect,
                swapped: true,
                ..
            },
            Outcome::Ok,
        ) = (&o.kind, o.outcome)
        {
            if let Some(first) = from.insert(expect, o) {
                return Some(Anomaly {
                    kind: AnomalyKind::DoubleCas,
                    ops: vec![(*o).clone(), first.clone()],
                    explanation: "two CAS both swapped from the same value; values are written once, so at most one can".into(),
                });
            }
        }
    }
    None
}

/// The register's value, interned: 0 is "absent".
type State = u32;

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

#[derive(Clone, Copy)]
enum Step {
    Read(State),
    Write(State),
    Cas { expect: State, value: State },
    CasMismatch(State),
}

struct Entry {
    op: usize,
    is_call: bool,
}

struct Search<'a> {
    ops: Vec<&'a Op>,
    steps: Vec<Step>,
    known: Vec<bool>,
    /// Event list: index 0 is the head sentinel, entries from 1.
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_at: Vec<usize>,
    ret_at: Vec<usize>,
}

impl<'a> Search<'a> {
    fn new(ops: &[&'a Op]) -> Self {
        let mut values: HashMap<String, State> = HashMap::new();
        let mut intern = |v: &Option<String>| -> State {
            match v {
                None => 0,
                Some(s) => {
                    let n = values.len() as State + 1;
                    *values.entry(s.clone()).or_insert(n)
                }
            }
        };
        let steps = ops
            .iter()
            .map(|o| match &o.kind {
                OpKind::Read { saw } => Step::Read(intern(saw)),
                OpKind::Write { value } => Step::Write(intern(&Some(value.clone()))),
                OpKind::Cas {
                    expect,
                    swapped: false,
                    ..
                } if o.outcome == Outcome::Ok => Step::CasMismatch(intern(expect)),
                OpKind::Cas { expect, value, .. } => Step::Cas {
                    expect: intern(expect),
                    value: intern(&Some(value.clone())),
                },
            })
            .collect();
        let known: Vec<bool> = ops.iter().map(|o| o.outcome != Outcome::Unknown).collect();
        // (time, returns after calls at equal times, op): ties count as
        // concurrent, which never invents an anomaly.
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            events.push((o.call, false, i));
            if known[i] {
                events.push((o.ret.max(o.call), true, i));
            }
        }
        events.sort_unstable();
        let mut entries = vec![Entry {
            op: NIL,
            is_call: false,
        }];
        let mut call_at = vec![NIL; ops.len()];
        let mut ret_at = vec![NIL; ops.len()];
        for (_, is_ret, op) in events {
            if is_ret {
                ret_at[op] = entries.len();
            } else {
                call_at[op] = entries.len();
            }
            entries.push(Entry {
                op,
                is_call: !is_ret,
            });
        }
        let n = entries.len();
        let next = (0..n)
            .map(|i| if i + 1 < n { i + 1 } else { NIL })
            .collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        Search {
            ops: ops.to_vec(),
            steps,
            known,
            entries,
            next,
            prev,
            call_at,
            ret_at,
        }
    }

    fn remove(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes `remove(i)`; removals are undone in reverse order.
    fn restore(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }

    fn lift(&mut self, op: usize) {
        self.remove(self.call_at[op]);
        if self.ret_at[op] != NIL {
            self.remove(self.ret_at[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.ret_at[op] != NIL {
            self.restore(self.ret_at[op]);
        }
        self.restore(self.call_at[op]);
    }

    fn apply(&self, state: State, op: usize) -> Option<State> {
        match self.steps[op] {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas { expect, value } => (state == expect).then_some(value),
            Step::CasMismatch(expect) => (state != expect).then_some(state),
        }
    }

    fn run(mut self, opts: &CheckOptions) -> Verdict {
        let started = Instant::now();
        let words = self.ops.len().div_ceil(64);
        let mut placed = vec![0u64; words];
        let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state: State = 0;
        let mut known_left = self.known.iter().filter(|k| **k).count();
        let mut known_placed = 0usize;
        // The deepest point reached: (known ops placed, the op that could not
        // be placed there, the state then, the ops placed last).
        let mut deepest: Option<(usize, usize, State, Vec<usize>)> = None;
        let mut cur = self.next[HEAD];
        let mut steps = 0u64;
        loop {
            if known_left == 0 {
                return Verdict::Linearizable;
            }
            steps += 1;
            if steps > opts.max_steps
                || (steps % 65_536 == 0 && started.elapsed() > opts.time_limit)
            {
                return Verdict::Undecided(format!(
                    "{} ops, search stopped after {steps} steps and {:.1?} without an answer",
                    self.ops.len(),
                    started.elapsed()
                ));
            }
            if cur != NIL && self.entries[cur].is_call {
                let op = self.entries[cur].op;
                if let Some(s2) = self.apply(state, op) {
                    placed[op / 64] |= 1 << (op % 64);
                    if cache.insert((placed.clone(), s2)) {
                        stack.push((op, state));
                        state = s2;
                        self.lift(op);
                        if self.known[op] {
                            known_left -= 1;
                            known_placed += 1;
                        }
                        cur = self.next[HEAD];
                        continue;
                    }
                    placed[op / 64] &= !(1 << (op % 64));
                }
                cur = self.next[cur];
                continue;
            }
            // The return of an op that could not be placed: backtrack.
            if cur != NIL && deepest.as_ref().is_none_or(|d| known_placed > d.0) {
                let recent = stack.iter().rev().take(4).map(|(o, _)| *o).collect();
                deepest = Some((known_placed, self.entries[cur].op, state, recent));
            }
            let Some((op, s)) = stack.pop() else {
                return Verdict::Anomaly(self.explain(deepest));
            };
            state = s;
            placed[op / 64] &= !(1 << (op % 64));
            self.unlift(op);
            if self.known[op] {
                known_left += 1;
                known_placed -= 1;
            }
            cur = self.next[self.call_at[op]];
        }
    }

    /// Names the anomaly at the deepest point the search reached.
    fn explain(&self, deepest: Option<(usize, usize, State, Vec<usize>)>) -> Anomaly {
        let Some((_, stuck, _, recent)) = deepest else {
            return Anomaly {
                kind: AnomalyKind::NotLinearizable,
                ops: Vec::new(),
                explanation: "no linearization exists".into(),
            };
        };
        let op = self.ops[stuck];
        let mut ops = vec![op.clone()];
        let (kind, explanation) = match &op.kind {
            OpKind::Read { saw } => match self.overwritten_before(op, saw) {
                Some(w) => {
                    ops.push(w.clone());
                    let seen_again = self.ops.iter().any(|o| {
                        o.call > op.ret
                            && matches!(&o.kind, OpKind::Read { saw: Some(v) } if Some(v.as_str()) == w.written())
                    });
                    if seen_again {
                        (AnomalyKind::StaleRead, "the read returned a value that an acknowledged write had replaced before the read began; a later read saw the newer value".to_string())
                    } else {
                        (AnomalyKind::LostWrite, "an acknowledged write is not reflected by a read that began after it was acknowledged, nor by any later read".to_string())
                    }
                }
                None => (
                    AnomalyKind::NotLinearizable,
                    "no point within the read's interval has the value it returned".into(),
                ),
            },
            _ => (
                AnomalyKind::NotLinearizable,
                "no point within this op's interval has a state it is legal in".into(),
            ),
        };
        for r in recent {
            let o = self.ops[r];
            if ops.len() < 6 && !ops.iter().any(|p| p == o) {
                ops.push(o.clone());
            }
        }
        Anomaly {
            kind,
            ops,
            explanation,
        }
    }

    /// An acknowledged write, returned before `read` was called, whose value
    /// differs from what the read saw and that began after the write of that
    /// value was acknowledged (so it replaced it).
    fn overwritten_before(&self, read: &Op, saw: &Option<String>) -> Option<&'a Op> {
        let saw_done = self
            .ops
            .iter()
            .find(|o| o.written().is_some() && o.written() == saw.as_deref())
            .map(|o| (o.outcome == Outcome::Ok).then_some(o.ret));
        let after = match saw_done {
            // The value's own write may still be in flight: no proof.
            Some(None) => return None,
            Some(Some(t)) => Some(t),
            // Absent: any acknowledged write replaced it.
            None => None,
        };
        self.ops
            .iter()
            .filter(|w| {
                w.outcome == Outcome::Ok
                    && w.ret < read.call
                    && after.is_none_or(|t| w.call > t)
                    && w.written().is_some()
                    && w.written() != saw.as_deref()
                    && !matches!(w.kind, OpKind::Cas { swapped: false, .. })
            })
            .max_by_key(|w| w.ret)
            .copied()
    }
}

#[cfg(test)]
mod tests;
