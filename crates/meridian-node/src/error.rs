//! The node's errors, and their one mapping to gRPC status.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Listen(String),
}

impl NodeError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        NodeError::Io { what, source }
    }
}

/// Errors the client API returns. Each maps to one gRPC code in [`ApiError::into_status`].
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub(crate) fn into_status(self) -> Status {
        match self {
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Conflict(m) => Status::failed_precondition(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.into_status()
    }
}
