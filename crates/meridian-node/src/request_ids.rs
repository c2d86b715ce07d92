//! Request ids the node writes for itself. Clients may not use these
//! prefixes: a client's id that matched a lease expiry's would answer that
//! expiry as a duplicate, and the lease would never expire.

use crate::error::ApiError;

/// Agents' writes: `agent-CLUSTER-SESSION-STREAM-WHAT`.
pub(crate) const AGENT: &str = "agent-";
/// Lease expiries: `expire-CLUSTER-REVISION`.
pub(crate) const EXPIRY: &str = "expire-";

/// The rollout controller's writes: `rollout-ID-REVISION-ACTION`.
pub(crate) const ROLLOUT: &str = "rollout-";

const RESERVED: [&str; 3] = [AGENT, EXPIRY, ROLLOUT];

/// Refuses a request id from the public API that a node could also write.
pub(crate) fn check_public(request_id: &str) -> Result<(), ApiError> {
    match RESERVED.iter().find(|p| request_id.starts_with(*p)) {
        Some(prefix) => Err(ApiError::Invalid(format!(
            "request_id: {request_id:?} starts with {prefix:?}, which is reserved for the \
             controllers' own writes; choose another request id"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_public;
    use crate::error::ApiError;

    #[test]
    fn reserved_prefixes_are_refused_and_others_taken() {
        for id in ["expire-east-1-7", "agent-east-1-run-1-0-lease"] {
            match check_public(id) {
                Err(ApiError::Invalid(m)) => assert!(m.starts_with("request_id: "), "{m}"),
                other => panic!("{id}: {other:?}"),
            }
        }
        for id in ["", "apply-1", "srv-00ff", "my-expire-1"] {
            assert!(check_public(id).is_ok(), "{id}");
        }
    }
}
