use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;

use super::{NotReady, SnapshotSource, ViewSnapshot, Viewer};

/// An in-memory [`SnapshotSource`], settable from tests and benchmarks.
///
/// Every viewer sees the default view unless a view was set for it. Each
/// change bumps the revision and wakes the server.
pub struct MemorySource {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    /// `Some(reason)` while the source says it cannot serve.
    not_ready: Mutex<Option<String>>,
}

struct State {
    revision: u64,
    default: Arc<ViewSnapshot>,
    views: HashMap<Viewer, Arc<ViewSnapshot>>,
}

impl Default for MemorySource {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySource {
    pub fn new() -> MemorySource {
        let (changes, _) = watch::channel(0);
        MemorySource {
            state: Mutex::new(State {
                revision: 0,
                default: Arc::new(ViewSnapshot::default()),
                views: HashMap::new(),
            }),
            changes,
            not_ready: Mutex::new(None),
        }
    }

    /// From now on the source refuses new streams with `reason`, as a
    /// replica that has not caught up does.
    pub fn set_not_ready(&self, reason: &str) {
        *self.not_ready.lock().expect("memory source lock") = Some(reason.to_string());
    }

    /// The source serves again.
    pub fn set_ready(&self) {
        *self.not_ready.lock().expect("memory source lock") = None;
    }

    /// Edits the default view as one change (one revision, one notification).
    pub fn update(&self, edit: impl FnOnce(&mut ViewSnapshot)) {
        self.edit(None, edit)
    }

    /// Edits the view of one viewer as one change; it starts as a copy of the
    /// default view the first time.
    pub fn update_view(&self, viewer: &Viewer, edit: impl FnOnce(&mut ViewSnapshot)) {
        self.edit(Some(viewer), edit)
    }

    /// Adds or replaces one resource in the default view.
    pub fn upsert(&self, name: &str, resource: Any) {
        self.update(|v| v.insert(name, resource));
    }

    /// Removes one resource from the default view.
    pub fn remove(&self, type_url: &str, name: &str) {
        self.update(|v| {
            if let Some(r) = v.by_type.get_mut(type_url) {
                r.remove(name);
            }
        });
    }

    /// Bumps the revision without changing content (a store write that does
    /// not touch this config).
    pub fn touch(&self) {
        self.update(|_| {});
    }

    pub fn revision(&self) -> u64 {
        self.state.lock().expect("memory source lock").revision
    }

    fn edit(&self, viewer: Option<&Viewer>, edit: impl FnOnce(&mut ViewSnapshot)) {
        let revision = {
            let mut st = self.state.lock().expect("memory source lock");
            st.revision += 1;
            let revision = st.revision;
            let base = match viewer {
                Some(v) => st.views.get(v).unwrap_or(&st.default),
                None => &st.default,
            };
            // Cloning clones the maps of Arcs, never the encoded bytes.
            let mut next = ViewSnapshot::clone(base);
            edit(&mut next);
            next.revision = revision;
            let next = Arc::new(next);
            match viewer {
                Some(v) => {
                    st.views.insert(v.clone(), next);
                }
                None => st.default = next,
            }
            revision
        };
        self.changes.send_replace(revision);
    }
}

impl SnapshotSource for MemorySource {
    fn snapshot(&self, viewer: &Viewer) -> Arc<ViewSnapshot> {
        let st = self.state.lock().expect("memory source lock");
        st.views.get(viewer).unwrap_or(&st.default).clone()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn ready(&self, _viewer: &Viewer) -> Result<(), NotReady> {
        match &*self.not_ready.lock().expect("memory source lock") {
            Some(reason) => Err(NotReady::new(reason.clone())),
            None => Ok(()),
        }
    }
}
