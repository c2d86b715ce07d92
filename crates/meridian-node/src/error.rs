//! The node's errors: [`NodeError`] for starting and stopping it, [`ApiError`]
//! for what a request can meet, with the one mapping between [`ApiError`] and
//! gRPC status, in both directions.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

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

/// Metadata key that carries an [`ApiError`]'s kind on the status it maps to,
/// so a node relaying a forwarded answer gets the same variant back, and with
/// it the same retryability, without reading the message.
const KIND: &str = "x-meridian-error";

/// What a request can meet, on any node and in any service. Each variant has
/// one gRPC code ([`ApiError::code`]) and is retryable or not by its type
/// ([`ApiError::retryable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is malformed, or the config it would make is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Asks for history older than what is kept.
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state: a revision precondition, a compacted
    /// watch, an id that was used before.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A step ran out of its own time; what it started goes on.
    #[error("{0}")]
    Timeout(String),
    /// This node does not lead (any more); the leader can answer.
    #[error("this node is not the leader")]
    NotLeader,
    /// No node leads right now.
    #[error("{0}")]
    NoLeader(String),
    /// The leader could not reach a majority of voters in time.
    #[error("{0}")]
    NoQuorum(String),
    /// This node was removed: only another node can answer, ever.
    #[error("this node is no longer a member of the cluster (it was removed); use another node's address")]
    Removed,
    /// A membership change failed part way; retrying it blindly could repeat
    /// half of it, so the operator looks first.
    #[error("{0}")]
    MembershipChange(String),
    /// Transient: a connection, a shutdown, a failed proposal.
    #[error("{0}")]
    Unavailable(String),
    /// Another node could not be reached at all: the transport's own
    /// UNAVAILABLE (no Meridian handler answered), e.g. a leader that just
    /// died; the router turns it into [`ApiError::NoLeader`] when the
    /// unreachable node was the leader it knew.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("{0}")]
    Internal(String),
    /// A status relayed from another node whose code has no variant here.
    #[error("{message}")]
    Other { code: Code, message: String },
}

impl ApiError {
    /// Whether trying the same request again, here or on the leader, may
    /// succeed. Writes carry request ids, so a retry is applied once.
    pub(crate) fn retryable(&self) -> bool {
        matches!(
            self,
            ApiError::NotLeader
                | ApiError::NoLeader(_)
                | ApiError::NoQuorum(_)
                | ApiError::Unavailable(_)
                | ApiError::Unreachable(_)
        )
    }

    /// The gRPC code clients see (the CLI's exit codes follow from it).
    pub(crate) fn code(&self) -> Code {
        self.kind().1
    }

    fn kind(&self) -> (&'static str, Code) {
        match self {
            ApiError::Invalid(_) => ("invalid", Code::InvalidArgument),
            ApiError::OutOfRange(_) => ("out-of-range", Code::OutOfRange),
            ApiError::NotFound(_) => ("not-found", Code::NotFound),
            ApiError::Conflict(_) => ("conflict", Code::FailedPrecondition),
            ApiError::AlreadyExists(_) => ("already-exists", Code::AlreadyExists),
            ApiError::Unauthenticated(_) => ("unauthenticated", Code::Unauthenticated),
            ApiError::PermissionDenied(_) => ("permission-denied", Code::PermissionDenied),
            ApiError::Timeout(_) => ("timeout", Code::DeadlineExceeded),
            ApiError::NotLeader => ("not-leader", Code::Unavailable),
            ApiError::NoLeader(_) => ("no-leader", Code::Unavailable),
            ApiError::NoQuorum(_) => ("no-quorum", Code::Unavailable),
            ApiError::Removed => ("removed", Code::Unavailable),
            ApiError::MembershipChange(_) => ("membership-change", Code::Unavailable),
            ApiError::Unavailable(_) => ("unavailable", Code::Unavailable),
            ApiError::Unreachable(_) => ("unreachable", Code::Unavailable),
            ApiError::Cancelled(_) => ("cancelled", Code::Cancelled),
            ApiError::Internal(_) => ("internal", Code::Internal),
            ApiError::Other { code, .. } => ("other", *code),
        }
    }

    /// The one mapping to gRPC status.
    pub(crate) fn into_status(self) -> Status {
        let (kind, code) = (self.kind().0, self.code());
        let mut st = Status::new(code, self.to_string());
        st.metadata_mut()
            .insert(KIND, MetadataValue::from_static(kind));
        st
    }

