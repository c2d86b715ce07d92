//! Leader-side validation of writes against the whole config set, so invalid
//! config never enters the log. The only place the node touches the model's
//! parser and validator.

use std::collections::{BTreeMap, HashSet};

use meridian_model::{ConfigSet, Kind, Object};
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
}

pub(crate) enum Verdict {
    /// Accepted; the transaction with its values in canonical form.
    Accept(Txn),
    Invalid(Vec<String>),
    Conflict {
        key: ObjectKey,
        expected: u64,
        actual: u64,
    },
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
        for (key, obj) in objects {
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
        (
            Overlay {
                set,
                revisions,
                touched: HashSet::new(),
            },
            broken,
        )
    }

    pub(crate) fn start_batch(&mut self) {
        self.touched.clear();
    }

    /// Marks a committed batch: its objects now have `revision`.
    pub(crate) fn committed(&mut self, txns: &[Txn], revision: u64) {
        for txn in txns {
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

    /// Checks one transaction and, if it is accepted, applies it to the overlay.
    /// With `dry_run`, the overlay is left as it was.
    pub(crate) fn check(&mut self, txn: &Txn, dry_run: bool) -> Verdict {
        let mut errors = Vec::new();
        if txn.ops.is_empty() {
            return Verdict::Invalid(vec![
                "ops: a transaction needs at least one put or delete".into()
            ]);
        }
        if txn.ops.len() > MAX_TXN_OPS {
            return Verdict::Invalid(vec![format!(
                "ops: {} operations, at most {MAX_TXN_OPS} per transaction",
                txn.ops.len()
            )]);
        }
        if txn.request_id.len() > 128 {
            return Verdict::Invalid(vec!["request_id: at most 128 bytes".into()]);
        }
        let mut seen = HashSet::new();
        let mut canonical_ops = Vec::with_capacity(txn.ops.len());
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (i, op) in txn.ops.iter().enumerate() {
            let key = op.key();
            if !seen.insert(key.clone()) {
                errors.push(format!("ops[{i}]: {key} appears twice in one transaction"));
                continue;
            }
            let kind = match key.kind.parse::<Kind>() {
                Ok(k) => k,
                Err(e) => {
                    errors.push(format!("ops[{i}].kind: {e}"));
                    continue;
                }
            };
            if let Some(expected) = op.expected_revision() {
                if self.touched.contains(key) {
                    return Verdict::Defer;
                }
                let actual = self.revisions.get(key).copied().unwrap_or(0);
                if expected != actual {
                    return Verdict::Conflict {
                        key: key.clone(),
                        expected,
                        actual,
                    };
                }
            }
            match op {
                // The precondition was checked above; a check changes nothing.
                TxnOp::Check { .. } => {
                    canonical_ops.push(op.clone());
                }
                TxnOp::Put {
                    key,
                    value,
                    expected_revision,
                } => {
                    if value.len() > MAX_VALUE_BYTES {
                        errors.push(format!(
                            "{}/{}: value is {} bytes, at most {MAX_VALUE_BYTES}",
                            kind.as_str(),
                            key.name,
                            value.len()
                        ));
                        continue;
                    }
                    match Object::from_stored(kind.as_str(), &key.name, value) {
                        Ok(obj) => {
                            let obj_errors = obj.validate();
                            if obj_errors.is_empty() {
                                let canonical_key = ObjectKey::new(kind.as_str(), key.name.clone());
                                canonical_ops.push(TxnOp::Put {
                                    key: canonical_key,
                                    value: obj.spec_to_json_bytes(),
                                    expected_revision: *expected_revision,
                                });
                                puts.push(obj);
                            } else {
                                errors.extend(obj_errors.into_iter().map(|e| e.to_string()));
                            }
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                TxnOp::Delete {
                    key,
                    expected_revision,
                } => {
                    let canonical_key = ObjectKey::new(kind.as_str(), key.name.clone());
                    canonical_ops.push(TxnOp::Delete {
                        key: canonical_key,
                        expected_revision: *expected_revision,
                    });
                    deletes.push((kind, key.name.clone()));
                }
            }
        }
        if !errors.is_empty() {
            return Verdict::Invalid(errors);
        }

        let mut next = self.set.clone();
        for obj in puts {
            next.insert(obj);
        }
        // Objects deleted together may reference each other, even in a cycle
        // (regions failing over to each other): only referrers outside the
        // deleted group block a delete.
        let deleted: HashSet<(Kind, String)> = deletes.iter().cloned().collect();
        for (kind, name) in &deletes {
            let outside: Vec<String> = next
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
        for (kind, name) in &deletes {
            next.remove_unchecked(*kind, name);
        }
        if errors.is_empty() {
            errors.extend(next.validate().into_iter().map(|e| e.to_string()));
        }
        if !errors.is_empty() {
            return Verdict::Invalid(errors);
        }
        if !dry_run {
            self.set = next;
            for op in &canonical_ops {
                self.touched.insert(op.key().clone());
            }
        }
        Verdict::Accept(Txn {
            request_id: txn.request_id.clone(),
            ops: canonical_ops,
        })
    }
}
