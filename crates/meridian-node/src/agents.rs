//! The controller side of the agents' upward protocol (proto/meridian/v1/agent.proto):
//! authenticate a cluster's agent by its token, claim the cluster for the
//! session through the log, turn full and delta updates into endpoint-lane
//! transactions guarded by the claim, acknowledge after commit, and renew the
//! cluster's lease while the agent is alive.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use meridian_model::reported::{
    endpoints_name, split_endpoints_name, Claim, Lease, ReportedEndpoint, ReportedHealth,
    KIND_CLAIM, KIND_ENDPOINTS, KIND_LEASE,
};
use meridian_model::{ClusterSpec, Kind, Object, Spec};
use meridian_proto::v1 as pb;
use meridian_store::{ObjectKey, Txn, TxnOp, TxnOutcome};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::node::Shared;

pub(crate) struct AgentApi {
    s: Arc<Shared>,
}

impl AgentApi {
    pub(crate) fn new(s: Arc<Shared>) -> Self {
        AgentApi { s }
    }
}

type Out = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

/// Endpoints of one session, by service then (address, port).
type Sets = BTreeMap<String, BTreeMap<(String, u16), ReportedEndpoint>>;

fn msg(m: pb::controller_message::Msg) -> pb::ControllerMessage {
    pb::ControllerMessage { msg: Some(m) }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain struct")
}

/// Checks one reported endpoint; the error names the field.
fn check_endpoint(path: &str, e: &pb::AgentEndpoint) -> Result<(String, ReportedEndpoint), String> {
    meridian_model::validate_name(&e.service).map_err(|r| format!("{path}.service: {r}"))?;
    if e.address.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{path}.address: {:?} is not an IP address",
            e.address
        ));
    }
    if e.port > 65535 {
        return Err(format!("{path}.port: {} is over 65535", e.port));
    }
    if e.weight > 128 {
        return Err(format!("{path}.weight: {} is over 128", e.weight));
    }
    if e.zone.len() > 63 {
        return Err(format!("{path}.zone: at most 63 characters"));
    }
    let health = match pb::EndpointHealth::try_from(e.health) {
        Ok(pb::EndpointHealth::Healthy) => ReportedHealth::Healthy,
        Ok(pb::EndpointHealth::Unhealthy) => ReportedHealth::Unhealthy,
        Ok(pb::EndpointHealth::Draining) => ReportedHealth::Draining,
        Ok(pb::EndpointHealth::Unknown) => ReportedHealth::Unknown,
        Err(_) => return Err(format!("{path}.health: unknown value {}", e.health)),
    };
    Ok((
        e.service.clone(),
        ReportedEndpoint {
            address: e.address.clone(),
            port: e.port as u16,
            zone: e.zone.clone(),
            weight: e.weight.max(1),
            health,
        },
    ))
}

/// The registered cluster, if the token matches; errors say what to do.
fn authenticate(s: &Shared, hello: &pb::AgentHello) -> Result<ClusterSpec, Status> {
    meridian_model::validate_name(&hello.cluster)
        .map_err(|r| Status::invalid_argument(format!("hello.cluster: {r}")))?;
    if hello.session.is_empty() || hello.session.len() > 128 {
        return Err(Status::invalid_argument("hello.session: 1-128 characters"));
    }
    let key = ObjectKey::new(Kind::Cluster.as_str(), hello.cluster.clone());
    let stored = s.sm.get(&key).ok_or_else(|| {
        Status::permission_denied(format!(
            "cluster {:?} is not registered; register it with `meridian clusters add {} --region {}`",
            hello.cluster, hello.cluster, hello.region
        ))
    })?;
    let spec = match Object::from_stored(&key.kind, &key.name, &stored.value) {
        Ok(Object {
            spec: Spec::Cluster(c),
            ..
        }) => c,
        _ => {
            return Err(Status::internal(format!(
                "cluster/{}: stored object does not parse",
                hello.cluster
            )))
        }
    };
    let digest = hex::encode(Sha256::digest(hello.token.as_bytes()));
    // Compare all bytes: the time taken must not tell how much matched.
    let same = digest.len() == spec.token_sha256.len()
        && digest
            .bytes()
            .zip(spec.token_sha256.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(Status::unauthenticated(format!(
            "wrong token for cluster {:?}: this agent may not write its endpoints",
            hello.cluster
        )));
    }
    if spec.region != hello.region {
        return Err(Status::invalid_argument(format!(
            "hello.region: cluster {:?} is registered in region {:?}, the agent says {:?}",
            hello.cluster, spec.region, hello.region
        )));
    }
    Ok(spec)
}

struct Session {
    s: Arc<Shared>,
    cluster: String,
    session: String,
    /// Random per stream: an agent that reconnects keeps its session but
    /// starts its versions again, and its writes must not be taken for
    /// retries of the previous stream's.
    stream: u64,
    claim_rev: u64,
    lease: Lease,
    sets: Sets,
    out: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
}

enum Fate {
    Continue,
    /// The stream ends with this status (None: ended normally).
    End(Option<Status>),
}

