//! The controller side of the agents' upward protocol (proto/meridian/v1/agent.proto):
//! authenticate a cluster's agent by its token, claim the cluster for the
//! session through the log, turn full and delta updates into endpoint-lane
//! transactions guarded by the claim, acknowledge after commit, and renew the
//! cluster's lease while the agent is alive.

mod check;
mod session;

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use meridian_model::reported::{Claim, Lease, KIND_CLAIM, KIND_LEASE};
use meridian_proto::v1 as pb;
use meridian_store::{NodeId, ObjectKey, StateMachineStore, Txn, TxnOp, TxnOutcome};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::agent_writes::AgentWrites;
use crate::error::ApiError;
use crate::leadership::Leadership;
use crate::metrics::WriteMetrics;
use crate::request_ids;
use crate::routing::Router;
use crate::status;
use session::{Fate, Session};

pub(crate) struct AgentApi {
    writes: AgentWrites,
    sm: StateMachineStore,
    leadership: Leadership,
    router: Router,
    metrics: Arc<WriteMetrics>,
    id: NodeId,
    region: String,
    shutdown: watch::Receiver<bool>,
}

type Out = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

fn msg(m: pb::controller_message::Msg) -> pb::ControllerMessage {
    pb::ControllerMessage { msg: Some(m) }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain struct")
}

impl AgentApi {
    pub(crate) fn new(
        writes: AgentWrites,
        sm: StateMachineStore,
        leadership: Leadership,
        router: Router,
        metrics: Arc<WriteMetrics>,
        id: NodeId,
        region: String,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AgentApi {
            writes,
            sm,
            leadership,
            router,
            metrics,
            id,
            region,
            shutdown,
        }
    }

    async fn report(
        &self,
        mut input: Streaming<pb::AgentMessage>,
        caller: Option<meridian_pki::Identity>,
    ) -> Result<Out, ApiError> {
        let first = tokio::time::timeout(Duration::from_secs(10), input.message())
            .await
            .map_err(|_| ApiError::Timeout("no hello within 10s".into()))??
            .ok_or_else(|| ApiError::Invalid("stream ended before hello".into()))?;
        let Some(pb::agent_message::Msg::Hello(hello)) = first.msg else {
            return Err(ApiError::Invalid("the first message must be hello".into()));
        };
        // An agent's certificate names the one cluster it may speak for
        // (its token is still checked below, as without TLS).
        if let Some(meridian_pki::Identity::Agent { cluster }) = &caller {
            if *cluster != hello.cluster {
                return Err(ApiError::PermissionDenied(format!(
                    "cluster/{cluster} may not report for cluster {:?}: an agent's certificate names the one cluster it speaks for",
                    hello.cluster
                )));
            }
        }
        let spec = match check::authenticate(&self.sm, &hello) {
            // `clusters add` (or a new token) was acknowledged by the leader
            // and may not be applied here yet: an agent sent to a follower
            // right after it must not be refused for that.
            Err(ApiError::PermissionDenied(_)) => {
                if let Err(e) =
                    status::caught_up_with_leader(&self.leadership, &self.sm, &self.router).await
                {
                    debug!(cluster = %hello.cluster, reason = e.why(), "agent refused without a read barrier");
                }
                check::authenticate(&self.sm, &hello)?
            }
            r => r?,
        };
        let ttl = Duration::from_millis(spec.lease_ttl().as_millis());
        let lease = Lease {
            session: hello.session.clone(),
            ttl_ms: ttl.as_millis() as u64,
            on_expiry: spec.on_lease_expiry,
            expired: false,
            controller: self.id,
        };
        let claim = Claim {
            session: hello.session.clone(),
            agent: hello.agent.clone(),
            controller: self.id,
        };
        // The newest session wins: the claim is written unconditionally.
        let stream: u64 = rand::random();
        let txn = Txn {
            request_id: format!(
                "{}{}-{}-{stream:x}-claim",
                request_ids::AGENT,
                hello.cluster,
                hello.session
            ),
            ops: vec![
                TxnOp::Put {
                    key: ObjectKey::new(KIND_CLAIM, hello.cluster.clone()),
                    value: to_json(&claim),
                    expected_revision: None,
                },
                TxnOp::Put {
                    key: ObjectKey::new(KIND_LEASE, hello.cluster.clone()),
                    value: to_json(&lease),
                    expected_revision: None,
                },
            ],
        };
        let claim_rev = match self.writes.commit(txn).await? {
            TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision } => revision,
            other => return Err(ApiError::Internal(format!("claim failed: {other:?}"))),
        };
        info!(cluster = %hello.cluster, region = %hello.region, session = %hello.session, agent = %hello.agent, "agent connected");
        self.metrics.agent_sessions.fetch_add(1, Ordering::Relaxed);

        let (tx, rx) = mpsc::channel(64);
        let heartbeat = (ttl / 6).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let welcome = pb::AgentWelcome {
            controller_id: self.id,
            controller_region: self.region.clone(),
            lease_ttl_ms: ttl.as_millis() as u64,
            heartbeat_interval_ms: heartbeat.as_millis() as u64,
        };
        let _ = tx
            .send(Ok(msg(pb::controller_message::Msg::Welcome(welcome))))
            .await;
        let session = Session {
            writes: self.writes.clone(),
            sm: self.sm.clone(),
            metrics: self.metrics.clone(),
            cluster: hello.cluster.clone(),
            session: hello.session.clone(),
            stream,
            claim_rev,
            lease,
            sets: Default::default(),
            out: tx.clone(),
        };
        tokio::spawn(serve(session, input, ttl, self.shutdown.clone(), tx));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// One agent's stream, until it ends, breaks, or the node shuts down.
async fn serve(
    mut session: Session,
    mut input: Streaming<pb::AgentMessage>,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
) {
    let mut renew = tokio::time::interval(ttl / 3);
    renew.tick().await;
    let mut last_heard = Instant::now();
    let fate = loop {
        tokio::select! {
            m = input.next() => match m {
                Some(Ok(pb::AgentMessage { msg: Some(m) })) => {
                    last_heard = Instant::now();
                    let f = match m {
                        pb::agent_message::Msg::Update(u) => session.update(u).await,
                        pb::agent_message::Msg::Heartbeat(_) => Fate::Continue,
                        pb::agent_message::Msg::Hello(_) => Fate::End(Some(ApiError::Invalid("hello twice on one stream".into()))),
                    };
                    if let Fate::End(e) = f { break e; }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(ApiError::Cancelled(format!("agent stream broke: {e}"))),
                None => break None,
            },
            _ = renew.tick() => {
                // A silent agent's lease is left to expire.
                if last_heard.elapsed() < ttl / 2 {
                    if let Fate::End(e) = session.renew().await { break e; }
                }
            }
            _ = shutdown.changed() => break Some(ApiError::Unavailable("controller shutting down; reconnect to another".into())),
        }
    };
    info!(cluster = %session.cluster, session = %session.session, "agent disconnected");
    if let Some(e) = fate {
        let _ = tx.send(Err(e.into())).await;
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type ReportStream = Out;

    async fn report(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        let caller = req
            .extensions()
            .get::<crate::tls::Caller>()
            .map(|c| c.identity.clone());
        Ok(Response::new(
            AgentApi::report(self, req.into_inner(), caller).await?,
        ))
    }
}
