//! The config API (gRPC). Writes go to the leader's proposer, forwarded there
//! from any node; linearizable reads are answered by the leader after it
//! confirmed its leadership with a quorum; local reads and watches are
//! answered from this node's replica.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_store::{Event, ObjectKey, StoredObject, Txn, TxnOp};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::error::ApiError;
use crate::leader::{self, LeaderIs};
use crate::node::Shared;
use crate::proposer::WriteError;

/// Metadata key a non-leader sets when it refuses a forwarded request.
const NOT_LEADER: &str = "x-meridian-not-leader";
/// Largest name accepted before the model even looks at it.
const MAX_NAME_BYTES: usize = 253;

pub(crate) struct ConfigApi {
    s: Arc<Shared>,
}

impl ConfigApi {
    pub(crate) fn new(s: Arc<Shared>) -> Self {
        ConfigApi { s }
    }
}

fn not_leader_status() -> Status {
    let mut st = Status::unavailable("this node is not the leader");
    st.metadata_mut()
        .insert(NOT_LEADER, tonic::metadata::MetadataValue::from_static("1"));
    st
}

fn retryable(st: &Status) -> bool {
    st.metadata().get(NOT_LEADER).is_some()
        || (st.code() == tonic::Code::Unavailable && !st.message().starts_with("no quorum"))
}

impl Shared {
    /// Waits until some node leads, or answers "no leader" at the deadline.
    pub(crate) async fn await_leader(&self, deadline: Instant) -> Result<LeaderIs, Status> {
        loop {
            match leader::leader(&self.raft, self.id) {
                LeaderIs::Unknown => {}
                LeaderIs::Removed => {
                    return Err(Status::unavailable(
                        "this node is no longer a member of the cluster (it was removed); use another node's address",
                    ))
                }
                known => return Ok(known),
            }
            if Instant::now() >= deadline {
                let m = self.raft.metrics().borrow().clone();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                return Err(Status::unavailable(format!(
                    "no leader: no quorum among voters {voters:?} (term {}); writes and linearizable reads are \
                     refused until a majority of voters is up and can reach each other",
                    m.current_term
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn request_deadline(&self) -> Instant {
        Instant::now() + self.write_timeout + Duration::from_secs(1)
    }

    fn leader_client(
        &self,
        info: &meridian_store::NodeInfo,
    ) -> Result<ConfigServiceClient<tonic::transport::Channel>, Status> {
        let ch = self
            .channels
            .get(&info.api_addr)
            .map_err(Status::internal)?;
        Ok(ConfigServiceClient::new(ch).max_decoding_message_size(256 * 1024 * 1024))
    }
}

/// What clients may see of a stored value: secrets' private keys never
/// leave the cluster through the API (only through backups).
fn visible_value(key: &ObjectKey, value: &[u8]) -> Vec<u8> {
    if key.kind != meridian_model::Kind::Secret.as_str() {
        return value.to_vec();
    }
    match meridian_model::Object::from_stored(&key.kind, &key.name, value) {
        Ok(obj) => serde_json::to_vec(&obj.to_redacted_json()["spec"]).unwrap_or_default(),
        // A value that no longer parses is still a secret: show nothing of it.
        Err(_) => br#"{"privateKey":"<redacted>"}"#.to_vec(),
    }
}

fn to_pb_object(key: &ObjectKey, obj: &StoredObject) -> pb::Object {
    pb::Object {
        kind: key.kind.clone(),
        name: key.name.clone(),
        value: visible_value(key, &obj.value),
        revision: obj.revision,
        created_revision: obj.created_revision,
        updated_at_ms: obj.updated_at_ms,
    }
}

fn to_pb_event(e: &Event) -> pb::WatchEvent {
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

fn key_from_pb(key: Option<pb::ObjectKey>, field: &str) -> Result<ObjectKey, Status> {
    let key = key.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))?;
    if key.kind.is_empty() {
        return Err(Status::invalid_argument(format!("{field}.kind: required")));
    }
    if key.name.is_empty() {
        return Err(Status::invalid_argument(format!("{field}.name: required")));
    }
    if key.name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field}.name: longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(ObjectKey::new(key.kind, key.name))
}

fn txn_from_pb(req: &pb::TxnRequest) -> Result<Txn, Status> {
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
                return Err(Status::invalid_argument(format!(
                    "ops[{i}]: neither put, delete nor check"
                )))
            }
        }
    }
    let request_id = if req.request_id.is_empty() {
        format!("srv-{:032x}", rand::random::<u128>())
    } else {
        req.request_id.clone()
    };
    Ok(Txn { request_id, ops })
}

fn action_of(e: &Event) -> &'static str {
    match (&e.prev_value, &e.value) {
        (None, _) => "created",
        (Some(_), Some(_)) => "updated",
        (Some(_), None) => "deleted",
    }
}

