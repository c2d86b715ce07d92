//! What every benchmark does to set up: connect, and commit its config in
//! one transaction.

use std::time::Duration;

use anyhow::{Context, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use tonic::transport::{Channel, Endpoint};

pub async fn channel(addr: &str, timeout: Duration) -> Result<Channel> {
    let addr = addr
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("{addr:?} is not an address"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// One put of a benchmark's setup transaction.
pub fn put(kind: &str, name: &str, spec: &serde_json::Value) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: Some(pb::ObjectKey {
                kind: kind.into(),
                name: name.into(),
            }),
            value: serde_json::to_vec(spec).expect("json"),
            expected_revision: None,
        })),
    }
}

/// Commits a benchmark's setup transaction; returns its revision.
pub async fn txn(api: &mut ConfigServiceClient<Channel>, id: &str, ops: Vec<pb::TxnOp>) -> Result<u64> {
    let r = api
        .txn(pb::TxnRequest {
            request_id: id.into(),
            ops,
            dry_run: false,
        })
        .await
        .map_err(|e| anyhow::anyhow!("Txn: {:?}: {}", e.code(), e.message()))?;
    Ok(r.into_inner().revision)
}
