//! Failback: while the agent reports to a controller of another region
//! because the controllers listed before it failed, it asks those from time
//! to time whether they are ready again, and moves back to the first one
//! that is.
//!
//! The probe is a `GetNodeStatus` on the address the agent already has (the
//! controllers' API listener serves the cluster API next to the agents'
//! stream). Its `ready` is what `/readyz` answers, so the agent does not give
//! up a working session for a controller that is up but cut off from its
//! quorum, which would then refuse the Hello.

use std::future::pending;
use std::time::Duration;

use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_proto::v1::NodeStatusRequest;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Endpoint;

use super::session::{error_chain, uri};
use super::AgentStatus;
use crate::config::AgentConfig;

/// A probe (connect and one call) that takes longer means "not ready": a
/// ready controller answers in a round trip or two, and a slow answer is no
/// reason to move.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Failbacks that did not give a lasting session double the wait before the
/// next round, at most this many times, so a controller that answers ready
/// but then drops the agent cannot make it hop back and forth every round.
const MAX_DOUBLINGS: u32 = 3;

/// A preferred controller that answered ready.
pub(super) struct Target {
    pub(super) index: usize,
    pub(super) region: String,
}

pub(super) struct Failback {
    /// Zero: failback disabled.
    interval: Duration,
    /// When each controller (by position in the list) last failed a session
    /// or a probe; it is not probed again before `interval` has passed.
    failed_at: Vec<Option<Instant>>,
    /// Failbacks in a row that did not give a lasting session.
    misses: u32,
    /// The controller being failed back to, until its session ends.
    attempt: Option<usize>,
}

impl Failback {
    pub(super) fn new(interval: Duration, controllers: usize) -> Self {
        Self {
            interval,
            failed_at: vec![None; controllers],
            misses: 0,
            attempt: None,
        }
    }

    /// `index` just failed a session or a probe.
    pub(super) fn failed(&mut self, index: usize) {
        self.failed_at[index] = Some(Instant::now());
    }

    /// The agent is about to fail back to `index`.
    pub(super) fn attempting(&mut self, index: usize) {
        self.attempt = Some(index);
    }

    /// A session to `index` ended; `lasting` when it was welcomed and either
    /// lasted or was left on purpose.
    pub(super) fn ended(&mut self, index: usize, lasting: bool) {
        if self.attempt.take_if(|a| *a == index).is_some() {
            self.misses = if lasting {
                0
            } else {
                (self.misses + 1).min(MAX_DOUBLINGS)
            };
        }
    }

    fn due(&self, index: usize) -> bool {
        self.failed_at[index].is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// The interval, doubled per recent miss, plus up to a quarter so that
    /// many agents that failed over together do not probe in lockstep. Never
    /// less than the interval: a controller is not asked again sooner.
    fn round_wait(&self) -> Duration {
        (self.interval * 2u32.pow(self.misses)).mul_f64(1.0 + rand::random::<f64>() * 0.25)
    }

    /// Resolves with a controller listed before `controllers[index]` that is
    /// ready, once the session to `index` has been welcomed by a controller
    /// outside the agent's region; never resolves otherwise. Controllers of
    /// the current controller's own region are not worth moving to.
    pub(super) async fn watch(
        &mut self,
        config: &AgentConfig,
        controllers: &[&str],
        index: usize,
        mut status: watch::Receiver<AgentStatus>,
    ) -> Target {
        if self.interval.is_zero() || index == 0 {
            return pending().await;
        }
        let welcomed = status
            .wait_for(|s| s.controller.is_some())
            .await
            .map(|s| s.controller_region.clone().unwrap_or_default());
        let Ok(current_region) = welcomed else {
            return pending().await;
        };
        // Within its own region the agent stays where it is: moving between
        // equally good controllers would cost a resync for nothing.
        if current_region == config.region {
            return pending().await;
        }
        let cluster = config.cluster.as_str();
        let from = controllers[index];
        let timeout = config.connect_timeout.min(PROBE_TIMEOUT);
        loop {
            tokio::time::sleep(self.round_wait()).await;
            let due: Vec<usize> = (0..index).filter(|j| self.due(*j)).collect();
            let probes = due.iter().map(|&j| async move {
                (j, probe(controllers[j], timeout, config.tls.as_ref()).await)
            });
            // In list order: the first ready one is the most preferred.
            let mut target = None;
            for (j, answer) in futures::future::join_all(probes).await {
                match answer {
                    Ok(region) if region == current_region => tracing::debug!(
                        cluster,
                        from,
                        controller = controllers[j],
                        region = %region,
                        "failback probe: ready, but in the current controller's region"
                    ),
                    Ok(region) => {
                        if target.is_none() {
                            target = Some(Target { index: j, region });
                        }
                    }
                    Err(reason) => {
                        tracing::debug!(
                            cluster,
                            from,
                            controller = controllers[j],
                            reason = %reason,
                            "failback probe: not ready"
                        );
                        self.failed(j);
                    }
                }
            }
            if let Some(t) = target {
                return t;
            }
        }
    }
}

/// The controller's region if it is ready to take the agent.
async fn probe(
    controller: &str,
    timeout: Duration,
    tls: Option<&std::sync::Arc<meridian_tls::TlsSource>>,
) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(meridian_tls::plain_uri(&uri(controller)))
        .map_err(|e| format!("bad controller address: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let ask = async {
        let channel =
            meridian_tls::connect(endpoint, tls.map(|t| (t, meridian_tls::Expect::AnyNode)))
                .await
                .map_err(|e| format!("connect: {}", error_chain(&e)))?;
        let status = ClusterServiceClient::new(channel)
            .get_node_status(NodeStatusRequest {})
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        if !status.ready {
            return Err(match status.not_ready_reason.as_str() {
                "" => "not ready".to_string(),
                why => format!("not ready: {why}"),
            });
        }
        Ok(status.node.map(|n| n.region).unwrap_or_default())
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
