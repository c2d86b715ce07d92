//! Leader-side validation of writes against the whole config set, so invalid
//! config never enters the log. The only place the node touches the model's
//! parser and validator.

use std::collections::{BTreeMap, HashSet};

use meridian_model::rollout_run::{RolloutRun, KIND_ROLLOUT_RUN};
use meridian_model::{ConfigSet, Kind, Object};
use meridian_store::limits::MAX_TXN_BYTES;
use meridian_store::{ObjectKey, StoredObject, Txn, TxnOp};

/// Largest object value accepted, in bytes of JSON.
pub(crate) const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most operations in one transaction.
pub(crate) const MAX_TXN_OPS: usize = 10_000;

/// The config as the leader will have it after the transactions accepted so
/// far in the batch being built.
#[derive(Clone)]
pub(crate) struct Overlay {
    set: ConfigSet,
    /// Revisions of stored objects; objects touched by this batch are absent.
    revisions: BTreeMap<ObjectKey, u64>,
    touched: HashSet<ObjectKey>,
    /// Relation errors the committed set already has (only possible with
    /// objects written by another build): a write is refused only for the
    /// errors it adds.
    base_errors: HashSet<String>,
    /// Rollout runs by id: an object an active run holds may be written
    /// only by a transaction that also writes that run.
    runs: BTreeMap<String, RolloutRun>,
}

/// A transaction that passed every check of its own (kinds, sizes, each
/// object, preconditions), ready to be applied to the overlay.
pub(crate) struct Prepared {
    pub txn: Txn,
    /// In op order, as apply will make them.
    changes: Vec<Change>,
}

enum Change {
    Put(Object),
    Delete(Kind, String),
    /// A rollout run written (`Some`) or deleted.
    Run(String, Option<RolloutRun>),
}

enum Replaced {
    Object(Kind, String, Option<Object>),
    Run(String, Option<RolloutRun>),
}

/// What applying a [`Prepared`] replaced, to take it back.
pub(crate) struct Undo(Vec<Replaced>);

pub(crate) enum Verdict {
    Invalid(Vec<String>),
    Conflict {
        key: ObjectKey,
        expected: u64,
        actual: u64,
    },
    /// Touches an object a running rollout holds (or starts a rollout of
    /// one): refused as a failed precondition, naming both.
    Locked(String),
    /// Touches an object an earlier transaction of this batch changed, with a
    /// precondition: decide it in the next batch, against committed revisions.
    Defer,
}

impl Overlay {
    /// Builds the overlay from the stored objects. Objects that no longer parse
    /// (written by an older build) are kept out of the set and reported.
    pub(crate) fn from_state(objects: Vec<(ObjectKey, StoredObject)>) -> (Overlay, Vec<String>) {
        let mut set = ConfigSet::default();
        let mut revisions = BTreeMap::new();
        let mut broken = Vec::new();
        let mut runs = BTreeMap::new();
        for (key, obj) in objects {
            if key.kind == KIND_ROLLOUT_RUN {
                revisions.insert(key.clone(), obj.revision);
                match RolloutRun::from_bytes(&obj.value) {
                    Ok(r) => {
                        runs.insert(key.name.clone(), r);
                    }
                    Err(e) => broken.push(format!("{key}: {e}")),
                }
                continue;
            }
            // Agents' reports and leases are not config: they neither
            // validate nor are validated against.
            if key.kind.parse::<Kind>().is_err() {
                continue;
            }
            revisions.insert(key.clone(), obj.revision);
            match Object::from_stored(&key.kind, &key.name, &obj.value) {
                Ok(o) => {
                    set.insert(o);
                }
                Err(e) => broken.push(format!("{key}: {e}")),
            }
        }
        let base_errors = set
            .validate_relations()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        (
            Overlay {
                set,
                revisions,
                touched: HashSet::new(),
                base_errors,
                runs,
            },
            broken,
        )
    }

    pub(crate) fn start_batch(&mut self) {
        self.touched.clear();
    }

