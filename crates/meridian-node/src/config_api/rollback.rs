//! `Rollback`: restores an object, or the whole config, to its value at an
//! earlier revision, as one write guarded by each object's current revision.

use std::time::Instant;

use meridian_proto::v1 as pb;
use meridian_store::{Event, ObjectKey, Txn, TxnOp, TxnOutcome, WriteClass};
use tracing::info;

use super::convert::is_config_kind;
use super::ConfigApi;
use crate::error::ApiError;

/// The object a rollback request names, or `None` for the whole config.
pub(super) fn target(msg: &pb::RollbackRequest) -> Result<Option<ObjectKey>, ApiError> {
    match (msg.kind.is_empty(), msg.name.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => {
            let key = super::convert::key_from_pb(
                Some(pb::ObjectKey {
                    kind: msg.kind.clone(),
                    name: msg.name.clone(),
                }),
                "object",
            )?;
            if !is_config_kind(&key.kind) {
                return Err(ApiError::Invalid(format!(
                    "{key}: only config objects can be rolled back ({} are not)",
                    key.kind
                )));
            }
            Ok(Some(key))
        }
        _ => Err(ApiError::Invalid(
            "give both kind and name, or neither (the whole config)".into(),
        )),
    }
}

impl ConfigApi {
    /// The rollback, on the leader.
    pub(super) async fn rollback_here(
        &self,
        msg: &pb::RollbackRequest,
        key: Option<&ObjectKey>,
        acting: Option<&meridian_pki::Identity>,
        deadline: Instant,
    ) -> Result<pb::RollbackResponse, ApiError> {
        self.confirm_leadership(deadline).await?;
        // A retry of a rollback that was applied: that write's answer.
        if let Some(TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision }) =
            self.sm.dedup_outcome(WriteClass::Config, &msg.request_id)
        {
            return Ok(pb::RollbackResponse {
                revision,
                duplicate: true,
                changes: vec![],
                base_revision: 0,
            });
        }
        let (events, floor, revision) = self.sm.history(Some(WriteClass::Config), key);
        let what = key.map_or("the config".to_string(), |k| k.to_string());
        if msg.to_revision > revision {
            return Err(ApiError::Invalid(format!(
                "revision {} is in the future: the current revision is {revision}",
                msg.to_revision
            )));
        }
        if msg.to_revision < floor {
            return Err(ApiError::OutOfRange(format!(
                "history before revision {floor} was compacted: cannot restore {what} at revision {}; \
                 the oldest revision available is {floor}",
                msg.to_revision
            )));
        }
        let after: Vec<Event> = events
            .into_iter()
            .filter(|e| e.revision > msg.to_revision && is_config_kind(&e.key.kind))
            .collect();
        let (ops, changes) = plan(&self.sm, &after);
        if ops.is_empty() {
            return Err(ApiError::NotFound(format!(
                "nothing to roll back: {what} is as it was at revision {}",
                msg.to_revision
            )));
        }
        // Checked before anything is written, dry runs too: the answer must
        // not depend on whether the caller asked to see it first.
        crate::authz::check_rollback(
            acting,
            changes.iter().filter_map(|c| {
                let k = c.key.as_ref()?;
                Some((k.kind.as_str(), k.name.as_str(), c.action.as_str()))
            }),
        )
        .map_err(|reason| {
            tracing::warn!(caller = %acting.map(|a| a.to_string()).unwrap_or_default(), reason = %reason, "rollback refused");
            ApiError::PermissionDenied(reason)
        })?;
        let txn = Txn {
            request_id: msg.request_id.clone(),
            ops,
        };
        let w = self.writes.submit(txn, msg.dry_run, deadline).await?;
        if !msg.dry_run && !w.duplicate {
            info!(request_id = %msg.request_id, revision = w.revision, to_revision = msg.to_revision, objects = changes.len(), "rollback committed");
        }
        Ok(pb::RollbackResponse {
            revision: if msg.dry_run { revision } else { w.revision },
            duplicate: w.duplicate,
            changes: if w.duplicate { vec![] } else { changes },
            base_revision: revision,
        })
    }
}

/// The write that restores every object of `events` (the retained events
/// after the target revision, oldest first) to its value at that revision,
/// guarded by each object's current revision; and what it does per object.
fn plan(
    sm: &meridian_store::StateMachineStore,
    events: &[Event],
) -> (Vec<TxnOp>, Vec<pb::RollbackChange>) {
    // The value at the target revision is the previous value of the first
    // change after it.
    let mut target: std::collections::BTreeMap<&ObjectKey, Option<&Vec<u8>>> =
        std::collections::BTreeMap::new();
    for e in events {
        target.entry(&e.key).or_insert(e.prev_value.as_ref());
    }
    let mut ops = Vec::new();
    let mut changes = Vec::new();
    for (key, want) in target {
        let cur = sm.get(key);
        let cur_rev = cur.as_ref().map_or(0, |o| o.revision);
        let action = match (&cur, want) {
            (None, None) => continue,
            (Some(c), Some(w)) if &c.value == w => continue,
            (None, Some(w)) => {
                ops.push(TxnOp::Put {
                    key: key.clone(),
                    value: w.clone(),
                    expected_revision: Some(0),
                });
                "created"
            }
            (Some(_), Some(w)) => {
                ops.push(TxnOp::Put {
                    key: key.clone(),
                    value: w.clone(),
                    expected_revision: Some(cur_rev),
                });
                "updated"
            }
            (Some(_), None) => {
                ops.push(TxnOp::Delete {
                    key: key.clone(),
                    expected_revision: Some(cur_rev),
                });
                "deleted"
            }
        };
        changes.push(pb::RollbackChange {
            key: Some(pb::ObjectKey {
                kind: key.kind.clone(),
                name: key.name.clone(),
            }),
            action: action.into(),
            from_revision: cur_rev,
        });
    }
    (ops, changes)
}
