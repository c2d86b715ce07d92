//! The rollout API (gRPC, `proto/meridian/v1/rollout.proto`): starting a
//! rollout (the objects and the run that holds them, in one transaction),
//! listing runs, and the operator's transitions. Every write is made on the
//! leader, routed there from any node like the config API's.

use std::future::Future;
use std::time::Instant;

use meridian_model::rollout_run::{RolledObject, RolloutRun, RunState, KIND_ROLLOUT_RUN};
use meridian_model::{Kind, Object, Spec};
use meridian_proto::v1 as pb;
use meridian_proto::v1::rollout_service_client::RolloutServiceClient;
use meridian_store::{ObjectKey, Txn, TxnOp};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::config_api::txn_from_pb;
use crate::error::ApiError;
use crate::rollout::{leader_now_ms, to_pb, Runs, KEEP_FINISHED};
use crate::routing::{forwarded, Router};

pub(crate) struct RolloutApi {
    router: Router,
    runs: Runs,
}

/// A run's id: the policy and a hash of the request id, so that a retried
/// start is the same transaction and is answered as a duplicate.
fn run_id(policy: &str, request_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{policy}-{:08x}", h as u32)
}

impl RolloutApi {
    pub(crate) fn new(router: Router, runs: Runs) -> Self {
        RolloutApi { router, runs }
    }

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
        R: Fn(RolloutServiceClient<Channel>, Request<M>) -> RF,
        RF: Future<Output = Result<Response<T>, Status>>,
    {
        self.router
            .on_leader(forwarded, msg, RolloutServiceClient::new, here, remote)
            .await
    }

