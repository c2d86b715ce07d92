//! Long because its tests build real store states (change catch-up,
//! rollouts' per-viewer variants) next to the cache they check.
//!
//! The adapter between the replicated store and the xDS server: implements
//! the xDS crate's `SnapshotSource` by translating the local replica's config
//! for each viewer, once per store revision, shared by every stream of that
//! viewer. It serves only while the readiness task (`status.rs`) finds this
//! replica caught up, through the [`XdsGate`] they share.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::google::protobuf::Any;
use meridian_model::reported::{
    endpoint_set, split_endpoints_name, Lease, ReportedEndpoint, KIND_CLAIM, KIND_ENDPOINTS,
    KIND_LEASE,
};
use meridian_model::rollout_run::{RolloutRun, KIND_ROLLOUT_RUN};
use meridian_model::{ConfigSet, EndpointSet, Object};
use meridian_store::{ObjectKey, StateMachineStore};
use meridian_translate::{translate, TranslateOptions};
use meridian_xds::{NotReady, SnapshotSource, ViewSnapshot, Viewer};
use tokio::sync::watch;
use tracing::{error, warn};

pub(crate) struct StoreSource {
    sm: StateMachineStore,
    changes: watch::Receiver<u64>,
    cache: Mutex<Cache>,
    gate: XdsGate,
}

/// Whether this replica may take new xDS streams, as the readiness task
/// last found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum XdsReadiness {
    /// Not a member, no read barrier passed yet, or behind the leader.
    NotReady(String),
    /// Caught up with the leader's commit as of a read barrier.
    Ready,
    /// No leader reachable for longer than the configured bound: the state
    /// this replica persisted is served, and said so (the reason).
    Persisted(String),
}

/// The readiness shared by the task that finds it and the source that
/// obeys it. Starts not ready: a replica serves nothing before it has
/// checked.
#[derive(Clone)]
pub(crate) struct XdsGate {
    state: Arc<Mutex<XdsReadiness>>,
}

impl Default for XdsGate {
    fn default() -> Self {
        XdsGate {
            state: Arc::new(Mutex::new(XdsReadiness::NotReady(
                "readiness not checked yet".into(),
            ))),
        }
    }
}

impl XdsGate {
    pub(crate) fn get(&self) -> XdsReadiness {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The previous state.
    pub(crate) fn set(&self, next: XdsReadiness) -> XdsReadiness {
        std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            next,
        )
    }
}

#[derive(Default)]
struct Cache {
    /// Revision the state below was built from; `None` before the first build.
    revision: Option<u64>,
    /// The store's objects, parsed, kept between rebuilds so that a rebuild
    /// re-reads only the objects changed since (agents' churn touches a few
    /// endpoint objects among thousands).
    parsed: Parsed,
    config: Arc<ConfigSet>,
    endpoints: Arc<EndpointSet>,
    views: HashMap<Viewer, Arc<ViewSnapshot>>,
    /// Runs that hold objects (progressing, paused, halted), by id.
    runs: Arc<BTreeMap<String, RolloutRun>>,
    /// The config as served to viewers that some runs have not reached yet,
    /// keyed by those runs' ids: built once per revision and shared by
    /// every viewer in the same position.
    variants: HashMap<Vec<String>, Arc<ConfigSet>>,
    committed_at_ms: u64,
    /// Last good view per viewer, served when a translation fails.
    last_good: HashMap<Viewer, Arc<ViewSnapshot>>,
    /// Rebuilds that read the whole store (the rest caught up on changes).
    full_reads: u64,
}

#[derive(Default)]
struct Parsed {
    config: ConfigSet,
    leases: BTreeMap<String, Lease>,
    reports: BTreeMap<(String, String), Vec<ReportedEndpoint>>,
    runs: BTreeMap<String, RolloutRun>,
    /// Config objects are cloned into a new `ConfigSet` only when one of
    /// them changed; endpoint churn reuses the last one.
    config_changed: bool,
}