impl Session {
    fn claim_check(&self) -> TxnOp {
        TxnOp::Check {
            key: ObjectKey::new(KIND_CLAIM, self.cluster.clone()),
            expected_revision: self.claim_rev,
        }
    }

    fn lease_put(&self) -> TxnOp {
        TxnOp::Put {
            key: ObjectKey::new(KIND_LEASE, self.cluster.clone()),
            value: to_json(&self.lease),
            expected_revision: None,
        }
    }

    fn request_id(&self, what: &str) -> String {
        format!(
            "agent-{}-{}-{:x}-{what}",
            self.cluster, self.session, self.stream
        )
    }

    /// Commits `ops` guarded by the claim; a conflict on the claim means a
    /// newer session took the cluster over.
    async fn commit(&self, request_id: String, ops: Vec<TxnOp>) -> Result<u64, Fate> {
        let mut all = vec![self.claim_check()];
        all.extend(ops);
        match self
            .s
            .submit_agent_txn(Txn {
                request_id,
                ops: all,
            })
            .await
        {
            Ok(TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision }) => {
                Ok(revision)
            }
            Ok(TxnOutcome::Conflict(c)) if c.key.kind == KIND_CLAIM => {
                let by = self
                    .s
                    .sm
                    .get(&c.key)
                    .and_then(|o| serde_json::from_slice::<Claim>(&o.value).ok())
                    .map(|c| c.session)
                    .unwrap_or_default();
                info!(cluster = %self.cluster, session = %self.session, by = %by, "agent session superseded");
                let _ = self
                    .out
                    .send(Ok(msg(pb::controller_message::Msg::Superseded(
                        pb::AgentSuperseded { by_session: by },
                    ))))
                    .await;
                Err(Fate::End(None))
            }
            Ok(other) => Err(Fate::End(Some(Status::internal(format!(
                "unexpected outcome {other:?}"
            ))))),
            Err(st) => Err(Fate::End(Some(st))),
        }
    }

    async fn update(&mut self, u: pb::EndpointUpdate) -> Fate {
        // Validate the whole update first: a NACK applies nothing of it.
        let mut upserts = Vec::new();
        for (i, e) in u.upserts.iter().enumerate() {
            match check_endpoint(&format!("upserts[{i}]"), e) {
                Ok(v) => upserts.push(v),
                Err(reason) => return self.nack(u.version, reason).await,
            }
        }
        let mut removals = Vec::new();
        for (i, e) in u.removals.iter().enumerate() {
            if let Err(r) = meridian_model::validate_name(&e.service) {
                return self
                    .nack(u.version, format!("removals[{i}].service: {r}"))
                    .await;
            }
            removals.push((e.service.clone(), (e.address.clone(), e.port as u16)));
        }
        // The new contents of each service the update touches (None: no
        // endpoints left). Only those services are copied and rewritten: a
        // delta costs what it changes, not the size of the cluster.
        let mut changed: BTreeMap<String, Option<BTreeMap<(String, u16), ReportedEndpoint>>> =
            BTreeMap::new();
        if u.replace {
            let mut fresh = Sets::new();
            for (svc, ep) in upserts {
                fresh
                    .entry(svc)
                    .or_default()
                    .insert((ep.address.clone(), ep.port), ep);
            }
            for (svc, k) in removals {
                if let Some(set) = fresh.get_mut(&svc) {
                    set.remove(&k);
                }
            }
            // A replace also deletes what the store holds for this cluster
            // that the new set does not have, even from an earlier session:
            // nothing stale lingers.
            let prefix = format!("{}.", self.cluster);
            for (key, _) in self.s.sm.list(Some(KIND_ENDPOINTS)) {
                if key.name.starts_with(&prefix) {
                    if let Some((_, svc)) = split_endpoints_name(&key.name) {
                        changed.insert(svc.to_string(), None);
                    }
                }
            }
            for (svc, set) in fresh {
                changed.insert(svc, (!set.is_empty()).then_some(set));
            }
        } else {
            for (svc, ep) in upserts {
                let set = changed
                    .entry(svc.clone())
                    .or_insert_with(|| Some(self.sets.get(&svc).cloned().unwrap_or_default()))
                    .get_or_insert_with(BTreeMap::new);
                set.insert((ep.address.clone(), ep.port), ep);
            }
            for (svc, k) in removals {
                let entry = changed
                    .entry(svc.clone())
                    .or_insert_with(|| self.sets.get(&svc).cloned());
                if let Some(set) = entry {
                    set.remove(&k);
                }
            }
            changed.retain(|svc, new| {
                if new.as_ref().is_some_and(|set| set.is_empty()) {
                    *new = None;
                }
                // Unchanged services are not rewritten.
                new.as_ref() != self.sets.get(svc)
            });
        }
        let mut ops = Vec::new();
        for (svc, set) in &changed {
            let key = ObjectKey::new(KIND_ENDPOINTS, endpoints_name(&self.cluster, svc));
            match set {
                Some(set) => {
                    let list: Vec<&ReportedEndpoint> = set.values().collect();
                    ops.push(TxnOp::Put {
                        key,
                        value: to_json(&list),
                        expected_revision: None,
                    });
                }
                None => ops.push(TxnOp::Delete {
                    key,
                    expected_revision: None,
                }),
            }
        }
        // Every update renews the lease too.
        self.lease.expired = false;
        ops.push(self.lease_put());
        match self
            .commit(self.request_id(&format!("v{}", u.version)), ops)
            .await
        {
            Ok(revision) => {
                if u.replace {
                    self.sets.clear();
                }
                for (svc, set) in changed {
                    match set {
                        Some(set) => {
                            self.sets.insert(svc, set);
                        }
                        None => {
                            self.sets.remove(&svc);
                        }
                    }
                }
                self.s
                    .write_metrics
                    .agent_updates
                    .fetch_add(1, Ordering::Relaxed);
                let ack = pb::AgentAck {
                    version: u.version,
                    revision,
                };
                if self
                    .out
                    .send(Ok(msg(pb::controller_message::Msg::Ack(ack))))
                    .await
                    .is_err()
                {
                    return Fate::End(None);
                }
                Fate::Continue
            }
            Err(f) => f,
        }
    }

    async fn nack(&self, version: u64, reason: String) -> Fate {
        warn!(cluster = %self.cluster, version, reason = %reason, "endpoint update refused");
        self.s
            .write_metrics
            .agent_nacks
            .fetch_add(1, Ordering::Relaxed);
        let nack = pb::AgentNack { version, reason };
        if self
            .out
            .send(Ok(msg(pb::controller_message::Msg::Nack(nack))))
            .await
            .is_err()
        {
            return Fate::End(None);
        }
        Fate::Continue
    }

    async fn renew(&mut self) -> Fate {
        self.lease.expired = false;
        let rid = format!(
            "{}-renew-{:x}",
            self.request_id("lease"),
            rand::random::<u64>()
        );
        match self.commit(rid, vec![self.lease_put()]).await {
            Ok(_) => Fate::Continue,
            Err(f) => f,
        }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentApi {
    type ReportStream = Out;

    async fn report(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Out>, Status> {
        let mut input = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), input.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??
            .ok_or_else(|| Status::invalid_argument("stream ended before hello"))?;
        let Some(pb::agent_message::Msg::Hello(hello)) = first.msg else {
            return Err(Status::invalid_argument("the first message must be hello"));
        };
        let spec = authenticate(&self.s, &hello)?;
        let ttl = Duration::from_millis(spec.lease_ttl().as_millis());
        let lease = Lease {
            session: hello.session.clone(),
            ttl_ms: ttl.as_millis() as u64,
            on_expiry: spec.on_lease_expiry,
            expired: false,
            controller: self.s.id,
        };
        let claim = Claim {
            session: hello.session.clone(),
            agent: hello.agent.clone(),
            controller: self.s.id,
        };
        // The newest session wins: the claim is written unconditionally.
        let stream: u64 = rand::random();
        let txn = Txn {
            request_id: format!("agent-{}-{}-{stream:x}-claim", hello.cluster, hello.session),
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
        let claim_rev = match self.s.submit_agent_txn(txn).await? {
            TxnOutcome::Committed { revision } | TxnOutcome::Duplicate { revision } => revision,
            other => return Err(Status::internal(format!("claim failed: {other:?}"))),
        };
        info!(cluster = %hello.cluster, region = %hello.region, session = %hello.session, agent = %hello.agent, "agent connected");
        self.s
            .write_metrics
            .agent_sessions
            .fetch_add(1, Ordering::Relaxed);

        let (tx, rx) = mpsc::channel(64);
        let heartbeat = (ttl / 6).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let welcome = pb::AgentWelcome {
            controller_id: self.s.id,
            controller_region: self.s.info.region.clone(),
            lease_ttl_ms: ttl.as_millis() as u64,
            heartbeat_interval_ms: heartbeat.as_millis() as u64,
        };
        let _ = tx
            .send(Ok(msg(pb::controller_message::Msg::Welcome(welcome))))
            .await;
        let mut session = Session {
            s: self.s.clone(),
            cluster: hello.cluster.clone(),
            session: hello.session.clone(),
            stream,
            claim_rev,
            lease,
            sets: Sets::new(),
            out: tx.clone(),
        };
        let mut shutdown = self.s.shutdown.clone();
        tokio::spawn(async move {
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
                                pb::agent_message::Msg::Hello(_) => Fate::End(Some(Status::invalid_argument("hello twice on one stream"))),
                            };
                            if let Fate::End(st) = f { break st; }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Some(Status::cancelled(format!("agent stream broke: {e}"))),
                        None => break None,
                    },
                    _ = renew.tick() => {
                        // A silent agent's lease is left to expire.
                        if last_heard.elapsed() < ttl / 2 {
                            if let Fate::End(st) = session.renew().await { break st; }
                        }
                    }
                    _ = shutdown.changed() => break Some(Status::unavailable("controller shutting down; reconnect to another")),
                }
            };
            info!(cluster = %session.cluster, session = %session.session, "agent disconnected");
            if let Some(st) = fate {
                let _ = tx.send(Err(st)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
