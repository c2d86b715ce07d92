//! Clients that record histories: concurrent tasks, each sending reads,
//! writes and CAS on a few keys (per-key registers: `service/NAME` objects
//! whose health-check path carries a value no other op writes) to every
//! node in turn, with short deadlines, and recording each op's call and
//! return times and outcome.
//!
//! Keys rotate every `epoch` (new names), so each key's history stays short
//! and the checker's search small, however long the run.

use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::history::{Op, OpKind, Outcome};

pub const KIND: &str = "service";

/// A deliberately broken client, to show the checks fail when they should.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Reads with `CONSISTENCY_LOCAL` (the node's replica, no read
    /// barrier) but records them as linearizable: a partitioned or lagging
    /// node answers stale values.
    LocalReads,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub clients: usize,
    pub keys: usize,
    pub epoch: Duration,
    pub op_timeout: Duration,
    pub broken: Option<Broken>,
    /// Prefix of every key name of this scenario (a valid object name).
    pub key_prefix: String,
}

/// A running set of clients; [`Clients::stop`] returns their histories.
pub struct Clients {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Op>>>,
}

/// Where the clients send requests: every node's API address.
#[derive(Clone)]
pub struct Targets {
    pub nodes: Vec<(u64, String)>,
}

pub fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a node address is a valid URI")
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy()
}

impl Clients {
    pub fn start(w: &Workload, targets: Targets, seed: u64, t0: Instant) -> Clients {
        let (stop, rx) = watch::channel(false);
        let tasks = (0..w.clients)
            .map(|c| {
                let client = Client {
                    id: c,
                    w: w.clone(),
                    rng: StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(c as u64)),
                    nodes: targets
                        .nodes
                        .iter()
                        .map(|(id, a)| (*id, ConfigServiceClient::new(channel(a))))
                        .collect(),
                    seq: 0,
                    cache: std::collections::HashMap::new(),
                    t0,
                    history: Vec::new(),
                };
                tokio::spawn(client.run(rx.clone()))
            })
            .collect();
        Clients { stop, tasks }
    }

    pub async fn stop(self) -> Vec<Op> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for t in self.tasks {
            if let Ok(h) = t.await {
                all.extend(h);
            }
        }
        all
    }
}

struct Client {
    id: usize,
    w: Workload,
    rng: StdRng,
    nodes: Vec<(u64, ConfigServiceClient<Channel>)>,
    seq: u64,
    /// The last (value, revision) this client read per key: a CAS expects it.
    cache: std::collections::HashMap<String, (Option<String>, u64)>,
    t0: Instant,
    history: Vec<Op>,
}

/// How an answer is recorded.
enum Answer {
    Ok,
    NotFound,
    Mismatch,
    Failed,
    Unknown,
}

fn classify(st: &tonic::Status) -> Answer {
    use tonic::Code::*;
    match st.code() {
        NotFound => Answer::NotFound,
        FailedPrecondition => Answer::Mismatch,
        InvalidArgument | AlreadyExists | PermissionDenied | Unauthenticated | OutOfRange => {
            Answer::Failed
        }
        // A refused connection sent nothing; anything else that is not an
        // answer (a timeout, a reset, "no quorum" after a proposal) may
        // have taken effect.
        Unavailable if refused(st) => Answer::Failed,
        _ => Answer::Unknown,
    }
}

fn refused(st: &tonic::Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(st);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        src = e.source();
    }
    false
}

/// The register's value inside an object's spec: its health-check path.
pub fn value_of(spec: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(spec).ok()?;
    v.pointer("/healthCheck/path")?.as_str().map(str::to_string)
}

pub fn spec_with(value: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "port": 8080,
        "healthCheck": { "protocol": "http", "path": value },
    }))
    .expect("json")
}

pub fn key(name: &str) -> Option<pb::ObjectKey> {
    Some(pb::ObjectKey {
        kind: KIND.into(),
        name: name.into(),
    })
}

pub fn put(name: &str, value: &str, expected: Option<u64>) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: key(name),
            value: spec_with(value),
            expected_revision: expected,
        })),
    }
}

impl Client {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    async fn run(mut self, stop: watch::Receiver<bool>) -> Vec<Op> {
        while !*stop.borrow() {
            let epoch = self.t0.elapsed().as_millis() / self.w.epoch.as_millis().max(1);
            let k = self.rng.gen_range(0..self.w.keys);
            let name = format!("{}-e{epoch}-k{k}", self.w.key_prefix);
            let node = self.rng.gen_range(0..self.nodes.len());
            let roll = self.rng.gen_range(0..10);
            let answered = match roll {
                0..=3 => self.read(node, &name).await,
                4..=6 => self.write(node, &name, None).await,
                _ => match self.cache.get(&name).cloned() {
                    Some((expect, rev)) => self.write(node, &name, Some((expect, rev))).await,
                    None => self.read(node, &name).await,
                },
            };
            if !answered {
                // The node is down or cut off: do not spin on it.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.history
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.w.op_timeout);
        r
    }