impl Parsed {
    /// Applies one stored object (`None`: deleted).
    fn apply(&mut self, key: &ObjectKey, value: Option<&[u8]>) {
        match key.kind.as_str() {
            KIND_LEASE => {
                self.leases.remove(&key.name);
                if let Some(v) = value {
                    match serde_json::from_slice::<Lease>(v) {
                        Ok(l) => {
                            self.leases.insert(key.name.clone(), l);
                        }
                        Err(e) => warn!(object = %key, error = %e, "stored lease does not parse"),
                    }
                }
            }
            KIND_ENDPOINTS => {
                let Some((cluster, service)) = split_endpoints_name(&key.name) else {
                    warn!(object = %key, "stored endpoints name does not parse");
                    return;
                };
                let id = (cluster.to_string(), service.to_string());
                self.reports.remove(&id);
                if let Some(v) = value {
                    match serde_json::from_slice::<Vec<ReportedEndpoint>>(v) {
                        Ok(eps) => {
                            self.reports.insert(id, eps);
                        }
                        Err(e) => warn!(object = %key, error = %e, "stored endpoints do not parse"),
                    }
                }
            }
            KIND_CLAIM => {}
            KIND_ROLLOUT_RUN => {
                self.config_changed = true;
                self.runs.remove(&key.name);
                if let Some(v) = value {
                    match RolloutRun::from_bytes(v) {
                        Ok(r) => {
                            self.runs.insert(key.name.clone(), r);
                        }
                        Err(e) => {
                            warn!(object = %key, error = %e, "stored rollout run does not parse")
                        }
                    }
                }
            }
            kind => {
                self.config_changed = true;
                if let Ok(k) = kind.parse() {
                    self.config.remove_unchecked(k, &key.name);
                }
                let Some(v) = value else { return };
                match Object::from_stored(kind, &key.name, v) {
                    Ok(o) => {
                        self.config.insert(o);
                    }
                    // Only objects written by another build can fail here:
                    // the leader validated everything else.
                    Err(e) => {
                        warn!(object = %key, error = %e, "stored object does not parse; not served")
                    }
                }
            }
        }
    }
}

impl StoreSource {
    pub(crate) fn new(sm: StateMachineStore, gate: XdsGate) -> StoreSource {
        let changes = sm.applied_watch();
        StoreSource {
            sm,
            changes,
            cache: Mutex::new(Cache::default()),
            gate,
        }
    }

    fn rebuild(&self, cache: &mut Cache) {
        // Catch up from the last build when the store's history reaches
        // back to it; otherwise (first build, or a long gap) read everything.
        let caught_up = cache
            .revision
            .and_then(|from| self.sm.changes_since(from).ok());
        let revision = match caught_up {
            Some((changes, revision, committed_at_ms)) => {
                for (key, obj) in &changes {
                    cache
                        .parsed
                        .apply(key, obj.as_ref().map(|o| o.value.as_slice()));
                }
                // The commit time of this revision: the leader's clock,
                // carried in the entry, so every replica reports the same
                // start for the push-to-ACK latency.
                cache.committed_at_ms = committed_at_ms;
                revision
            }
            None => {
                cache.full_reads += 1;
                let (objects, revision) = self.sm.list_at(None);
                cache.committed_at_ms = objects
                    .iter()
                    .filter(|(_, o)| o.revision == revision)
                    .map(|(_, o)| o.updated_at_ms)
                    .max()
                    .unwrap_or(0);
                cache.parsed = Parsed::default();
                for (key, obj) in &objects {
                    cache.parsed.apply(key, Some(&obj.value));
                }
                cache.parsed.config_changed = true;
                revision
            }
        };
        let p = &mut cache.parsed;
        if std::mem::take(&mut p.config_changed) {
            cache.config = Arc::new(p.config.clone());
            let active = p.runs.iter().filter(|(_, r)| r.state.is_active());
            cache.runs = Arc::new(active.map(|(k, r)| (k.clone(), r.clone())).collect());
        }
        cache.variants.clear();
        cache.endpoints = Arc::new(endpoint_set(&cache.config, &p.leases, &p.reports));
        cache.revision = Some(revision);
        cache.views.clear();
    }
}

