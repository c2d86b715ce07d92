//! Writers and checks shared by the store tests.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_tests::Cluster;
use tokio::sync::watch;

pub use meridian_tests::ops::put_op_at as put_op;

pub fn service(port: u16) -> serde_json::Value {
    serde_json::json!({ "port": port })
}

/// Writes `service/NAME` through node `id`; returns the revision.
pub async fn put_service(
    c: &Cluster,
    id: u64,
    name: &str,
    port: u16,
) -> Result<u64, tonic::Status> {
    let mut client = c.config(id).await;
    let r = client
        .txn(pb::TxnRequest {
            request_id: format!("test-{name}-{port}"),
            ops: vec![put_op("service", name, service(port), None)],
            dry_run: false,
        })
        .await?;
    Ok(r.into_inner().revision)
}

pub async fn list_names(
    c: &Cluster,
    id: u64,
    consistency: pb::Consistency,
) -> Result<(BTreeSet<String>, u64), tonic::Status> {
    let mut client = c.config(id).await;
    let r = client
        .list(pb::ListRequest {
            kind: "service".into(),
            consistency: consistency as i32,
        })
        .await?
        .into_inner();
    Ok((r.objects.into_iter().map(|o| o.name).collect(), r.revision))
}

/// Concurrent writers that keep the list of writes acknowledged to them.
pub struct Writers {
    pub acked: Arc<Mutex<BTreeSet<String>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `n` writers, each sending to the API addresses in `addrs` in turn.
    pub fn start(prefix: &str, n: usize, addrs: Vec<String>) -> Writers {
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for w in 0..n {
            let acked = acked.clone();
            let addrs = addrs.clone();
            let rx = rx.clone();
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !*rx.borrow() {
                    let addr = &addrs[(w + i as usize) % addrs.len()];
                    let name = format!("{prefix}-{w}-{i}");
                    let ok = async {
                        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                            .ok()?
                            .connect_timeout(Duration::from_millis(500))
                            .timeout(Duration::from_secs(8))
                            .connect()
                            .await
                            .ok()?;
                        let mut client =
                            meridian_proto::v1::config_service_client::ConfigServiceClient::new(ch);
                        client
                            .txn(pb::TxnRequest {
                                request_id: format!("w-{name}"),
                                ops: vec![put_op("service", &name, service(8000), None)],
                                dry_run: false,
                            })
                            .await
                            .ok()
                    }
                    .await;
                    if ok.is_some() {
                        acked.lock().unwrap().insert(name);
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    i += 1;
                }
            }));
        }
        Writers { acked, stop, tasks }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub async fn stop(self) -> BTreeSet<String> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Every name in `acked` is in `present`; panics naming the missing ones.
pub fn assert_all_present(acked: &BTreeSet<String>, present: &BTreeSet<String>) {
    let missing: Vec<&String> = acked.difference(present).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

pub async fn wait_acked(w: &Writers, at_least: usize) {
    meridian_tests::eventually(
        &format!("{at_least} acknowledged writes"),
        Duration::from_secs(60),
        || async move { (w.acked_count() >= at_least).then_some(()) },
    )
    .await
}

/// A raw connection to node `id`'s peer listener, as another node (or an
/// attacker who reaches the port) would open it: no message size cap.
async fn peer_channel(c: &Cluster, id: u64) -> tonic::transport::Channel {
    let addr = format!("http://127.0.0.1:{}", c.node(id).ports.peer);
    tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn raft_client(
    c: &Cluster,
    id: u64,
) -> meridian_proto::v1::raft_service_client::RaftServiceClient<tonic::transport::Channel> {
    meridian_proto::v1::raft_service_client::RaftServiceClient::new(peer_channel(c, id).await)
        .max_encoding_message_size(usize::MAX)
}

pub async fn internal_client(
    c: &Cluster,
    id: u64,
) -> meridian_proto::v1::internal_service_client::InternalServiceClient<tonic::transport::Channel> {
    meridian_proto::v1::internal_service_client::InternalServiceClient::new(
        peer_channel(c, id).await,
    )
    .max_encoding_message_size(usize::MAX)
}

/// A local-consistency read of `kind/name` (consistency 0: the default).
pub fn get_request(kind: &str, name: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: Some(pb::ObjectKey {
            kind: kind.into(),
            name: name.into(),
        }),
        consistency: 0,
    }
}

/// Panics with the command's stderr unless it succeeded.
pub fn must_succeed(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
