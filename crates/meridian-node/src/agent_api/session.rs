//! One agent's stream: its endpoint sets, turned into endpoint-lane writes
//! guarded by the cluster's claim, and its lease renewals.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use meridian_model::reported::{
    endpoints_name, split_endpoints_name, Claim, Lease, ReportedEndpoint, KIND_CLAIM,
    KIND_ENDPOINTS, KIND_LEASE,
};
use meridian_proto::v1 as pb;
use meridian_store::{ObjectKey, StateMachineStore, Txn, TxnOp, TxnOutcome};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::check::check_endpoint;
use super::{msg, to_json};
use crate::agent_writes::AgentWrites;
use crate::error::ApiError;
use crate::metrics::WriteMetrics;
use crate::request_ids;

/// One service's endpoints, by (address, port).
type Set = BTreeMap<(String, u16), ReportedEndpoint>;
/// Endpoints of one session, by service.
type Sets = BTreeMap<String, Set>;

pub(super) struct Session {
    pub writes: AgentWrites,
    pub sm: StateMachineStore,
    pub metrics: Arc<WriteMetrics>,
    pub cluster: String,
    pub session: String,
    /// Random per stream: an agent that reconnects keeps its session but
    /// starts its versions again, and its writes must not be taken for
    /// retries of the previous stream's.
    pub stream: u64,
    pub claim_rev: u64,
    pub lease: Lease,
    pub sets: Sets,
    pub out: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
}

pub(super) enum Fate {
    Continue,
    /// The stream ends with this error (None: ended normally).
    End(Option<ApiError>),
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
            "{}{}-{}-{:x}-{what}",
            request_ids::AGENT,
            self.cluster,
            self.session,
            self.stream
        )
    }

    /// Commits `ops` guarded by the claim; a conflict on the claim means a
    /// newer session took the cluster over.
    async fn commit(&self, request_id: String, ops: Vec<TxnOp>) -> Result<u64, Fate> {
        let mut all = vec![self.claim_check()];
        all.extend(ops);
        match self
            .writes
            .commit(Txn {
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
            Ok(other) => Err(Fate::End(Some(ApiError::Internal(format!(
                "unexpected outcome {other:?}"
            ))))),
            Err(e) => Err(Fate::End(Some(e))),
        }
    }

    pub(super) async fn update(&mut self, u: pb::EndpointUpdate) -> Fate {
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
            // Truncated, 70000 would remove port 4464.
            let Ok(port) = u16::try_from(e.port) else {
                return self
                    .nack(
                        u.version,
                        format!("removals[{i}].port: {} is over 65535", e.port),
                    )
                    .await;
            };
            removals.push((e.service.clone(), (e.address.clone(), port)));
        }
        // The new contents of each service the update touches (None: no
        // endpoints left). Only those services are copied and rewritten: a
        // delta costs what it changes, not the size of the cluster.
        let mut changed: BTreeMap<String, Option<Set>> = BTreeMap::new();
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
            for (key, _) in self.sm.list(Some(KIND_ENDPOINTS)) {
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
                self.metrics.agent_updates.fetch_add(1, Ordering::Relaxed);
                let ack = pb::AgentAck {
                    version: u.version,
                    revision,
                };
                self.tell(pb::controller_message::Msg::Ack(ack)).await
            }
            Err(f) => f,
        }
    }

    async fn nack(&self, version: u64, reason: String) -> Fate {
        warn!(cluster = %self.cluster, version, reason = %reason, "endpoint update refused");
        self.metrics.agent_nacks.fetch_add(1, Ordering::Relaxed);
        let nack = pb::AgentNack { version, reason };
        self.tell(pb::controller_message::Msg::Nack(nack)).await
    }

    /// Sends the agent a message; a stream the agent closed ends the session.
    async fn tell(&self, m: pb::controller_message::Msg) -> Fate {
        match self.out.send(Ok(msg(m))).await {
            Ok(()) => Fate::Continue,
            Err(_) => Fate::End(None),
        }
    }

    pub(super) async fn renew(&mut self) -> Fate {
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
