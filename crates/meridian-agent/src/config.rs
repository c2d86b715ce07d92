//! What the upward client needs to know: who it is, whom to talk to, and
//! how patiently.

use std::fmt;
use std::time::Duration;

use crate::error::AgentError;

/// The cluster's token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into().trim().to_string())
    }

    /// The secret itself, for the Hello message only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Configuration of the upward client.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster (Kubernetes cluster or VM group) reported for.
    pub cluster: String,
    pub region: String,
    /// The agent's zone; endpoints without a zone are in it.
    pub zone: String,
    pub token: Token,
    /// Controller addresses (`host:port` or `http://host:port`), own
    /// region first; tried in order, cycling.
    pub controllers: Vec<String>,
    /// Random per process run (see `AgentHello.session`).
    pub session: String,
    /// Free text for status output: host name and version.
    pub agent: String,
    pub connect_timeout: Duration,
    /// How long to wait for Welcome after Hello.
    pub welcome_timeout: Duration,
    /// An update not answered within this is treated as a broken stream.
    pub ack_timeout: Duration,
    /// Heartbeat period when Welcome does not give one.
    pub heartbeat_interval: Duration,
    /// Pause after every controller failed once; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// While reporting to a controller outside the agent's region that is
    /// not first in `controllers`, how often the ones listed before it are
    /// asked whether they are ready again (jittered upwards by up to a
    /// quarter); the agent moves back to the first that is. Zero disables
    /// failback: the agent stays where it is until that controller fails.
    pub failback_interval: Duration,
    /// Mutual TLS to the controllers with the agent's `cluster/NAME`
    /// certificate; `None` is plaintext.
    pub tls: Option<std::sync::Arc<meridian_tls::TlsSource>>,
}

/// Shorter failback intervals would mostly probe controllers that are still
/// restarting, and a typo such as `30ms` for `30s` should not go unnoticed.
const MIN_FAILBACK_INTERVAL: Duration = Duration::from_secs(1);

impl AgentConfig {
    /// A config with default timings, a fresh session and this host's name.
    pub fn new(
        cluster: impl Into<String>,
        region: impl Into<String>,
        controllers: Vec<String>,
        token: Token,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            region: region.into(),
            zone: String::new(),
            token,
            controllers,
            session: new_session(),
            agent: agent_name(),
            connect_timeout: Duration::from_secs(5),
            welcome_timeout: Duration::from_secs(15),
            ack_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            failback_interval: Duration::from_secs(30),
            tls: None,
        }
    }

    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |s: &str| Err(AgentError::Config(s.to_string()));
        if self.cluster.trim().is_empty() {
            return bad("the cluster name is empty");
        }
        if self.region.trim().is_empty() {
            return bad("the region is empty");
        }
        if self.controllers.iter().all(|c| c.trim().is_empty()) {
            return bad("no controller address given (--controllers host:port,...)");
        }
        if self.token.expose().is_empty() {
            return bad("the token is empty (--token, --token-file or MERIDIAN_AGENT_TOKEN)");
        }
        if !self.failback_interval.is_zero() && self.failback_interval < MIN_FAILBACK_INTERVAL {
            return Err(AgentError::Config(format!(
                "the failback interval {:?} is below the minimum of {:?} (0 disables failback)",
                self.failback_interval, MIN_FAILBACK_INTERVAL
            )));
        }
        Ok(())
    }
}

/// 128 random bits, hex.
pub fn new_session() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `HOST meridian-agent/VERSION`.
pub fn agent_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host} meridian-agent/{}", env!("CARGO_PKG_VERSION"))
}