impl StoreSource {
    /// The config `viewer` is served: the stored one, with the objects of
    /// every rollout that has not reached the viewer's step replaced by
    /// their previous values (removed where they did not exist).
    fn config_for(&self, cache: &mut Cache, viewer: &Viewer) -> Arc<ConfigSet> {
        let behind: Vec<String> = cache
            .runs
            .iter()
            .filter(|(_, r)| !r.serves_new(&viewer.region, &viewer.proxy_group))
            .map(|(id, _)| id.clone())
            .collect();
        if behind.is_empty() {
            return cache.config.clone();
        }
        if let Some(c) = cache.variants.get(&behind) {
            return c.clone();
        }
        let mut set = (*cache.config).clone();
        for id in &behind {
            for o in &cache.runs[id].objects {
                set.remove_unchecked(o.kind, &o.name);
                match o.previous_object() {
                    Ok(Some(prev)) => {
                        set.insert(prev);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(rollout = %id, object = %format!("{}/{}", o.kind, o.name), error = %e, "previous value does not parse; serving without it")
                    }
                }
            }
        }
        let set = Arc::new(set);
        cache.variants.insert(behind, set.clone());
        set
    }
}

impl SnapshotSource for StoreSource {
    fn snapshot(&self, viewer: &Viewer) -> Arc<ViewSnapshot> {
        let revision = self.sm.revision();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.revision != Some(revision) {
            self.rebuild(&mut cache);
        }
        if let Some(v) = cache.views.get(viewer) {
            return v.clone();
        }
        let tv = meridian_translate::Viewer {
            region: viewer.region.clone(),
            proxy_group: Some(viewer.proxy_group.clone()),
        };
        let config = self.config_for(&mut cache, viewer);
        let view = match translate(&config, &cache.endpoints, &tv, &TranslateOptions::default()) {
            Ok(resources) => {
                let mut snap = ViewSnapshot {
                    revision: cache.revision.unwrap_or(0),
                    committed_at_ms: cache.committed_at_ms,
                    ..Default::default()
                };
                for (type_url, by_name) in &resources.by_type {
                    for (name, r) in by_name {
                        snap.insert(
                            name.clone(),
                            Any {
                                type_url: type_url.to_string(),
                                value: r.encoded.clone(),
                            },
                        );
                    }
                }
                let snap = Arc::new(snap);
                cache.last_good.insert(viewer.clone(), snap.clone());
                snap
            }
            Err(e) => {
                error!(region = %viewer.region, group = %viewer.proxy_group, error = %e, "translation failed; serving the last good config");
                cache.last_good.get(viewer).cloned().unwrap_or_default()
            }
        };
        cache.views.insert(viewer.clone(), view.clone());
        view
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Operators' config batches move `config_seq`; agents' endpoint
    /// reports and lease expiries do not.
    fn config_generation(&self) -> u64 {
        self.sm.config_seq()
    }

    /// Ready when the replica is (see [`XdsGate`]) and the viewer's config
    /// translated at least once: an untranslatable config with no last
    /// good view would be served as an empty one.
    fn ready(&self, viewer: &Viewer) -> Result<(), NotReady> {
        if let XdsReadiness::NotReady(why) = self.gate.get() {
            return Err(NotReady::new(why));
        }
        self.snapshot(viewer);
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.last_good.contains_key(viewer) {
            Ok(())
        } else {
            Err(NotReady::new(format!(
                "the config for region {} and proxy group {} does not translate, and there is no earlier one to serve",
                viewer.region, viewer.proxy_group
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_model::reported::{endpoints_name, ReportedHealth};
    use meridian_model::LeaseExpiry;
    use meridian_store::{Batch, Request, Txn, TxnOp};
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    use super::*;

    fn put(kind: &str, name: &str, value: serde_json::Value) -> TxnOp {
        TxnOp::Put {
            key: ObjectKey::new(kind, name),
            value: serde_json::to_vec(&value).unwrap(),
            expected_revision: None,
        }
    }

    fn del(kind: &str, name: &str) -> TxnOp {
        TxnOp::Delete {
            key: ObjectKey::new(kind, name),
            expected_revision: None,
        }
    }

    fn eps(addrs: &[&str]) -> serde_json::Value {
        let list: Vec<ReportedEndpoint> = addrs
            .iter()
            .map(|a| ReportedEndpoint {
                address: a.to_string(),
                port: 0,
                zone: String::new(),
                weight: 1,
                health: ReportedHealth::Healthy,
            })
            .collect();
        serde_json::to_value(list).unwrap()
    }

    async fn apply(sm: &mut StateMachineStore, index: u64, config: bool, ops: Vec<TxnOp>) {
        let req = Request::Batch(Batch {
            base_config_seq: config.then(|| sm.config_seq()),
            proposed_at_ms: 1000 + index,
            txns: vec![Txn {
                request_id: String::new(),
                ops,
            }],
        });
        let entry = openraft::Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(req),
        };
        sm.apply([entry]).await.unwrap();
    }

    fn view_of(src: &StoreSource) -> Vec<(String, String, String)> {
        let viewer = Viewer {
            region: "us-east".to_string(),
            proxy_group: "default".to_string(),
        };
        let snap = src.snapshot(&viewer);
        snap.by_type
            .iter()
            .flat_map(|(t, rs)| {
                rs.values()
                    .map(move |r| (t.clone(), r.name.to_string(), r.version.clone()))
            })
            .collect()
    }

    /// A source that caught up change by change serves exactly what one
    /// that read the whole store serves.
    #[tokio::test]
    async fn catching_up_from_changes_equals_reading_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(&dir.path().join("snapshots"))
            .await
            .unwrap();
        let lease = |expired: bool| {
            serde_json::to_value(Lease {
                session: "s1".into(),
                ttl_ms: 30_000,
                on_expiry: LeaseExpiry::Drop,
                expired,
                controller: 1,
            })
            .unwrap()
        };
        apply(
            &mut sm,
            1,
            true,
            vec![
                put(
                    "cluster",
                    "c1",
                    serde_json::json!({"region": "us-east", "tokenSha256": "00"}),
                ),
                put("service", "web", serde_json::json!({"port": 8080})),
                put("service", "api", serde_json::json!({"port": 9090})),
            ],
        )
        .await;
        apply(
            &mut sm,
            2,
            false,
            vec![
                put(KIND_LEASE, "c1", lease(false)),
                put(
                    KIND_ENDPOINTS,
                    &endpoints_name("c1", "web"),
                    eps(&["10.0.0.1", "10.0.0.2"]),
                ),
            ],
        )
        .await;
        let live = StoreSource::new(sm.clone(), XdsGate::default());
        let first = view_of(&live);
        assert!(first.iter().any(|(_, n, _)| n == "web"));
        let steps: Vec<(bool, Vec<TxnOp>)> = vec![
            // Endpoint churn only.
            (
                false,
                vec![put(
                    KIND_ENDPOINTS,
                    &endpoints_name("c1", "web"),
                    eps(&["10.0.0.3"]),
                )],
            ),
            (
                false,
                vec![put(
                    KIND_ENDPOINTS,
                    &endpoints_name("c1", "api"),
                    eps(&["10.0.1.1"]),
                )],
            ),
            // A config change, a delete, a lease expiry, a config delete.
            (
                true,
                vec![put("service", "web", serde_json::json!({"port": 8081}))],
            ),
            (
                false,
                vec![del(KIND_ENDPOINTS, &endpoints_name("c1", "api"))],
            ),
            (false, vec![put(KIND_LEASE, "c1", lease(true))]),
            (true, vec![del("service", "api")]),
        ];
        let mut prev = first;
        for (i, (config, ops)) in steps.into_iter().enumerate() {
            apply(&mut sm, 3 + i as u64, config, ops).await;
            let caught_up = view_of(&live);
            let fresh = view_of(&StoreSource::new(sm.clone(), XdsGate::default()));
            assert_eq!(caught_up, fresh, "step {i}");
            assert_ne!(caught_up, prev, "step {i} changed what Envoys get");
            prev = caught_up;
        }
        let full_reads = live.cache.lock().unwrap().full_reads;
        assert_eq!(full_reads, 1, "only the first build reads everything");
    }
    fn listener_names(src: &StoreSource, region: &str) -> Vec<String> {
        let viewer = Viewer {
            region: region.to_string(),
            proxy_group: "default".to_string(),
        };
        let snap = src.snapshot(&viewer);
        snap.by_type
            .iter()
            .filter(|(t, _)| t.ends_with("Listener"))
            .flat_map(|(_, rs)| rs.values().map(|r| r.name.to_string()))
            .collect()
    }

    /// A viewer a rollout has reached is served the stored config; the
    /// others the rollout's objects at their previous values (absent ones
    /// removed); once the run ends, everyone gets what is stored.
    #[tokio::test]
    async fn viewers_not_reached_by_a_rollout_get_the_previous_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(&dir.path().join("snapshots"))
            .await
            .unwrap();
        let route = serde_json::json!({"hosts": ["*"], "rules": [{"directResponse": {"status": 200, "body": "v1"}}]});
        let listener = |port: u16| serde_json::json!({"address": "127.0.0.1", "port": port, "routes": ["web"]});
        apply(
            &mut sm,
            1,
            true,
            vec![
                put("route", "web", route.clone()),
                put("listener", "old", listener(8001)),
            ],
        )
        .await;
        let run = |state: &str| {
            serde_json::json!({
                "policy": "regions",
                "spec": {"steps": [{"regions": ["us-east"]}, {"regions": ["eu-west"]}]},
                "objects": [
                    {"kind": "listener", "name": "old", "previous": listener(8001)},
                    {"kind": "listener", "name": "new"},
                ],
                "step": 0, "state": state,
                "startedAtMs": 1, "stepStartedAtMs": 1, "updatedAtMs": 1,
            })
        };
        apply(
            &mut sm,
            2,
            true,
            vec![
                put("listener", "old", listener(8002)),
                put("listener", "new", listener(8003)),
                put(KIND_ROLLOUT_RUN, "regions-1", run("progressing")),
            ],
        )
        .await;
        let src = StoreSource::new(sm.clone(), XdsGate::default());
        let reached = listener_names(&src, "us-east");
        let behind = listener_names(&src, "eu-west");
        assert!(reached.iter().any(|n| n.contains("new")), "{reached:?}");
        assert!(!behind.iter().any(|n| n.contains("new")), "{behind:?}");
        let port_of = |region: &str| {
            let viewer = Viewer {
                region: region.into(),
                proxy_group: "default".into(),
            };
            let snap = src.snapshot(&viewer);
            let (_, rs) = snap
                .by_type
                .iter()
                .find(|(t, _)| t.ends_with("Listener"))
                .unwrap();
            let r = rs.values().find(|r| r.name.contains("old")).unwrap();
            format!("{:?}", r.resource.value)
        };
        assert_ne!(
            port_of("us-east"),
            port_of("eu-west"),
            "both served the same listener/old"
        );
        assert_eq!(
            port_of("eu-west"),
            port_of("ap-south"),
            "viewers behind share one variant"
        );
        assert_eq!(src.cache.lock().unwrap().variants.len(), 1);
        apply(
            &mut sm,
            3,
            true,
            vec![put(KIND_ROLLOUT_RUN, "regions-1", run("complete"))],
        )
        .await;
        assert!(listener_names(&src, "eu-west")
            .iter()
            .any(|n| n.contains("new")));
    }
}

#[cfg(test)]
mod readiness_tests {
    use super::*;

    fn viewer() -> Viewer {
        Viewer {
            region: "us-east".to_string(),
            proxy_group: "default".to_string(),
        }
    }

    /// The source follows the gate: refused until the readiness task finds
    /// the replica caught up (or serving its persisted state), and the
    /// refusal carries the task's reason.
    #[tokio::test]
    async fn the_source_is_ready_only_when_the_gate_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(&dir.path().join("snapshots"))
            .await
            .unwrap();
        let gate = XdsGate::default();
        let src = StoreSource::new(sm, gate.clone());
        assert!(src.ready(&viewer()).is_err(), "not ready before any check");
        gate.set(XdsReadiness::NotReady(
            "applied revision 3 is behind the leader's 9".into(),
        ));
        let why = src.ready(&viewer()).unwrap_err();
        assert!(why.reason.contains("behind the leader"), "{why}");
        gate.set(XdsReadiness::Ready);
        assert_eq!(src.ready(&viewer()), Ok(()));
        gate.set(XdsReadiness::Persisted("no leader for 31 s".into()));
        assert_eq!(src.ready(&viewer()), Ok(()));
    }
}