    /// An answer from another node, back into the variant it was made from.
    /// A status without our kind (the transport's own) goes by its code.
    pub(crate) fn from_status(st: Status) -> ApiError {
        let kind = st.metadata().get(KIND).and_then(|v| v.to_str().ok());
        let m = st.message().to_string();
        match (kind, st.code()) {
            (Some("invalid"), _) | (None, Code::InvalidArgument) => ApiError::Invalid(m),
            (Some("out-of-range"), _) | (None, Code::OutOfRange) => ApiError::OutOfRange(m),
            (Some("not-found"), _) | (None, Code::NotFound) => ApiError::NotFound(m),
            (Some("conflict"), _) | (None, Code::FailedPrecondition) => ApiError::Conflict(m),
            (Some("already-exists"), _) | (None, Code::AlreadyExists) => ApiError::AlreadyExists(m),
            (Some("unauthenticated"), _) | (None, Code::Unauthenticated) => {
                ApiError::Unauthenticated(m)
            }
            (Some("permission-denied"), _) | (None, Code::PermissionDenied) => {
                ApiError::PermissionDenied(m)
            }
            (Some("timeout"), _) | (None, Code::DeadlineExceeded) => ApiError::Timeout(m),
            (Some("not-leader"), _) => ApiError::NotLeader,
            (Some("no-leader"), _) => ApiError::NoLeader(m),
            (Some("no-quorum"), _) => ApiError::NoQuorum(m),
            (Some("removed"), _) => ApiError::Removed,
            (Some("membership-change"), _) => ApiError::MembershipChange(m),
            (Some("unavailable"), _) => ApiError::Unavailable(m),
            // No kind: no Meridian handler answered, the transport did.
            (Some("unreachable"), _) | (None, Code::Unavailable) => ApiError::Unreachable(m),
            (Some("cancelled"), _) | (None, Code::Cancelled) => ApiError::Cancelled(m),
            (Some("internal"), _) | (None, Code::Internal) => ApiError::Internal(m),
            (_, code) => ApiError::Other { code, message: m },
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.into_status()
    }
}

impl From<Status> for ApiError {
    fn from(st: Status) -> ApiError {
        ApiError::from_status(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<(ApiError, Code, bool)> {
        let m = || "why".to_string();
        vec![
            (ApiError::Invalid(m()), Code::InvalidArgument, false),
            (ApiError::OutOfRange(m()), Code::OutOfRange, false),
            (ApiError::NotFound(m()), Code::NotFound, false),
            (ApiError::Conflict(m()), Code::FailedPrecondition, false),
            (ApiError::AlreadyExists(m()), Code::AlreadyExists, false),
            (ApiError::Unauthenticated(m()), Code::Unauthenticated, false),
            (
                ApiError::PermissionDenied(m()),
                Code::PermissionDenied,
                false,
            ),
            (ApiError::Timeout(m()), Code::DeadlineExceeded, false),
            (ApiError::NotLeader, Code::Unavailable, true),
            (ApiError::NoLeader(m()), Code::Unavailable, true),
            (ApiError::NoQuorum(m()), Code::Unavailable, true),
            (ApiError::Removed, Code::Unavailable, false),
            (ApiError::MembershipChange(m()), Code::Unavailable, false),
            (ApiError::Unavailable(m()), Code::Unavailable, true),
            (ApiError::Unreachable(m()), Code::Unavailable, true),
            (ApiError::Cancelled(m()), Code::Cancelled, false),
            (ApiError::Internal(m()), Code::Internal, false),
            (
                ApiError::Other {
                    code: Code::Aborted,
                    message: m(),
                },
                Code::Aborted,
                false,
            ),
        ]
    }

    #[test]
    fn each_variant_has_its_code_and_retryability() {
        for (e, code, retryable) in every_variant() {
            assert_eq!(e.retryable(), retryable, "{e:?}");
            let st = e.clone().into_status();
            assert_eq!(st.code(), code, "{e:?}");
            assert_eq!(st.message(), e.to_string(), "{e:?}");
        }
    }

    #[test]
    fn a_relayed_status_comes_back_as_the_same_variant() {
        for (e, _, _) in every_variant() {
            assert_eq!(ApiError::from_status(e.clone().into_status()), e);
        }
    }

    #[test]
    fn the_transports_own_status_goes_by_its_code() {
        let e = ApiError::from_status(Status::unavailable("connection refused"));
        assert_eq!(e, ApiError::Unreachable("connection refused".into()));
        assert!(e.retryable());
        let e = ApiError::from_status(Status::invalid_argument("bad"));
        assert!(!e.retryable());
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = ApiError::from_status(Status::unknown("?"));
        assert_eq!(e.code(), Code::Unknown);
        assert!(!e.retryable());
    }

    #[test]
    fn messages_users_and_tests_rely_on_stay() {
        assert_eq!(
            ApiError::NotLeader.to_string(),
            "this node is not the leader"
        );
        assert!(ApiError::Removed.to_string().contains("no longer a member"));
    }
}
