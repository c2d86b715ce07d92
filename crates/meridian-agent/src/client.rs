//! The upward client: one stream at a time to one controller, cycling
//! through the list when streams fail, failing back to the controllers
//! listed first once they are ready again, resyncing with a full update on
//! every new stream.

mod failback;
mod session;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::config::AgentConfig;
use crate::endpoints::{Counts, EndpointMap};
use crate::error::AgentError;
use crate::source::Source;
use failback::Failback;
use session::{End, Session};

/// What the agent is doing, for logs and status output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// Address of the controller of the current stream (`None`: not connected).
    pub controller: Option<String>,
    pub controller_id: Option<u64>,
    pub controller_region: Option<String>,
    /// Streams that got a Welcome since start.
    pub sessions: u64,
    /// Sessions ended on purpose to move back to a preferred controller.
    pub failbacks: u64,
    /// Version of the newest acknowledged update of the current stream.
    pub last_ack_version: Option<u64>,
    /// Store revision of that acknowledgement.
    pub last_ack_revision: Option<u64>,
    /// Version sent and not yet answered.
    pub pending_version: Option<u64>,
    /// Endpoints in the controllers' copy as of the last ack.
    pub acked_endpoints: usize,
    /// The source's current set.
    pub source: Counts,
}

/// Reports a cluster's endpoints to the controllers.
pub struct UpwardClient {
    config: AgentConfig,
    status: watch::Sender<AgentStatus>,
}

/// A welcomed stream that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

impl UpwardClient {
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        config.validate()?;
        Ok(Self {
            config,
            status: watch::Sender::new(AgentStatus::default()),
        })
    }

    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    /// Reports `endpoints` until `shutdown` resolves (`Ok`), another agent
    /// takes the cluster over, or the source stops (errors).
    pub async fn run(
        &self,
        mut endpoints: watch::Receiver<EndpointMap>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let controllers: Vec<&str> = self
            .config
            .controllers
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .collect();
        let cluster = self.config.cluster.as_str();
        let mut index = 0;
        let mut failures = 0;
        let mut backoff = self.config.backoff_initial;
        let mut failback = Failback::new(self.config.failback_interval, controllers.len());
        loop {
            let controller = controllers[index];
            let started = Instant::now();
            let leave = Notify::new();
            let (end, target) = {
                let session = Session::new(&self.config, controller, &self.status)
                    .run(&mut endpoints, leave.notified());
                let better =
                    failback.watch(&self.config, &controllers, index, self.status.subscribe());
                tokio::pin!(session, better);
                let mut target = None;
                loop {
                    tokio::select! {
                        end = &mut session => break (end, target),
                        t = &mut better, if target.is_none() => {
                            target = Some(t);
                            leave.notify_one();
                        }
                        _ = &mut shutdown => {
                            tracing::info!(cluster, "agent shutting down");
                            return Ok(());
                        }
                    }
                }
            };
            let from_region = self.status.borrow().controller_region.clone();
            self.status.send_modify(|s| {
                s.controller = None;
                s.pending_version = None;
            });
            match end {
                End::Superseded(by_session) => {
                    return Err(AgentError::Superseded {
                        cluster: cluster.to_string(),
                        by_session,
                    })
                }
                End::SourceStopped => return Err(AgentError::SourceStopped),
                End::Left => failback.ended(index, true),
                End::Broken { welcomed, reason } => {
                    tracing::warn!(cluster, controller, reason = %reason, "stream to controller ended; trying the next one");
                    let lasted = welcomed && started.elapsed() >= STABLE;
                    failback.failed(index);
                    failback.ended(index, lasted);
                    if lasted {
                        failures = 0;
                        backoff = self.config.backoff_initial;
                    } else {
                        failures += 1;
                    }
                }
            }
            if let Some(t) = target {
                // A new session resyncs the full set, so nothing the old one
                // had in flight is lost by moving now.
                tracing::info!(
                    cluster,
                    from = controller,
                    to = controllers[t.index],
                    from_region = from_region.as_deref().unwrap_or(""),
                    to_region = %t.region,
                    "failing back to a preferred controller"
                );
                self.status.send_modify(|s| s.failbacks += 1);
                failback.attempting(t.index);
                index = t.index;
                continue;
            }
            index = (index + 1) % controllers.len();
            if failures >= controllers.len() {
                failures = 0;
                let pause = jitter(backoff);
                tracing::warn!(
                    cluster,
                    pause_ms = pause.as_millis() as u64,
                    "no controller reachable; backing off"
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
    }
}

/// 50-100% of `d`, so many agents do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Starts `source` and reports its endpoints until `shutdown` resolves.
/// Status lines are logged every `status_every`.
pub async fn run_agent_until(
    config: AgentConfig,
    source: Source,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let client = UpwardClient::new(config)?;
    let endpoints = source.start().await?;
    let mut status = client.status();
    let cluster = client.config.cluster.clone();
    let logger = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = status.borrow_and_update().clone();
            tracing::info!(
                cluster,
                controller = s.controller.as_deref().unwrap_or("-"),
                version = s.last_ack_version.unwrap_or(0),
                failbacks = s.failbacks,
                revision = s.last_ack_revision.unwrap_or(0),
                endpoints = s.source.total,
                healthy = s.source.healthy,
                acked_endpoints = s.acked_endpoints,
                "agent status"
            );
        }
    });
    let result = client.run(endpoints, shutdown).await;
    logger.abort();
    result
}

/// Starts `source` and reports its endpoints until another agent takes the
/// cluster over or the source stops.
pub async fn run_agent(config: AgentConfig, source: Source) -> Result<(), AgentError> {
    run_agent_until(config, source, std::future::pending()).await
}
