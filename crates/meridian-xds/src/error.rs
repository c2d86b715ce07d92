/// Errors of the xDS server's lifecycle (protocol errors go to the client as
/// gRPC statuses and never surface here).
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("xds transport failed")]
    Transport(#[source] tonic::transport::Error),
}
