//! Conversions between the config API's messages and the store's types,
//! and what clients may see of stored values.

use meridian_proto::v1 as pb;
use meridian_store::{Event, ObjectKey, StoredObject, Txn, TxnOp};

use crate::error::ApiError;

/// Largest name accepted before the model even looks at it.
const MAX_NAME_BYTES: usize = 253;

/// The id of a write whose client gave none: retries of a forwarded write
/// then still apply once.
pub(super) fn new_request_id() -> String {
    format!("srv-{:032x}", rand::random::<u128>())
}

/// What clients may see of a stored value: secrets' private keys never
/// leave the cluster through the API (only through backups).
pub(super) fn visible_value(key: &ObjectKey, value: &[u8]) -> Vec<u8> {
    if key.kind != meridian_model::Kind::Secret.as_str() {
        return value.to_vec();
    }
    match meridian_model::Object::from_stored(&key.kind, &key.name, value) {
        Ok(obj) => serde_json::to_vec(&obj.to_redacted_json()["spec"]).unwrap_or_default(),
        // A value that no longer parses is still a secret: show nothing of it.
        Err(_) => br#"{"privateKey":"<redacted>"}"#.to_vec(),
    }
}

pub(super) fn to_pb_object(key: &ObjectKey, obj: &StoredObject) -> pb::Object {
    pb::Object {
        kind: key.kind.clone(),
        name: key.name.clone(),
        value: visible_value(key, &obj.value),
        revision: obj.revision,
        created_revision: obj.created_revision,
        updated_at_ms: obj.updated_at_ms,
    }
}

pub(super) fn to_pb_event(e: &Event) -> pb::WatchEvent {
    pb::WatchEvent {
        key: Some(pb::ObjectKey {
            kind: e.key.kind.clone(),
            name: e.key.name.clone(),
        }),
        revision: e.revision,
        value: e
            .value
            .as_deref()
            .map(|v| visible_value(&e.key, v))
            .unwrap_or_default(),
        deleted: e.value.is_none(),
        updated_at_ms: e.updated_at_ms,
    }
}

pub(super) fn key_from_pb(key: Option<pb::ObjectKey>, field: &str) -> Result<ObjectKey, ApiError> {
    let key = key.ok_or_else(|| ApiError::Invalid(format!("{field}: required")))?;
    if key.kind.is_empty() {
        return Err(ApiError::Invalid(format!("{field}.kind: required")));
    }
    if key.name.is_empty() {
        return Err(ApiError::Invalid(format!("{field}.name: required")));
    }
    if key.name.len() > MAX_NAME_BYTES {
        return Err(ApiError::Invalid(format!(
            "{field}.name: longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(ObjectKey::new(key.kind, key.name))
}

pub(crate) fn txn_from_pb(req: &pb::TxnRequest) -> Result<Txn, ApiError> {
    let mut ops = Vec::with_capacity(req.ops.len());
    for (i, op) in req.ops.iter().enumerate() {
        match &op.op {
            Some(pb::txn_op::Op::Put(p)) => ops.push(TxnOp::Put {
                key: key_from_pb(p.key.clone(), &format!("ops[{i}].put.key"))?,
                value: p.value.clone(),
                expected_revision: p.expected_revision,
            }),
            Some(pb::txn_op::Op::Delete(d)) => ops.push(TxnOp::Delete {
                key: key_from_pb(d.key.clone(), &format!("ops[{i}].delete.key"))?,
                expected_revision: d.expected_revision,
            }),
            Some(pb::txn_op::Op::Check(c)) => ops.push(TxnOp::Check {
                key: key_from_pb(c.key.clone(), &format!("ops[{i}].check.key"))?,
                expected_revision: c.expected_revision,
            }),
            None => {
                return Err(ApiError::Invalid(format!(
                    "ops[{i}]: neither put, delete nor check"
                )))
            }
        }
    }
    // Runs are written only with the objects they hold, by the rollout
    // service and controller: a client's write could free or seize objects.
    if let Some((i, _)) = ops
        .iter()
        .enumerate()
        .find(|(_, op)| op.key().kind == meridian_model::rollout_run::KIND_ROLLOUT_RUN)
    {
        return Err(ApiError::Invalid(format!(
            "ops[{i}].kind: {} is the controllers' record of a rollout; use `meridian rollout`",
            meridian_model::rollout_run::KIND_ROLLOUT_RUN
        )));
    }
    crate::request_ids::check_public(&req.request_id)?;
    let request_id = if req.request_id.is_empty() {
        new_request_id()
    } else {
        req.request_id.clone()
    };
    Ok(Txn { request_id, ops })
}

pub(super) fn action_of(e: &Event) -> &'static str {
    match (&e.prev_value, &e.value) {
        (None, _) => "created",
        (Some(_), Some(_)) => "updated",
        (Some(_), None) => "deleted",
    }
}

pub(super) fn is_config_kind(kind: &str) -> bool {
    kind.parse::<meridian_model::Kind>().is_ok()
}
