//! The narrow interface between the xDS server and whatever produces config.

mod memory;

pub use memory::MemorySource;

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Who is asking: the slice of config a proxy sees is a function of its region
/// and its proxy group, nothing else. Derived from the Envoy `node` (see
/// PROTOCOL.md for the defaults when fields are absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Viewer {
    pub region: String,
    pub proxy_group: String,
}

/// The default proxy group for a node that does not set `node.cluster`.
pub const DEFAULT_PROXY_GROUP: &str = "default";

impl Viewer {
    /// `region` falls back to the server's own region because an Envoy without
    /// a locality is almost always co-located with the control plane it dials.
    pub fn from_node(
        node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
        server_region: &str,
    ) -> Viewer {
        let region = node
            .and_then(|n| n.locality.as_ref())
            .map(|l| l.region.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| server_region.to_string());
        let proxy_group = node
            .map(|n| n.cluster.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| DEFAULT_PROXY_GROUP.to_string());
        Viewer {
            region,
            proxy_group,
        }
    }
}

/// One encoded resource. Built once per view and shared (behind an `Arc`) by
/// every stream of that view, so per-Envoy memory does not scale with config.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedResource {
    /// Shared with every stream's bookkeeping (an `Arc`, not a copy per
    /// stream).
    pub name: Arc<str>,
    /// Content hash: replicas that hold the same content agree on versions.
    pub version: String,
    /// `version` as a number (see [`version_key`]): what per-stream state
    /// stores, 8 bytes instead of a string per resource per stream.
    pub key: u64,
    pub resource: Any,
}

impl VersionedResource {
    /// Wraps an encoded resource; the version is a hash of its type and bytes.
    pub fn new(name: impl Into<Arc<str>>, resource: Any) -> VersionedResource {
        let version = content_version(&resource);
        VersionedResource {
            name: name.into(),
            key: version_key(&version),
            version,
            resource,
        }
    }
}

/// First 16 hex digits of SHA-256 over type URL and bytes.
pub fn content_version(resource: &Any) -> String {
    let mut h = Sha256::new();
    h.update(resource.type_url.as_bytes());
    h.update([0u8]);
    h.update(&resource.value);
    hex::encode(&h.finalize()[..8])
}

/// The number behind a version string. A version this server could not
/// have produced (another control plane's, sent back by a reconnecting
/// Envoy) maps to [`FOREIGN_VERSION`], which matches no resource.
pub fn version_key(version: &str) -> u64 {
    if version.len() != 16 {
        return FOREIGN_VERSION;
    }
    u64::from_str_radix(version, 16).unwrap_or(FOREIGN_VERSION)
}

/// See [`version_key`].
pub const FOREIGN_VERSION: u64 = u64::MAX;

/// The version string for a key, as [`content_version`] wrote it.
pub fn version_string(key: u64) -> String {
    format!("{key:016x}")
}

/// Resources by name for one type.
pub type Resources = BTreeMap<String, Arc<VersionedResource>>;

/// Everything one viewer can see, by type URL then name.
#[derive(Clone, Debug, Default)]
pub struct ViewSnapshot {
    pub by_type: BTreeMap<String, Resources>,
    /// The store revision this snapshot was built from (informational).
    pub revision: u64,
    /// When that revision was committed, ms since the Unix epoch (0:
    /// unknown); the start of the push-to-ACK latency.
    pub committed_at_ms: u64,
}

impl ViewSnapshot {
    /// The resources of one type; empty when the type is absent.
    pub fn resources(&self, type_url: &str) -> &Resources {
        static EMPTY: Resources = BTreeMap::new();
        self.by_type.get(type_url).unwrap_or(&EMPTY)
    }

    /// Adds or replaces one resource, hashing it for its version.
    pub fn insert(&mut self, name: impl Into<String>, resource: Any) {
        let name: String = name.into();
        let r = VersionedResource::new(name.as_str(), resource);
        self.by_type
            .entry(r.resource.type_url.clone())
            .or_default()
            .insert(name, Arc::new(r));
    }
}

/// What the xDS server consumes: "give me the resources for this viewer, and
/// tell me when they may have changed". Implemented by the node on top of the
/// replicated store and translation, and by [`MemorySource`] for tests.
pub trait SnapshotSource: Send + Sync + 'static {
    /// The resources for this viewer at the latest state; must be cheap
    /// (cached, and shared between streams of the same view).
    fn snapshot(&self, viewer: &Viewer) -> Arc<ViewSnapshot>;
    /// Fires whenever the state may have changed (the store revision).
    fn changes(&self) -> watch::Receiver<u64>;

    /// A counter that moves only when something other than endpoints
    /// changed. While it stands still, a burst of changes is endpoint churn
    /// and is pushed within `debounce_max_endpoints` instead of
    /// `debounce_max`. The default moves with every change: everything is
    /// treated as config.
    fn config_generation(&self) -> u64 {
        *self.changes().borrow()
    }

    /// Whether this source may serve `viewer` now. A source that has not
    /// caught up (a replica on an empty or old data directory, a viewer
    /// whose config never translated) must say so: its snapshot would be
    /// empty or old, and a full-state response from it deletes Envoy's
    /// clusters and listeners. New streams are then refused with
    /// UNAVAILABLE, so Envoy keeps its config and tries another server.
    /// Streams already open keep being served. The default is always ready.
    fn ready(&self, viewer: &Viewer) -> Result<(), NotReady> {
        let _ = viewer;
        Ok(())
    }
}

/// Why a source cannot serve yet; the text goes to the client in the
/// UNAVAILABLE status and to the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NotReady {
    pub reason: String,
}

impl NotReady {
    pub fn new(reason: impl Into<String>) -> NotReady {
        NotReady {
            reason: reason.into(),
        }
    }
}
