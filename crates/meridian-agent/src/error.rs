use std::path::PathBuf;

/// Everything that can stop the agent or refuse its input.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A declaration file that does not parse or names a bad value; `field`
    /// is a path such as `endpoints[2].address`.
    #[error("{}: {field}: {reason}", path.display())]
    File {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// Two declarations of the same (service, address, port).
    #[error("{}: {field}: duplicate endpoint {key} (first declared in {})", path.display(), first.display())]
    Duplicate {
        path: PathBuf,
        field: String,
        key: String,
        first: PathBuf,
    },
    #[error("invalid health check {spec:?}: {reason} (use http:/PATH or tcp)")]
    HealthCheckSpec { spec: String, reason: String },
    #[error("invalid source {spec:?}: {reason} (use file:PATH or kubernetes[:NAMESPACE])")]
    SourceSpec { spec: String, reason: String },
    #[error("invalid agent config: {0}")]
    Config(String),
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    /// The controllers gave this cluster to a newer agent session; this
    /// process must stop rather than fight over it.
    #[error("another agent took over cluster {cluster} (session {by_session}); stop one of the agents or give them different --cluster names")]
    Superseded { cluster: String, by_session: String },
    /// The endpoint source ended; the agent has nothing more to report.
    #[error("endpoint source stopped")]
    SourceStopped,
}