    /// Marks a committed batch: each transaction's objects now have that
    /// transaction's revision.
    pub(crate) fn committed<'a>(&mut self, txns: impl IntoIterator<Item = (&'a Txn, u64)>) {
        for (txn, revision) in txns {
            for op in &txn.ops {
                match op {
                    TxnOp::Put { key, .. } => {
                        self.revisions.insert(key.clone(), revision);
                    }
                    TxnOp::Delete { key, .. } => {
                        self.revisions.remove(key);
                    }
                    TxnOp::Check { .. } => {}
                }
            }
        }
        self.touched.clear();
    }

    /// The checks a transaction must pass on its own; the rules between
    /// objects are checked once it is applied ([`Overlay::relation_errors`]).
    pub(crate) fn prepare(&self, txn: &Txn) -> Result<Prepared, Verdict> {
        let mut errors = Vec::new();
        if txn.ops.is_empty() {
            return Err(Verdict::Invalid(vec![
                "ops: a transaction needs at least one put or delete".into(),
            ]));
        }
        if txn.ops.len() > MAX_TXN_OPS {
            return Err(Verdict::Invalid(vec![format!(
                "ops: {} operations, at most {MAX_TXN_OPS} per transaction",
                txn.ops.len()
            )]));
        }
        if txn.request_id.len() > 128 {
            return Err(Verdict::Invalid(vec![
                "request_id: at most 128 bytes".into()
            ]));
        }
        // Duplicates and preconditions are decided on the canonical key
        // (`Route/r` is `route/r`): the store and apply see only that form.
        let mut seen = HashSet::new();
        let mut canonical_ops = Vec::with_capacity(txn.ops.len());
        let mut changes = Vec::new();
        for (i, op) in txn.ops.iter().enumerate() {
            let raw = op.key();
            // Runs reach this lane only from the node itself: the config
            // API refuses the kind from clients.
            let kind = if raw.kind == KIND_ROLLOUT_RUN {
                None
            } else {
                match raw.kind.parse::<Kind>() {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errors.push(format!("ops[{i}].kind: {e}"));
                        continue;
                    }
                }
            };
            let key = ObjectKey::new(
                kind.map_or(KIND_ROLLOUT_RUN, Kind::as_str),
                raw.name.clone(),
            );
            if !seen.insert(key.clone()) {
                errors.push(format!(
                    "ops[{i}]: {key} appears twice in one transaction (kinds are case-insensitive); \
                     put each object at most once"
                ));
                continue;
            }
            if let Some(expected) = op.expected_revision() {
                if self.touched.contains(&key) {
                    return Err(Verdict::Defer);
                }
                let actual = self.revisions.get(&key).copied().unwrap_or(0);
                if expected != actual {
                    return Err(Verdict::Conflict {
                        key,
                        expected,
                        actual,
                    });
                }
            }
            let Some(kind) = kind else {
                match op {
                    TxnOp::Put {
                        value,
                        expected_revision,
                        ..
                    } => match RolloutRun::from_bytes(value) {
                        Ok(run) => {
                            canonical_ops.push(TxnOp::Put {
                                key,
                                value: run.to_bytes(),
                                expected_revision: *expected_revision,
                            });
                            changes.push(Change::Run(raw.name.clone(), Some(run)));
                        }
                        Err(e) => errors.push(format!("{key}: {e}")),
                    },
                    TxnOp::Delete {
                        expected_revision, ..
                    } => {
                        changes.push(Change::Run(raw.name.clone(), None));
                        canonical_ops.push(TxnOp::Delete {
                            key,
                            expected_revision: *expected_revision,
                        });
                    }
                    TxnOp::Check {
                        expected_revision, ..
                    } => {
                        canonical_ops.push(TxnOp::Check {
                            key,
                            expected_revision: *expected_revision,
                        });
                    }
                }
                continue;
            };
            match op {
                // The precondition was checked above; a check changes nothing.
                TxnOp::Check {
                    expected_revision, ..
                } => {
                    canonical_ops.push(TxnOp::Check {
                        key,
                        expected_revision: *expected_revision,
                    });
                }
                TxnOp::Put {
                    value,
                    expected_revision,
                    ..
                } => {
                    if value.len() > MAX_VALUE_BYTES {
                        errors.push(format!(
                            "{key}: value is {} bytes, at most {MAX_VALUE_BYTES}",
                            value.len()
                        ));
                        continue;
                    }
                    match Object::from_stored(kind.as_str(), &key.name, value) {
                        Ok(obj) => {
                            let obj_errors = obj.validate();
                            if obj_errors.is_empty() {
                                canonical_ops.push(TxnOp::Put {
                                    key,
                                    value: obj.spec_to_json_bytes(),
                                    expected_revision: *expected_revision,
                                });
                                changes.push(Change::Put(obj));
                            } else {
                                errors.extend(obj_errors.into_iter().map(|e| e.to_string()));
                            }
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                TxnOp::Delete {
                    expected_revision, ..
                } => {
                    changes.push(Change::Delete(kind, key.name.clone()));
                    canonical_ops.push(TxnOp::Delete {
                        key,
                        expected_revision: *expected_revision,
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(Verdict::Invalid(errors));
        }
        self.check_locks(&changes)?;
        let txn = Txn {
            request_id: txn.request_id.clone(),
            ops: canonical_ops,
        };
        // Measured in the stored form, which is what enters the log.
        let size = txn.size_bytes();
        if size > MAX_TXN_BYTES {
            return Err(Verdict::Invalid(vec![format!(
                "ops: the transaction is {size} bytes stored, at most {MAX_TXN_BYTES}; \
                 split it into several transactions"
            )]));
        }
        Ok(Prepared { txn, changes })
    }

    /// Objects held by an active rollout may change only together with that
    /// rollout's run (the controller's promotions and rollbacks); a run
    /// that starts may not take objects another active run holds.
    fn check_locks(&self, changes: &[Change]) -> Result<(), Verdict> {
        let written_runs: HashSet<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Run(id, _) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let holder = |kind: Kind, name: &str, except: &str| {
            self.runs
                .iter()
                .find(|(id, r)| id.as_str() != except && r.holds(kind, name))
        };
        // Runs first: a rollout that starts on held objects is told which
        // rollout holds them.
        let runs_first = changes
            .iter()
            .filter(|c| matches!(c, Change::Run(..)))
            .chain(changes.iter().filter(|c| !matches!(c, Change::Run(..))));
        for c in runs_first {
            let (kind, name) = match c {
                Change::Put(o) => (o.kind, o.name.as_str()),
                Change::Delete(k, n) => (*k, n.as_str()),
                Change::Run(id, Some(run)) if run.state.is_active() => {
                    for o in &run.objects {
                        if let Some((other, r)) = holder(o.kind, &o.name, id) {
                            return Err(Verdict::Locked(format!(
                                "{}/{}: already part of rollout {other} ({}, step {} of {}); \
                                 wait until it completes, or end it with `meridian rollout abort {other}`",
                                o.kind, o.name, r.state.as_str(), r.step + 1, r.spec.steps.len()
                            )));
                        }
                    }
                    continue;
                }
                Change::Run(..) => continue,
            };
            if let Some((id, r)) = holder(kind, name, "") {
                if !written_runs.contains(id.as_str()) {
                    return Err(Verdict::Locked(format!(
                        "{kind}/{name}: part of rollout {id} ({}, step {} of {}); nothing was changed. \
                         Wait until it completes, or end it with `meridian rollout abort {id}`",
                        r.state.as_str(), r.step + 1, r.spec.steps.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies a prepared transaction to the overlay; returns what it
    /// replaced, and the errors of its deletes (objects still referenced
    /// from outside the group it deletes), in which case it was undone.
    pub(crate) fn apply(&mut self, p: &Prepared) -> Result<Undo, Vec<String>> {
        let mut undo = Vec::with_capacity(p.changes.len());
        let mut deleted: HashSet<(Kind, String)> = HashSet::new();
        for change in &p.changes {
            match change {
                Change::Put(obj) => {
                    let prev = self.set.insert(obj.clone());
                    undo.push(Replaced::Object(obj.kind, obj.name.clone(), prev));
                }
                Change::Delete(kind, name) => {
                    let prev = self.set.remove_unchecked(*kind, name);
                    undo.push(Replaced::Object(*kind, name.clone(), prev));
                    deleted.insert((*kind, name.clone()));
                }
                Change::Run(id, run) => {
                    let prev = match run {
                        Some(r) => self.runs.insert(id.clone(), r.clone()),
                        None => self.runs.remove(id),
                    };
                    undo.push(Replaced::Run(id.clone(), prev));
                }
            }
        }
        // Objects deleted together may reference each other, even in a
        // cycle (regions failing over to each other): only referrers outside
        // the group block a delete.
        let mut errors = Vec::new();
        let deletes = p.changes.iter().filter_map(|c| match c {
            Change::Delete(kind, name) => Some((kind, name)),
            Change::Put(_) | Change::Run(..) => None,
        });
        for (kind, name) in deletes {
            let outside: Vec<String> = self
                .set
                .referrers(*kind, name)
                .into_iter()
                .filter(|r| !deleted.contains(r))
                .map(|(k, n)| format!("{}/{}", k.as_str(), n))
                .collect();
            if !outside.is_empty() {
                errors.push(format!(
                    "{}/{}: cannot delete: referenced by {}; change or delete those first",
                    kind.as_str(),
                    name,
                    outside.join(", ")
                ));
            }
        }
        let undo = Undo(undo);
        if !errors.is_empty() {
            self.undo(undo);
            return Err(errors);
        }
        for op in &p.txn.ops {
            if !matches!(op, TxnOp::Check { .. }) {
                self.touched.insert(op.key().clone());
            }
        }
        Ok(undo)
    }

    /// Takes an applied transaction back (in reverse order of application).
    pub(crate) fn undo(&mut self, undo: Undo) {
        for replaced in undo.0.into_iter().rev() {
            match replaced {
                Replaced::Object(_, _, Some(obj)) => {
                    self.set.insert(obj);
                }
                Replaced::Object(kind, name, None) => {
                    self.set.remove_unchecked(kind, &name);
                }
                Replaced::Run(id, Some(r)) => {
                    self.runs.insert(id, r);
                }
                Replaced::Run(id, None) => {
                    self.runs.remove(&id);
                }
            }
        }
    }

    /// Relation errors of the overlay that the committed set did not have.
    pub(crate) fn relation_errors(&self) -> Vec<String> {
        self.set
            .validate_relations()
            .into_iter()
            .map(|e| e.to_string())
            .filter(|e| !self.base_errors.contains(e))
            .collect()
    }
}

#[cfg(test)]
mod tests;
