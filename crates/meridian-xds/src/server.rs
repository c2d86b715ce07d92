//! The xDS server: shared state, the push loop, and the gRPC services.

mod debounce;
mod services;
mod wire;

pub(crate) use wire::AdsWire;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};

use crate::authorize::StreamAuthorizer;
use crate::config::XdsConfig;
use crate::metrics::XdsMetrics;
use crate::source::SnapshotSource;
use crate::status::{self, ProxyStatus};
use crate::stream::Tracked;
use crate::subscription::NackRecord;
use crate::view::{View, Views};

/// NACKs kept for operators across all streams (oldest dropped first).
const NACK_LOG: usize = 256;

/// The xDS server. Cheap to clone; every clone serves the same streams.
#[derive(Clone)]
pub struct XdsServer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub source: Arc<dyn SnapshotSource>,
    /// None: every caller may view as any viewer.
    pub authorizer: Option<Arc<dyn StreamAuthorizer>>,
    pub config: XdsConfig,
    pub identifier: Arc<str>,
    pub metrics: Arc<XdsMetrics>,
    pub registry: Mutex<BTreeMap<u64, Arc<dyn Tracked>>>,
    /// Debounced revisions: every stream follows this, never the raw source.
    pub push: watch::Receiver<u64>,
    pub drain: watch::Sender<bool>,
    pub permits: Semaphore,
    /// The newest view per viewer, diffed against the one before.
    pub views: Views,
    next_stream: AtomicU64,
    nacks: Mutex<VecDeque<NackRecord>>,
}

impl Inner {
    pub fn next_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The newest view for `viewer`. The source is asked without any lock
    /// held here: it may take its own.
    pub fn view(&self, viewer: &crate::source::Viewer) -> Arc<View> {
        let snap = self.source.snapshot(viewer);
        self.views.get(viewer, snap)
    }

    pub fn record_nack(&self, n: NackRecord) {
        tracing::warn!(node = %n.node_id, type_url = %n.type_url, resources = ?n.resource_names, message = %n.message, "config rejected by proxy");
        let mut log = self.nacks.lock().expect("nack log lock");
        log.push_back(n);
        if log.len() > NACK_LOG {
            log.pop_front();
        }
    }
}

impl XdsServer {
    /// Starts the debounce task, so it must be called inside a Tokio runtime.
    /// `config.identifier` is what Envoy reports as `control_plane.identifier`.
    pub fn new(source: Arc<dyn SnapshotSource>, config: XdsConfig) -> XdsServer {
        Self::with_authorizer(source, config, None)
    }

    /// As [`XdsServer::new`], with every new stream and fetch checked by
    /// `authorizer` (which sees the connection's request extensions).
    pub fn with_authorizer(
        source: Arc<dyn SnapshotSource>,
        config: XdsConfig,
        authorizer: Option<Arc<dyn StreamAuthorizer>>,
    ) -> XdsServer {
        let metrics = Arc::new(XdsMetrics::default());
        let changes = source.changes();
        let (push_tx, push) = watch::channel(*changes.borrow());
        let (drain, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            identifier: Arc::from(config.identifier.as_str()),
            permits: Semaphore::new(config.push_concurrency.max(1)),
            views: Views::default(),
            source,
            authorizer,
            metrics: metrics.clone(),
            registry: Mutex::new(BTreeMap::new()),
            push,
            drain,
            next_stream: AtomicU64::new(0),
            nacks: Mutex::new(VecDeque::new()),
            config,
        });
        drop(changes);
        tokio::spawn(debounce::run(
            inner.source.clone(),
            push_tx,
            inner.drain.subscribe(),
            debounce::Debounce {
                quiet: inner.config.debounce_quiet,
                max: inner.config.debounce_max,
                max_endpoints: inner.config.debounce_max_endpoints,
            },
            metrics,
        ));
        XdsServer { inner }
    }

    pub fn config(&self) -> &XdsConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> Arc<XdsMetrics> {
        self.inner.metrics.clone()
    }

    /// Every connected stream with per-type sync state, for proxy-status.
    pub fn status(&self) -> Vec<ProxyStatus> {
        status::collect(&self.inner)
    }

    /// The most recent NACKs from all streams, oldest first.
    pub fn recent_nacks(&self) -> Vec<NackRecord> {
        self.inner
            .nacks
            .lock()
            .expect("nack log lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Ends every stream (now and any opened later) and stops pushing.
    /// Envoys keep their last config and reconnect elsewhere.
    pub fn drain(&self) {
        self.inner.drain.send_replace(true);
    }
}
