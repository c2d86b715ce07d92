//! Config writes straight through the API, for tests that set up objects
//! without going through the CLI: one op builder per kind of op, and one
//! `apply` that writes them in a transaction with a fresh request id.

use meridian_proto::v1 as pb;

use crate::Cluster;

/// `PUT KIND/NAME` with `spec` as its JSON value, unconditional.
pub fn put_op(kind: &str, name: &str, spec: serde_json::Value) -> pb::TxnOp {
    put_op_at(kind, name, spec, None)
}

/// `PUT KIND/NAME` that applies only if the object is at `expected`
/// (`Some(0)`: only if it does not exist).
pub fn put_op_at(
    kind: &str,
    name: &str,
    spec: serde_json::Value,
    expected: Option<u64>,
) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: Some(key(kind, name)),
            value: serde_json::to_vec(&spec).expect("a JSON value serializes"),
            expected_revision: expected,
        })),
    }
}

/// `DELETE KIND/NAME`, unconditional.
pub fn del_op(kind: &str, name: &str) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Delete(pb::DeleteOp {
            key: Some(key(kind, name)),
            expected_revision: None,
        })),
    }
}

fn key(kind: &str, name: &str) -> pb::ObjectKey {
    pb::ObjectKey {
        kind: kind.into(),
        name: name.into(),
    }
}

/// The route `main` (every host to `service`) and the listener `edge` on
/// 127.0.0.1:`port` serving it: what most data-plane tests put in front of
/// their upstreams.
pub fn edge_ops(service: &str, port: u16) -> Vec<pb::TxnOp> {
    vec![
        put_op(
            "route",
            "main",
            serde_json::json!({"hosts": ["*"], "rules": [{"backends": [{"service": service}]}]}),
        ),
        put_op(
            "listener",
            "edge",
            serde_json::json!({"address": "127.0.0.1", "port": port, "routes": ["main"]}),
        ),
    ]
}

/// A transaction of `ops` under a fresh request id.
pub fn txn(ops: Vec<pb::TxnOp>) -> pb::TxnRequest {
    pb::TxnRequest {
        request_id: format!("t-{:x}", rand::random::<u64>()),
        ops,
        dry_run: false,
    }
}

impl Cluster {
    /// Writes `ops` in one transaction through the first running node;
    /// panics if it is refused. Returns the revision it committed at.
    pub async fn apply_ops(&self, ops: Vec<pb::TxnOp>) -> u64 {
        self.config(self.running_ids()[0])
            .await
            .txn(txn(ops))
            .await
            .expect("apply")
            .into_inner()
            .revision
    }
}
