//! The adapter between the replicated store and the xDS server: implements
//! the xDS crate's `SnapshotSource` by translating the local replica's config
//! for each viewer, once per store revision, shared by every stream of that
//! viewer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::google::protobuf::Any;
use meridian_model::reported::{
    endpoint_set, split_endpoints_name, Lease, ReportedEndpoint, KIND_CLAIM, KIND_ENDPOINTS,
    KIND_LEASE,
};
use meridian_model::{ConfigSet, EndpointSet, Object};
use meridian_store::StateMachineStore;
use meridian_translate::{translate, TranslateOptions};
use meridian_xds::{SnapshotSource, ViewSnapshot, Viewer};
use tokio::sync::watch;
use tracing::{error, warn};

pub(crate) struct StoreSource {
    sm: StateMachineStore,
    changes: watch::Receiver<u64>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Revision the config below was built from; `None` before the first build.
    revision: Option<u64>,
    config: Arc<ConfigSet>,
    endpoints: Arc<EndpointSet>,
    views: HashMap<Viewer, Arc<ViewSnapshot>>,
    committed_at_ms: u64,
    /// Last good view per viewer, served when a translation fails.
    last_good: HashMap<Viewer, Arc<ViewSnapshot>>,
}

impl StoreSource {
    pub(crate) fn new(sm: StateMachineStore) -> StoreSource {
        let changes = sm.applied_watch();
        StoreSource {
            sm,
            changes,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn rebuild(&self, cache: &mut Cache) {
        let (objects, revision) = self.sm.list_at(None);
        // The commit time of this revision: the leader's clock, carried in
        // the entry, so every replica reports the same start for the
        // push-to-ACK latency.
        cache.committed_at_ms = objects
            .iter()
            .filter(|(_, o)| o.revision == revision)
            .map(|(_, o)| o.updated_at_ms)
            .max()
            .unwrap_or(0);
        let mut config = ConfigSet::default();
        let mut leases = BTreeMap::new();
        let mut reports = BTreeMap::new();
        for (key, obj) in objects {
            match key.kind.as_str() {
                KIND_LEASE => match serde_json::from_slice::<Lease>(&obj.value) {
                    Ok(l) => {
                        leases.insert(key.name, l);
                    }
                    Err(e) => warn!(object = %key, error = %e, "stored lease does not parse"),
                },
                KIND_ENDPOINTS => {
                    let parsed = serde_json::from_slice::<Vec<ReportedEndpoint>>(&obj.value);
                    match (split_endpoints_name(&key.name), parsed) {
                        (Some((cluster, service)), Ok(eps)) => {
                            reports.insert((cluster.to_string(), service.to_string()), eps);
                        }
                        _ => warn!(object = %key, "stored endpoints do not parse"),
                    }
                }
                KIND_CLAIM => {}
                _ => match Object::from_stored(&key.kind, &key.name, &obj.value) {
                    Ok(o) => {
                        config.insert(o);
                    }
                    // Only objects written by another build can fail here:
                    // the leader validated everything else.
                    Err(e) => {
                        warn!(object = %key, error = %e, "stored object does not parse; not served")
                    }
                },
            }
        }
        let endpoints = endpoint_set(&config, &leases, &reports);
        cache.revision = Some(revision);
        cache.config = Arc::new(config);
        cache.endpoints = Arc::new(endpoints);
        cache.views.clear();
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
        let view = match translate(
            &cache.config,
            &cache.endpoints,
            &tv,
            &TranslateOptions::default(),
        ) {
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
}
