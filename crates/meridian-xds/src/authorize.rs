//! Who may open a stream as which viewer. The server knows nothing of
//! certificates or identities: it hands the authorizer the viewer a
//! stream's first request names (`node.cluster`, the locality) and the
//! connection's request extensions, where whatever accepted the
//! connection put the caller it verified (the node's TLS acceptor puts
//! its `Caller`). A refusal ends the stream with PERMISSION_DENIED before
//! anything is sent.

use crate::source::Viewer;

/// Decides whether the caller behind a stream may view as `viewer`.
/// Called once per stream (on its first request) and once per fetch.
pub trait StreamAuthorizer: Send + Sync + 'static {
    fn authorize(&self, viewer: &Viewer, peer: &tonic::Extensions) -> Result<(), Denied>;
}

/// Why a caller may not have a view; the text goes to the client in the
/// PERMISSION_DENIED status and to the log, so it names the caller and
/// what it asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    pub reason: String,
}

impl Denied {
    pub fn new(reason: impl Into<String>) -> Denied {
        Denied {
            reason: reason.into(),
        }
    }
}
