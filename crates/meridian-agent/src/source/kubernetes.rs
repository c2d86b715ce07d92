//! EndpointSlices (`discovery.k8s.io/v1`) watched through kube-rs, in all
//! namespaces or one.

pub mod mapping;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use crate::endpoints::EndpointMap;
use crate::error::AgentError;
use mapping::SliceStore;

/// Where to watch EndpointSlices.
#[derive(Debug, Clone, Default)]
pub struct KubernetesSource {
    /// `None`: all namespaces.
    pub namespace: Option<String>,
}

impl KubernetesSource {
    /// Connects with the in-cluster or kubeconfig credentials, waits for the
    /// first complete list, then follows changes on a background task. Watch
    /// errors are retried with kube's default backoff and logged.
    pub async fn spawn(self) -> Result<watch::Receiver<EndpointMap>, AgentError> {
        let client = kube::Client::try_default().await.map_err(|e| {
            AgentError::Kubernetes(format!(
                "cannot build a client (in-cluster or KUBECONFIG): {e}"
            ))
        })?;
        let api: Api<EndpointSlice> = match &self.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut store = SliceStore::default();
        let first = loop {
            match events.next().await {
                None => return Err(AgentError::SourceStopped),
                Some(ev) => {
                    if let Some(set) = feed(&mut store, ev) {
                        break set;
                    }
                }
            }
        };
        tracing::info!(
            namespace = self.namespace.as_deref().unwrap_or("*"),
            endpoints = first.len(),
            "listed endpoint slices"
        );
        let (tx, rx) = watch::channel(first);
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = tx.closed() => return,
                };
                let Some(ev) = ev else { return };
                if let Some(set) = feed(&mut store, ev) {
                    tx.send_if_modified(|cur| {
                        let changed = *cur != set;
                        *cur = set;
                        changed
                    });
                }
            }
        });
        Ok(rx)
    }
}

/// Applies one watcher event; returns the set when it may have changed and a
/// full list has been seen.
fn feed(
    store: &mut SliceStore,
    ev: Result<Event<EndpointSlice>, watcher::Error>,
) -> Option<EndpointMap> {
    match ev {
        Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) => store.apply(&s),
        Ok(Event::Delete(s)) => store.delete(&s),
        Ok(Event::Init) => {
            store.init();
            return None;
        }
        Ok(Event::InitDone) => store.init_done(),
        Err(e) => {
            tracing::warn!(error = %e, "endpoint slice watch failed; retrying");
            return None;
        }
    }
    store.endpoints()
}
