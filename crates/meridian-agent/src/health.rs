//! Active health checks of file-declared endpoints: HTTP GET (2xx is a
//! pass) or a TCP connect, with thresholds so one lost probe does not flap
//! an endpoint.

mod probe;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;

use crate::endpoints::{EndpointKey, EndpointMap, Health};
use crate::error::AgentError;
use crate::source::file::Declared;

pub use probe::probe_once;

/// How to probe one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `GET path`; any 2xx status passes.
    Http { path: String },
    /// A TCP connection that is accepted passes.
    Tcp,
}

impl Probe {
    /// Parses `http:/PATH`, `http` (meaning `/`) or `tcp`.
    pub fn parse(spec: &str) -> Result<Probe, AgentError> {
        let bad = |reason: &str| AgentError::HealthCheckSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        match spec.split_once(':') {
            None if spec == "tcp" => Ok(Probe::Tcp),
            None if spec == "http" => Ok(Probe::Http { path: "/".into() }),
            Some(("http", path))
                if path.starts_with('/') && !path.chars().any(char::is_whitespace) =>
            {
                Ok(Probe::Http { path: path.into() })
            }
            Some(("http", _)) => Err(bad("the path must start with / and contain no spaces")),
            _ => Err(bad("unknown kind")),
        }
    }
}

/// Health check settings of the agent.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// The probe of endpoints that do not declare their own `healthCheck`;
    /// `None`: only endpoints with their own `healthCheck` are probed.
    pub probe: Option<Probe>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make a healthy endpoint UNHEALTHY.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make an unhealthy endpoint HEALTHY again.
    pub healthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// Pass/fail history of one endpoint. The first result decides at once (a
/// new endpoint is neither reported healthy before it answered nor kept
/// unhealthy for `healthy_threshold` rounds); later ones need thresholds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    pub healthy: Option<bool>,
    successes: u32,
    failures: u32,
}

impl Tracker {
    pub fn record(&mut self, passed: bool, config: &HealthConfig) {
        if passed {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        self.healthy = Some(match self.healthy {
            None => passed,
            Some(true) => self.failures < config.unhealthy_threshold.max(1),
            Some(false) => self.successes >= config.healthy_threshold.max(1),
        });
    }
}

/// The probe an endpoint gets, if any: its own override, else the default.
/// Endpoints declared DRAINING and endpoints without a port are not probed.
fn probe_for<'a>(
    declared: &'a Declared,
    config: &'a HealthConfig,
    key: &EndpointKey,
) -> Option<&'a Probe> {
    let state = declared.endpoints.get(key)?;
    if state.health == Health::Draining || key.port == 0 {
        return None;
    }
    match declared.checks.get(key) {
        Some(own) => own.as_ref(),
        None => config.probe.as_ref(),
    }
}

/// Declared endpoints with the probed health laid over them.
pub fn overlay(
    declared: &Declared,
    config: &HealthConfig,
    trackers: &BTreeMap<EndpointKey, Tracker>,
) -> EndpointMap {
    let mut out = declared.endpoints.clone();
    for (key, state) in out.iter_mut() {
        if probe_for(declared, config, key).is_none() {
            continue;
        }
        state.health = match trackers.get(key).and_then(|t| t.healthy) {
            Some(true) => Health::Healthy,
            Some(false) => Health::Unhealthy,
            None => Health::Unknown,
        };
    }
    out
}

/// Probes the endpoints `which` selects, concurrently, and records results.
async fn round(
    declared: &Declared,
    config: &HealthConfig,
    trackers: &mut BTreeMap<EndpointKey, Tracker>,
    only_new: bool,
) {
    trackers.retain(|k, _| probe_for(declared, config, k).is_some());
    let targets: Vec<(EndpointKey, Probe, SocketAddr)> = declared
        .endpoints
        .keys()
        .filter(|k| !only_new || !trackers.contains_key(*k))
        .filter_map(|k| {
            let probe = probe_for(declared, config, k)?.clone();
            let ip = k.address.parse().ok()?;
            Some((k.clone(), probe, SocketAddr::new(ip, k.port)))
        })
        .collect();
    let results = join_all(
        targets
            .iter()
            .map(|(_, p, a)| probe_once(p, *a, config.timeout)),
    )
    .await;
    for ((key, _, _), result) in targets.into_iter().zip(results) {
        let t = trackers.entry(key.clone()).or_default();
        let before = t.healthy;
        t.record(result.is_ok(), config);
        if before.is_some() && before != t.healthy {
            match &result {
                Ok(()) => {
                    tracing::info!(endpoint = %key, "health check passing: endpoint is healthy")
                }
                Err(e) => {
                    tracing::warn!(endpoint = %key, error = %e, "health check failing: endpoint is unhealthy")
                }
            }
        }
    }
}

/// Probes the declared endpoints on a background task and publishes the
/// resulting sets. The first round runs before this returns, so the first
/// set already carries probed health.
pub async fn spawn_checker(
    config: HealthConfig,
    mut declared: watch::Receiver<Declared>,
) -> watch::Receiver<EndpointMap> {
    let mut trackers = BTreeMap::new();
    let current = declared.borrow_and_update().clone();
    round(&current, &config, &mut trackers, false).await;
    let (tx, rx) = watch::channel(overlay(&current, &config, &trackers));
    tokio::spawn(async move {
        let mut current = current;
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let only_new = tokio::select! {
                _ = tick.tick() => false,
                changed = declared.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    current = declared.borrow_and_update().clone();
                    true
                }
                _ = tx.closed() => return,
            };
            round(&current, &config, &mut trackers, only_new).await;
            let next = overlay(&current, &config, &trackers);
            tx.send_if_modified(|cur| {
                let changed = *cur != next;
                *cur = next;
                changed
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests;
