//! The suite's one error type: what stopped a run before it could check.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces, processes or the cluster could not be set up.
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
