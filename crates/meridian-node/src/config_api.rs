//! The config API (gRPC). Writes go to the leader's config lane, routed there
//! from any node; linearizable reads are answered by the leader after it
//! confirmed its leadership with a quorum; local reads and watches are
//! answered from this node's replica.

mod convert;
mod rollback;
mod watch;

use std::future::Future;
use std::time::Instant;

use meridian_proto::v1 as pb;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_store::{ObjectKey, StateMachineStore, WriteClass};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::error::ApiError;
use crate::routing::{forwarded, Router};
use crate::write::ConfigWrites;
pub(crate) use convert::txn_from_pb;
use convert::{is_config_kind, key_from_pb, to_pb_object, visible_value};

pub(crate) struct ConfigApi {
    router: Router,
    writes: ConfigWrites,
    sm: StateMachineStore,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl ConfigApi {
    pub(crate) fn new(
        router: Router,
        writes: ConfigWrites,
        sm: StateMachineStore,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        ConfigApi {
            router,
            writes,
            sm,
            shutdown,
        }
    }

    async fn confirm_leadership(&self, deadline: Instant) -> Result<(), ApiError> {
        self.router
            .leadership()
            .confirm(
                deadline,
                "read",
                " in time; retry, or read with --consistency=local",
            )
            .await
    }

    /// Answers `msg` on the leader: `here` when this node leads, the same
    /// call forwarded (`remote`) otherwise.
    async fn on_leader<M, T, H, HF, R, RF>(
        &self,
        forwarded: bool,
        msg: &M,
        here: H,
        remote: R,
    ) -> Result<T, ApiError>
    where
        M: Clone,
        H: Fn(Instant) -> HF,
        HF: Future<Output = Result<T, ApiError>>,
        R: Fn(ConfigServiceClient<Channel>, Request<M>) -> RF,
        RF: Future<Output = Result<Response<T>, Status>>,
    {
        self.router
            .on_leader(
                forwarded,
                msg,
                |ch| ConfigServiceClient::new(ch).max_decoding_message_size(256 * 1024 * 1024),
                here,
                remote,
            )
            .await
    }

    // Objects and revision are read under one lock: a reader that watches
    // from the revision it was given sees every later change exactly once.
    fn get_here(&self, key: &ObjectKey) -> Result<pb::GetResponse, ApiError> {
        let (obj, revision) = self.sm.get_at(key);
        let obj = obj.ok_or_else(|| ApiError::NotFound(format!("{key}: not found")))?;
        Ok(pb::GetResponse {
            object: Some(to_pb_object(key, &obj)),
            revision,
        })
    }

    fn list_here(&self, kind: &str) -> pb::ListResponse {
        let kind = (!kind.is_empty()).then_some(kind);
        let (objects, revision) = self.sm.list_at(kind);
        let objects = objects.iter().map(|(k, o)| to_pb_object(k, o)).collect();
        pb::ListResponse { objects, revision }
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<pb::GetResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = req.into_inner();
        let key = &key_from_pb(msg.key.clone(), "key")?;
        if msg.consistency() != pb::Consistency::Linearizable {
            return self.get_here(key);
        }
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                self.confirm_leadership(deadline).await?;
                self.get_here(key)
            },
            |mut c, r| async move { c.get(r).await },
        )
        .await
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<pb::ListResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = req.into_inner();
        if msg.consistency() != pb::Consistency::Linearizable {
            return Ok(self.list_here(&msg.kind));
        }
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                self.confirm_leadership(deadline).await?;
                Ok(self.list_here(&msg.kind))
            },
            |mut c, r| async move { c.list(r).await },
        )
        .await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<pb::TxnResponse, ApiError> {
        let forwarded = forwarded(&req);
        let caller = req
            .extensions()
            .get::<crate::tls::Caller>()
            .map(|c| c.identity.clone());
        let kinds = req.get_ref().ops.iter().filter_map(|op| match &op.op {
            Some(pb::txn_op::Op::Put(p)) => p.key.as_ref(),
            Some(pb::txn_op::Op::Delete(d)) => d.key.as_ref(),
            _ => None,
        });
        crate::authz::check_kinds(caller.as_ref(), kinds.map(|k| k.kind.as_str()))
            .map_err(ApiError::PermissionDenied)?;
        let mut msg = req.into_inner();
        let txn = &txn_from_pb(&msg)?;
        // The request id travels along: a retry after a lost answer is
        // applied once.
        msg.request_id = txn.request_id.clone();
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                let w = self.writes.submit(txn.clone(), msg.dry_run, deadline).await?;
                if !msg.dry_run && !w.duplicate {
                    info!(request_id = %txn.request_id, revision = w.revision, ops = txn.ops.len(), "write committed");
                }
                Ok(pb::TxnResponse {
                    revision: w.revision,
                    duplicate: w.duplicate,
                })
            },
            |mut c, r| async move { c.txn(r).await },
        )
        .await
    }

    async fn get_history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<pb::HistoryResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = req.into_inner();
        if msg.kind.is_empty() && !msg.name.is_empty() {
            return Err(ApiError::Invalid("name given without kind".into()));
        }
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                self.confirm_leadership(deadline).await?;
                Ok(self.history_here(msg))
            },
            |mut c, r| async move { c.get_history(r).await },
        )
        .await
    }

    fn history_here(&self, msg: &pb::HistoryRequest) -> pb::HistoryResponse {
        let key =
            (!msg.name.is_empty()).then(|| ObjectKey::new(msg.kind.clone(), msg.name.clone()));
        // Agents' kinds have a history of their own; the config's is not
        // shortened by endpoint churn.
        let config_only = !msg.internal && (msg.kind.is_empty() || is_config_kind(&msg.kind));
        let class = config_only.then_some(WriteClass::Config);
        let (events, floor, revision) = self.sm.history(class, key.as_ref());
        let limit = if msg.limit == 0 {
            usize::MAX
        } else {
            msg.limit as usize
        };
        let visible = |key: &ObjectKey, v: Option<&Vec<u8>>| {
            v.map(|v| visible_value(key, v)).unwrap_or_default()
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
                action: convert::action_of(e).into(),
                value: visible(&e.key, e.value.as_ref()),
                prev_value: visible(&e.key, e.prev_value.as_ref()),
            })
            .collect();
        pb::HistoryResponse {
            entries,
            revision,
            oldest_revision: floor,
        }
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<pb::RollbackResponse, ApiError> {
        let forwarded = forwarded(&req);
        // Which objects a rollback touches is known only on the leader, so
        // the caller travels with a forwarded request.
        let acting = &crate::authz::acting_for(&req).map_err(ApiError::PermissionDenied)?;
        let header = crate::authz::on_behalf_of(acting.as_ref());
        let mut msg = req.into_inner();
        let key = &rollback::target(&msg)?;
        crate::request_ids::check_public(&msg.request_id)?;
        if msg.request_id.is_empty() {
            msg.request_id = convert::new_request_id();
        }
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                self.rollback_here(msg, key.as_ref(), acting.as_ref(), deadline)
                    .await
            },
            |mut c, mut r| {
                if let Some(h) = &header {
                    r.metadata_mut()
                        .insert(crate::authz::ON_BEHALF_OF, h.clone());
                }
                async move { c.rollback(r).await }
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl pb::config_service_server::ConfigService for ConfigApi {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Ok(Response::new(ConfigApi::get(self, req).await?))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(ConfigApi::list(self, req).await?))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(ConfigApi::txn(self, req).await?))
    }

    async fn get_history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        Ok(Response::new(ConfigApi::get_history(self, req).await?))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        Ok(Response::new(ConfigApi::rollback(self, req).await?))
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<watch::WatchStream>, Status> {
        Ok(Response::new(watch::watch(
            &self.sm,
            &self.shutdown,
            req.into_inner(),
        )?))
    }
}