    /// The transaction that starts a rollout of `txn` under `policy`: each
    /// object's current value is recorded as its previous one, and the
    /// write is guarded by the revision that value was read at.
    fn start_txn(&self, policy: &str, txn: Txn) -> Result<(String, RolloutRun, Txn), ApiError> {
        let sm = &self.runs.sm;
        let pkey = ObjectKey::new(Kind::Rollout.as_str(), policy);
        let stored = sm.get(&pkey).ok_or_else(|| {
            ApiError::NotFound(format!(
                "rollout/{policy}: not found; create the policy (kind rollout) first"
            ))
        })?;
        let spec = match Object::from_stored(&pkey.kind, policy, &stored.value).map(|o| o.spec) {
            Ok(Spec::Rollout(s)) => s,
            Ok(_) => unreachable!("a rollout object has a rollout spec"),
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "rollout/{policy}: stored policy does not parse: {e}"
                )))
            }
        };
        let mut ops = Vec::with_capacity(txn.ops.len() + 1);
        let mut objects = Vec::new();
        for (i, op) in txn.ops.into_iter().enumerate() {
            let kind: Kind = op
                .key()
                .kind
                .parse()
                .map_err(|e| ApiError::Invalid(format!("ops[{i}].kind: {e}")))?;
            let key = ObjectKey::new(kind.as_str(), op.key().name.clone());
            if matches!(op, TxnOp::Check { .. }) {
                ops.push(op);
                continue;
            }
            if matches!(kind, Kind::Secret | Kind::Rollout) {
                return Err(ApiError::Invalid(format!(
                    "{key}: {kind} objects are not rolled out progressively (a run keeps previous values readable); \
                     apply it without --rollout"
                )));
            }
            let current = sm.get(&key);
            let previous = match &current {
                Some(o) => Some(
                    serde_json::from_slice(&o.value)
                        .map_err(|e| ApiError::Internal(format!("{key}: stored value: {e}")))?,
                ),
                None => None,
            };
            let read_at = current.as_ref().map_or(0, |o| o.revision);
            let guarded = |expected: Option<u64>| Some(expected.unwrap_or(read_at));
            ops.push(match op {
                TxnOp::Put {
                    value,
                    expected_revision,
                    ..
                } => TxnOp::Put {
                    key: key.clone(),
                    value,
                    expected_revision: guarded(expected_revision),
                },
                TxnOp::Delete {
                    expected_revision, ..
                } => TxnOp::Delete {
                    key: key.clone(),
                    expected_revision: guarded(expected_revision),
                },
                TxnOp::Check { .. } => unreachable!("handled above"),
            });
            objects.push(RolledObject {
                kind,
                name: key.name,
                previous,
            });
        }
        if objects.is_empty() {
            return Err(ApiError::Invalid(
                "ops: nothing to roll out; give at least one put or delete".into(),
            ));
        }
        let id = run_id(policy, &txn.request_id);
        let now = leader_now_ms(&self.runs.sm);
        let run = RolloutRun {
            policy: policy.to_string(),
            spec,
            objects,
            step: 0,
            state: RunState::Progressing,
            started_at_ms: now,
            step_started_at_ms: now,
            updated_at_ms: now,
            reason: String::new(),
        };
        ops.push(TxnOp::Put {
            key: ObjectKey::new(KIND_ROLLOUT_RUN, id.clone()),
            value: run.to_bytes(),
            expected_revision: Some(0),
        });
        // The store keeps the newest finished runs only.
        let finished: Vec<_> = self
            .runs
            .list()
            .into_iter()
            .filter(|(_, r, _)| !r.state.is_active())
            .collect();
        for (old, _, o) in finished.into_iter().skip(KEEP_FINISHED) {
            ops.push(TxnOp::Delete {
                key: ObjectKey::new(KIND_ROLLOUT_RUN, old),
                expected_revision: Some(o.revision),
            });
        }
        Ok((
            id,
            run,
            Txn {
                request_id: txn.request_id,
                ops,
            },
        ))
    }

    async fn start(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Result<pb::StartRolloutResponse, ApiError> {
        let forwarded = forwarded(&req);
        let mut msg = req.into_inner();
        if msg.policy.is_empty() {
            return Err(ApiError::Invalid(
                "policy: required (the name of a rollout object)".into(),
            ));
        }
        let txn = txn_from_pb(&pb::TxnRequest {
            request_id: msg.request_id.clone(),
            ops: msg.ops.clone(),
            dry_run: msg.dry_run,
        })?;
        msg.request_id = txn.request_id.clone();
        let msg = &msg;
        let txn = &txn;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                let (id, run, full) = self.start_txn(&msg.policy, txn.clone())?;
                let w = self.runs.writes().submit(full, msg.dry_run, deadline).await?;
                if !msg.dry_run && !w.duplicate {
                    info!(rollout = %id, policy = %msg.policy, request_id = %txn.request_id, revision = w.revision, objects = run.objects.len(), steps = run.spec.steps.len(), "rollout started");
                }
                Ok(pb::StartRolloutResponse { rollout: Some(to_pb(&id, &run, w.revision)), revision: w.revision, duplicate: w.duplicate })
            },
            |mut c, r| async move { c.start_rollout(r).await },
        )
        .await
    }

    fn list_here(&self, id: &str) -> Result<pb::ListRolloutsResponse, ApiError> {
        let revision = self.runs.sm.revision();
        let rollouts = if id.is_empty() {
            self.runs
                .list()
                .iter()
                .map(|(i, r, o)| to_pb(i, r, o.revision))
                .collect()
        } else {
            let (i, r, o) = self.runs.get(id)?;
            vec![to_pb(&i, &r, o.revision)]
        };
        Ok(pb::ListRolloutsResponse { rollouts, revision })
    }

    async fn list(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Result<pb::ListRolloutsResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = req.into_inner();
        if msg.consistency() != pb::Consistency::Linearizable {
            return self.list_here(&msg.id);
        }
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |deadline| async move {
                self.router
                    .leadership()
                    .confirm(deadline, "read", " in time; retry")
                    .await?;
                self.list_here(&msg.id)
            },
            |mut c, r| async move { c.list_rollouts(r).await },
        )
        .await
    }

    /// One operator transition, on the leader.
    async fn act(
        &self,
        req: Request<pb::RolloutActionRequest>,
        action: Action,
    ) -> Result<pb::RolloutActionResponse, ApiError> {
        let forwarded = forwarded(&req);
        let msg = req.into_inner();
        let msg = &msg;
        self.on_leader(
            forwarded,
            msg,
            |_| async move {
                let (id, run, stored) = self.runs.get(&msg.id)?;
                let refuse = |what: &str| {
                    Err(ApiError::Conflict(format!(
                        "rollout {id} is {}: {what}",
                        run.state.as_str()
                    )))
                };
                let (next, rev) = match (action, run.state) {
                    (Action::Promote, RunState::Progressing | RunState::Paused) => {
                        self.runs
                            .promote(&id, &stored, &run, "promoted by an operator")
                            .await?
                    }
                    (Action::Promote, _) => {
                        return refuse("only a progressing or paused rollout is promoted")
                    }
                    (Action::Pause, RunState::Progressing) => {
                        self.runs
                            .set_state(
                                &id,
                                &stored,
                                &run,
                                RunState::Paused,
                                "paused by an operator",
                            )
                            .await?
                    }
                    (Action::Pause, _) => return refuse("only a progressing rollout is paused"),
                    (Action::Resume, RunState::Paused) => {
                        self.runs
                            .set_state(
                                &id,
                                &stored,
                                &run,
                                RunState::Progressing,
                                "resumed by an operator",
                            )
                            .await?
                    }
                    (Action::Resume, RunState::Halted) => {
                        self.runs
                            .roll_back(&id, &stored, &run, RunState::RolledBack, run.reason.clone())
                            .await?
                    }
                    (Action::Resume, _) => {
                        return refuse("only a paused or halted rollout is resumed")
                    }
                    (Action::Abort, s) if s.is_active() => {
                        self.runs
                            .roll_back(
                                &id,
                                &stored,
                                &run,
                                RunState::Aborted,
                                "aborted by an operator".into(),
                            )
                            .await?
                    }
                    (Action::Abort, _) => return refuse("it has ended already"),
                };
                Ok(pb::RolloutActionResponse {
                    rollout: Some(to_pb(&id, &next, rev)),
                    revision: rev,
                })
            },
            |mut c, r| async move {
                match action {
                    Action::Promote => c.promote_rollout(r).await,
                    Action::Pause => c.pause_rollout(r).await,
                    Action::Resume => c.resume_rollout(r).await,
                    Action::Abort => c.abort_rollout(r).await,
                }
            },
        )
        .await
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Promote,
    Pause,
    Resume,
    Abort,
}

#[tonic::async_trait]
impl pb::rollout_service_server::RolloutService for RolloutApi {
    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::StartRolloutResponse>, Status> {
        Ok(Response::new(self.start(req).await?))
    }
    async fn list_rollouts(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        Ok(Response::new(self.list(req).await?))
    }
    async fn promote_rollout(
        &self,
        req: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::RolloutActionResponse>, Status> {
        Ok(Response::new(self.act(req, Action::Promote).await?))
    }
    async fn pause_rollout(
        &self,
        req: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::RolloutActionResponse>, Status> {
        Ok(Response::new(self.act(req, Action::Pause).await?))
    }
    async fn resume_rollout(
        &self,
        req: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::RolloutActionResponse>, Status> {
        Ok(Response::new(self.act(req, Action::Resume).await?))
    }
    async fn abort_rollout(
        &self,
        req: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::RolloutActionResponse>, Status> {
        Ok(Response::new(self.act(req, Action::Abort).await?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_retried_start_gets_the_same_run_id() {
        assert_eq!(super::run_id("p", "req-1"), super::run_id("p", "req-1"));
        assert_ne!(super::run_id("p", "req-1"), super::run_id("p", "req-2"));
    }
}
