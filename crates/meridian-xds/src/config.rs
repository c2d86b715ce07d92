use std::time::Duration;

/// Tunables of the xDS server. Defaults follow Istio where it has one.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    /// Reported to Envoy as `control_plane.identifier` (which replica sent
    /// the last response).
    pub identifier: String,
    /// This server's region: the viewer region of an Envoy without locality.
    pub region: String,
    /// Push once the source was quiet this long...
    pub debounce_quiet: Duration,
    /// ...or once the first unpushed change is this old.
    pub debounce_max: Duration,
    /// The same bound when only endpoints changed (see
    /// `SnapshotSource::config_generation`): under continuous endpoint churn
    /// the source is never quiet, and an endpoint must reach Envoy well
    /// within a second to be useful for failover.
    pub debounce_max_endpoints: Duration,
    /// Streams computing and queueing a push at the same time.
    pub push_concurrency: usize,
    /// On ADS, removals of clusters, endpoints and secrets wait until the
    /// client is in sync with the new listeners and routes, then this much
    /// longer, so Envoy's workers have moved off the old listeners.
    pub removal_grace: Duration,
    /// HTTP/2 keepalive ping interval and timeout.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// End streams (and connections) after this age so Envoys rebalance across
    /// replicas; `None` keeps them forever.
    pub max_connection_age: Option<Duration>,
    /// Largest accepted request message.
    pub max_request_bytes: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_streams_per_connection: u32,
    /// Responses queued per stream before the push waits for the client.
    pub stream_buffer: usize,
}

impl Default for XdsConfig {
    fn default() -> Self {
        XdsConfig {
            identifier: "meridian".to_string(),
            region: "local".to_string(),
            debounce_quiet: Duration::from_millis(100),
            debounce_max: Duration::from_secs(1),
            debounce_max_endpoints: Duration::from_millis(300),
            push_concurrency: 100,
            removal_grace: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: None,
            max_request_bytes: 4 * 1024 * 1024,
            max_streams_per_connection: 100,
            stream_buffer: 16,
        }
    }
}