    /// Returns whether the node answered.
    async fn read(&mut self, node: usize, name: &str) -> bool {
        let consistency = match self.w.broken {
            Some(Broken::LocalReads) => pb::Consistency::Local,
            None => pb::Consistency::Linearizable,
        };
        let req = self.request(pb::GetRequest {
            key: key(name),
            consistency: consistency as i32,
        });
        let (id, mut c) = (self.nodes[node].0, self.nodes[node].1.clone());
        let call = self.now();
        let r = c.get(req).await;
        let ret = self.now();
        let mut revision = 0;
        let (saw, outcome) = match r {
            Ok(resp) => {
                let resp = resp.into_inner();
                revision = resp.revision;
                let obj = resp.object;
                let saw = obj.as_ref().and_then(|o| value_of(&o.value));
                let rev = obj.as_ref().map_or(0, |o| o.revision);
                self.cache.insert(name.to_string(), (saw.clone(), rev));
                (saw, Outcome::Ok)
            }
            Err(st) => match classify(&st) {
                Answer::NotFound => {
                    self.cache.insert(name.to_string(), (None, 0));
                    (None, Outcome::Ok)
                }
                Answer::Failed => (None, Outcome::Failed),
                _ => (None, Outcome::Unknown),
            },
        };
        self.history.push(Op {
            client: self.id,
            key: name.to_string(),
            kind: OpKind::Read { saw },
            call,
            ret,
            outcome,
            node: id,
            revision,
        });
        outcome == Outcome::Ok
    }

    /// A put of a fresh value; with `cas`, guarded by the revision at which
    /// the expected value was read.
    async fn write(&mut self, node: usize, name: &str, cas: Option<(Option<String>, u64)>) -> bool {
        self.seq += 1;
        let value = format!("/{}-c{}-{}", self.w.key_prefix, self.id, self.seq);
        let req = self.request(pb::TxnRequest {
            request_id: format!("chaos-{}-c{}-{}", self.w.key_prefix, self.id, self.seq),
            ops: vec![put(name, &value, cas.as_ref().map(|(_, rev)| *rev))],
            dry_run: false,
        });
        let (id, mut c) = (self.nodes[node].0, self.nodes[node].1.clone());
        let call = self.now();
        let r = c.txn(req).await;
        let ret = self.now();
        // Whatever happened, the cached revision may be stale now; a write's
        // own revision is not one to expect (a group-commit round gives
        // every write in it the same one).
        self.cache.remove(name);
        let (answer, revision) = match r {
            Ok(resp) => (Answer::Ok, resp.into_inner().revision),
            Err(st) => (classify(&st), 0),
        };
        let (outcome, swapped) = match answer {
            Answer::Ok => (Outcome::Ok, true),
            Answer::Mismatch if cas.is_some() => (Outcome::Ok, false),
            Answer::Failed | Answer::NotFound | Answer::Mismatch => (Outcome::Failed, false),
            Answer::Unknown => (Outcome::Unknown, false),
        };
        let kind = match cas {
            None => OpKind::Write { value },
            Some((expect, _)) => OpKind::Cas {
                expect,
                value,
                swapped,
            },
        };
        self.history.push(Op {
            client: self.id,
            key: name.to_string(),
            kind,
            call,
            ret,
            outcome,
            node: id,
            revision,
        });
        outcome != Outcome::Unknown
    }
}

/// One linearizable read per key after recovery, through `addr`, retried
/// until answered; recorded like any client's op (as client `client`).
pub async fn final_reads(addr: &str, keys: &[String], client: usize, t0: Instant) -> Vec<Op> {
    let mut c = ConfigServiceClient::new(channel(addr));
    let mut out = Vec::new();
    for name in keys {
        for _ in 0..20 {
            let mut req = tonic::Request::new(pb::GetRequest {
                key: key(name),
                consistency: pb::Consistency::Linearizable as i32,
            });
            req.set_timeout(Duration::from_secs(5));
            let call = t0.elapsed().as_nanos() as u64;
            let r = c.get(req).await;
            let ret = t0.elapsed().as_nanos() as u64;
            let saw = match r {
                Ok(resp) => resp.into_inner().object.and_then(|o| value_of(&o.value)),
                Err(st) if st.code() == tonic::Code::NotFound => None,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            out.push(Op {
                client,
                key: name.clone(),
                kind: OpKind::Read { saw },
                call,
                ret,
                outcome: Outcome::Ok,
                node: 0,
                revision: 0,
            });
            break;
        }
    }
    out
}

/// Every value the store's retained history holds for `name`, and the
/// oldest revision it still covers (older changes were compacted).
pub async fn stored_values(addr: &str, name: &str) -> Result<(Vec<String>, u64), tonic::Status> {
    let mut c = ConfigServiceClient::new(channel(addr)).max_decoding_message_size(64 * 1024 * 1024);
    let mut req = tonic::Request::new(pb::HistoryRequest {
        kind: KIND.into(),
        name: name.into(),
        limit: 0,
        internal: false,
    });
    req.set_timeout(Duration::from_secs(10));
    let h = c.get_history(req).await?.into_inner();
    Ok((
        h.entries
            .iter()
            .filter_map(|e| value_of(&e.value))
            .collect(),
        h.oldest_revision,
    ))
}

/// A write through `addr` that must be answered "ok": the liveness probe.
pub async fn probe_write(addr: &str, name: &str, value: &str) -> bool {
    let mut c = ConfigServiceClient::new(channel(addr));
    let mut req = tonic::Request::new(pb::TxnRequest {
        request_id: format!("chaos-probe-{value}"),
        ops: vec![put(name, value, None)],
        dry_run: false,
    });
    req.set_timeout(Duration::from_secs(3));
    c.txn(req).await.is_ok()
}
