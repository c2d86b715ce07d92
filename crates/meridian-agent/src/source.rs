//! Where endpoints come from. Every source publishes full endpoint sets on
//! a `watch` channel: the newest set is all that matters, so a slow
//! controller sees coalesced changes rather than a backlog.

pub mod file;
pub mod kubernetes;

use std::time::Duration;

use tokio::sync::watch;

use crate::endpoints::EndpointMap;
use crate::error::AgentError;
use crate::health::{spawn_checker, HealthConfig};
use file::FileSource;
use kubernetes::KubernetesSource;

/// A source of full endpoint sets.
#[derive(Debug, Clone)]
pub enum Source {
    /// Declarations in files, probed by the agent's own health checks.
    File {
        file: FileSource,
        health: HealthConfig,
    },
    /// EndpointSlices; Kubernetes readiness is the health.
    Kubernetes(KubernetesSource),
    /// Sets pushed by the embedding program (tests, other integrations).
    Channel(watch::Receiver<EndpointMap>),
}

impl Source {
    /// Parses `file:PATH` or `kubernetes[:NAMESPACE]`.
    pub fn parse(
        spec: &str,
        poll_interval: Duration,
        health: HealthConfig,
    ) -> Result<Source, AgentError> {
        let bad = |reason: &str| AgentError::SourceSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        match spec.split_once(':') {
            Some(("file", "")) => Err(bad("the path is empty")),
            Some(("file", path)) => Ok(Source::File {
                file: FileSource::new(path, poll_interval),
                health,
            }),
            None if spec == "kubernetes" => {
                Ok(Source::Kubernetes(KubernetesSource { namespace: None }))
            }
            Some(("kubernetes", "")) => {
                Ok(Source::Kubernetes(KubernetesSource { namespace: None }))
            }
            Some(("kubernetes", ns)) => Ok(Source::Kubernetes(KubernetesSource {
                namespace: Some(ns.to_string()),
            })),
            _ => Err(bad("unknown kind")),
        }
    }

    /// Starts the source; the receiver holds its first complete set.
    pub async fn start(self) -> Result<watch::Receiver<EndpointMap>, AgentError> {
        match self {
            Source::File { file, health } => {
                let declared = file.spawn()?;
                Ok(spawn_checker(health, declared).await)
            }
            Source::Kubernetes(k) => k.spawn().await,
            Source::Channel(rx) => Ok(rx),
        }
    }
}