fn is_config_kind(kind: &str) -> bool {
    kind.parse::<meridian_model::Kind>().is_ok()
}

/// The write that restores every object of `events` (the retained events
/// after the target revision, oldest first) to its value at that revision,
/// guarded by each object's current revision; and what it does per object.
fn rollback_plan(
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

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::config_service_server::ConfigService for ConfigApi {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let msg = req.into_inner();
        let key = key_from_pb(msg.key.clone(), "key")?;
        if msg.consistency() == pb::Consistency::Linearizable {
            if let Some(mut remote) = self.linearizable_barrier(forwarded).await? {
                return remote.get(leader::mark_forwarded(msg)).await;
            }
        }
        let obj = self
            .s
            .sm
            .get(&key)
            .ok_or_else(|| ApiError::NotFound(format!("{key}: not found")).into_status())?;
        Ok(Response::new(pb::GetResponse {
            object: Some(to_pb_object(&key, &obj)),
            revision: self.s.sm.revision(),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let msg = req.into_inner();
        if msg.consistency() == pb::Consistency::Linearizable {
            if let Some(mut remote) = self.linearizable_barrier(forwarded).await? {
                return remote.list(leader::mark_forwarded(msg)).await;
            }
        }
        let kind = (!msg.kind.is_empty()).then_some(msg.kind.as_str());
        let objects = self
            .s
            .sm
            .list(kind)
            .iter()
            .map(|(k, o)| to_pb_object(k, o))
            .collect();
        Ok(Response::new(pb::ListResponse {
            objects,
            revision: self.s.sm.revision(),
        }))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let msg = req.into_inner();
        let txn = txn_from_pb(&msg)?;
        let deadline = self.s.request_deadline();
        loop {
            let err = match self.s.await_leader(deadline).await? {
                LeaderIs::Me => match self.s.proposer.submit(txn.clone(), msg.dry_run).await {
                    Ok(w) => {
                        if !msg.dry_run && !w.duplicate {
                            info!(request_id = %txn.request_id, revision = w.revision, ops = txn.ops.len(), "write committed");
                        }
                        return Ok(Response::new(pb::TxnResponse {
                            revision: w.revision,
                            duplicate: w.duplicate,
                        }));
                    }
                    Err(WriteError::Api(e)) => return Err(e.into_status()),
                    Err(WriteError::NotLeader) => not_leader_status(),
                },
                LeaderIs::Other(_) if forwarded => return Err(not_leader_status()),
                LeaderIs::Other(info) => {
                    // The request id travels along: a retry after a lost
                    // answer is applied once.
                    let mut fwd = msg.clone();
                    fwd.request_id = txn.request_id.clone();
                    match self
                        .s
                        .leader_client(&info)?
                        .txn(leader::mark_forwarded(fwd))
                        .await
                    {
                        Ok(r) => return Ok(r),
                        Err(st) if retryable(&st) => st,
                        Err(st) => return Err(st),
                    }
                }
                LeaderIs::Unknown | LeaderIs::Removed => {
                    unreachable!("await_leader returns a known leader")
                }
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get_history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let msg = req.into_inner();
        if msg.kind.is_empty() && !msg.name.is_empty() {
            return Err(Status::invalid_argument("name given without kind"));
        }
        if let Some(mut remote) = self.linearizable_barrier(forwarded).await? {
            return remote.get_history(leader::mark_forwarded(msg)).await;
        }
        let key =
            (!msg.name.is_empty()).then(|| ObjectKey::new(msg.kind.clone(), msg.name.clone()));
        let (events, floor, revision) = self.s.sm.history(key.as_ref());
        let limit = if msg.limit == 0 {
            usize::MAX
        } else {
            msg.limit as usize
        };
        let entries = events
            .iter()
            .rev()
            .filter(|e| {
                if msg.kind.is_empty() {
                    msg.internal || is_config_kind(&e.key.kind)
                } else {
                    e.key.kind == msg.kind
                }
            })
            .take(limit)
            .map(|e| pb::HistoryEntry {
                key: Some(pb::ObjectKey {
                    kind: e.key.kind.clone(),
                    name: e.key.name.clone(),
                }),
                revision: e.revision,
                updated_at_ms: e.updated_at_ms,
                action: action_of(e).into(),
                value: e
                    .value
                    .as_deref()
                    .map(|v| visible_value(&e.key, v))
                    .unwrap_or_default(),
                prev_value: e
                    .prev_value
                    .as_deref()
                    .map(|v| visible_value(&e.key, v))
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse {
            entries,
            revision,
            oldest_revision: floor,
        }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let forwarded = leader::forwarded(&req);
        let mut msg = req.into_inner();
        let key = match (msg.kind.is_empty(), msg.name.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let key = key_from_pb(
                    Some(pb::ObjectKey {
                        kind: msg.kind.clone(),
                        name: msg.name.clone(),
                    }),
                    "object",
                )?;
                if !is_config_kind(&key.kind) {
                    return Err(Status::invalid_argument(format!(
                        "{key}: only config objects can be rolled back ({} are not)",
                        key.kind
                    )));
                }
                Some(key)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give both kind and name, or neither (the whole config)",
                ))
            }
        };
        if msg.request_id.is_empty() {
            msg.request_id = format!("srv-{:032x}", rand::random::<u128>());
        }
        let deadline = self.s.request_deadline();
        loop {
            let err = match self.linearizable_barrier(forwarded).await? {
                // The request id travels along: a retry is applied once.
                Some(mut remote) => {
                    match remote.rollback(leader::mark_forwarded(msg.clone())).await {
                        Ok(r) => return Ok(r),
                        Err(st) if retryable(&st) => st,
                        Err(st) => return Err(st),
                    }
                }
                None => {
                    // A retry of a rollback that was applied: that write's answer.
                    if let Some(
                        meridian_store::TxnOutcome::Committed { revision }
                        | meridian_store::TxnOutcome::Duplicate { revision },
                    ) = self.s.sm.dedup_outcome(&msg.request_id)
                    {
                        return Ok(Response::new(pb::RollbackResponse {
                            revision,
                            duplicate: true,
                            changes: vec![],
                            base_revision: 0,
                        }));
                    }
                    let (events, floor, revision) = self.s.sm.history(key.as_ref());
                    let what = key
                        .as_ref()
                        .map_or("the config".to_string(), |k| k.to_string());
                    if msg.to_revision > revision {
                        return Err(Status::invalid_argument(format!(
                            "revision {} is in the future: the current revision is {revision}",
                            msg.to_revision
                        )));
                    }
                    if msg.to_revision < floor {
                        return Err(Status::out_of_range(format!(
                            "history before revision {floor} was compacted: cannot restore {what} at revision {}; \
                             the oldest revision available is {floor}",
                            msg.to_revision
                        )));
                    }
                    let after: Vec<Event> = events
                        .into_iter()
                        .filter(|e| e.revision > msg.to_revision && is_config_kind(&e.key.kind))
                        .collect();
                    let (ops, changes) = rollback_plan(&self.s.sm, &after);
                    if ops.is_empty() {
                        return Err(ApiError::NotFound(format!(
                            "nothing to roll back: {what} is as it was at revision {}",
                            msg.to_revision
                        ))
                        .into_status());
                    }
                    let txn = Txn {
                        request_id: msg.request_id.clone(),
                        ops,
                    };
                    match self.s.proposer.submit(txn, msg.dry_run).await {
                        Ok(w) => {
                            if !msg.dry_run && !w.duplicate {
                                info!(request_id = %msg.request_id, revision = w.revision, to_revision = msg.to_revision, objects = changes.len(), "rollback committed");
                            }
                            return Ok(Response::new(pb::RollbackResponse {
                                revision: if msg.dry_run { revision } else { w.revision },
                                duplicate: w.duplicate,
                                changes: if w.duplicate { vec![] } else { changes },
                                base_revision: revision,
                            }));
                        }
                        Err(WriteError::Api(e)) => return Err(e.into_status()),
                        Err(WriteError::NotLeader) => not_leader_status(),
                    }
                }
            };
            if forwarded || Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let msg = req.into_inner();
        let kind = msg.kind.clone();
        let (initial, mut rx) = self.s.sm.subscribe_from(msg.from_revision).map_err(|e| {
            Status::failed_precondition(format!(
                "{e}; list again and watch from the listed revision"
            ))
        })?;
        // A replica behind the revision asked for (a follower that has not
        // applied it yet) still broadcasts those older changes as it catches
        // up: the watch starts strictly after `from_revision` either way.
        let from = msg.from_revision;
        let matches = move |e: &Event| e.revision > from && (kind.is_empty() || e.key.kind == kind);
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let start_rev = self.s.sm.revision().max(msg.from_revision);
        let mut shutdown = self.s.shutdown.clone();
        tokio::spawn(async move {
            let first: Vec<pb::WatchEvent> = initial
                .iter()
                .filter(|e| matches(e))
                .map(to_pb_event)
                .collect();
            let rev = initial
                .last()
                .map(|e| e.revision)
                .unwrap_or(start_rev)
                .max(start_rev);
            if tx
                .send(Ok(pb::WatchResponse {
                    events: first,
                    revision: rev,
                }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let batch = tokio::select! {
                    b = rx.recv() => b,
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(Status::unavailable("node is shutting down; watch again from the last revision"))).await;
                        return;
                    }
                };
                match batch {
                    Ok(events) => {
                        let rev = events.iter().map(|e| e.revision).max().unwrap_or(0);
                        let events: Vec<pb::WatchEvent> = events
                            .iter()
                            .filter(|e| matches(e))
                            .map(to_pb_event)
                            .collect();
                        if events.is_empty() {
                            continue;
                        }
                        if tx
                            .send(Ok(pb::WatchResponse {
                                events,
                                revision: rev,
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::failed_precondition(format!(
                                "compacted: the watcher fell {n} changes behind; list again and watch from the listed revision"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        let _ = tx
                            .send(Err(Status::failed_precondition(
                                "compacted: the replica was replaced by a snapshot; list again and watch from the listed revision",
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

impl ConfigApi {
    /// Makes a local read linearizable: on the leader, confirms leadership
    /// with a quorum and waits until the state machine caught up; elsewhere,
    /// returns a client to the leader to ask instead.
    async fn linearizable_barrier(
        &self,
        forwarded: bool,
    ) -> Result<Option<ConfigServiceClient<tonic::transport::Channel>>, Status> {
        let deadline = self.s.request_deadline();
        loop {
            match self.s.await_leader(deadline).await? {
                LeaderIs::Me => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.s.raft.ensure_linearizable()).await {
                        Ok(Ok(_)) => return Ok(None),
                        Ok(Err(e)) if e.forward_to_leader::<meridian_store::NodeInfo>().is_some() => {}
                        Ok(Err(e)) => return Err(Status::unavailable(format!("read barrier failed: {e}"))),
                        Err(_) => {
                            return Err(Status::unavailable(
                                "no quorum: leadership could not be confirmed in time; retry, or read with --consistency=local",
                            ))
                        }
                    }
                }
                LeaderIs::Other(_) if forwarded => return Err(not_leader_status()),
                LeaderIs::Other(info) => return Ok(Some(self.s.leader_client(&info)?)),
                LeaderIs::Unknown | LeaderIs::Removed => {}
            }
            if Instant::now() >= deadline {
                return Err(Status::unavailable("no leader"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
