//! Exit codes, documented in docs/CLI.md. Scripts rely on them: never renumber.

use tonic::Code;

pub const FAILURE: u8 = 1;
pub const NOT_FOUND: u8 = 3;
pub const CONFLICT: u8 = 4;
pub const INVALID: u8 = 5;
pub const UNAVAILABLE: u8 = 6;
/// `apply --wait`: an Envoy rejected (NACKed) the new config.
pub const NACKED: u8 = 7;
/// `apply --wait`: some Envoy did not ACK the new config in time.
pub const WAIT_TIMEOUT: u8 = 8;
/// The server refused the caller's identity the request (PERMISSION_DENIED):
/// a missing role, another cluster's agent, another proxy group.
pub const PERMISSION_DENIED: u8 = 9;
/// The server could not tell who the caller is (UNAUTHENTICATED): a bad
/// agent token, say.
pub const UNAUTHENTICATED: u8 = 10;
/// The TLS handshake failed: the server's certificate is not one the CA
/// bundle trusts as a controller, or the server refused ours.
pub const TLS_HANDSHAKE: u8 = 11;
/// `apply --rollout --wait`: the rollout halted, was rolled back or aborted.
pub const ROLLOUT_HALTED: u8 = 12;

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    pub code: u8,
    pub message: String,
}

/// An error that exits with `code`.
pub fn coded(code: u8, message: impl Into<String>) -> anyhow::Error {
    CodedError {
        code,
        message: message.into(),
    }
    .into()
}

pub fn code_for(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<CodedError>() {
        return c.code;
    }
    if let Some(crate::client::StatusError(st)) = e.downcast_ref::<crate::client::StatusError>() {
        // Checked before the code: a refused certificate arrives as a
        // transport error (UNAVAILABLE or UNKNOWN), and retrying cannot fix it.
        if meridian_tls::handshake_failure(st).is_some() {
            return TLS_HANDSHAKE;
        }
        return match st.code() {
            Code::PermissionDenied => PERMISSION_DENIED,
            Code::Unauthenticated => UNAUTHENTICATED,
            Code::NotFound => NOT_FOUND,
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => CONFLICT,
            Code::InvalidArgument | Code::OutOfRange => INVALID,
            Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
            _ => FAILURE,
        };
    }
    FAILURE
}
