//! Meridian's identities and certificates: the typed identity a certificate
//! speaks for (a SPIFFE-style URI in its SAN), a development CA that issues
//! such certificates, and loading them from PEM files as DER for the TLS
//! layer. It knows nothing of Raft, storage, the model, gRPC or Envoy; who
//! may do what with an identity is decided by the listeners that use it.
#![forbid(unsafe_code)]

pub mod dev;
mod identity;
mod issue;
mod load;
mod validity;
mod x509;

use std::path::PathBuf;

pub use identity::{
    IdError, Identity, Role, SpiffeId, TrustDomain, DEFAULT_TRUST_DOMAIN, MAX_NAME_LEN,
};
pub use issue::{Ca, Issued, LeafRequest};
pub use load::{bundle_trust_domain, load, load_trusting, Loaded, PrivateKey, PrivateKeyFormat};
pub use validity::{format_utc, parse_period, Validity, CA_VALIDITY, LEAF_VALIDITY};
pub use x509::{ca_trust_domain, inspect, verify_issued_by, CertInfo};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    #[error("the certificate has no URI SAN; a Meridian certificate carries exactly one spiffe:// identity (issue one with `meridian certs`)")]
    NoIdentity,
    #[error("the certificate has {} URI SANs ({}); a Meridian certificate carries exactly one", .0.len(), .0.join(", "))]
    ManyIdentities(Vec<String>),
    #[error("not a Meridian CA certificate: {0}")]
    NotCa(String),
    #[error("the certificate was not issued by this CA: {0}")]
    NotIssuedBy(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it (remove it first, or pass --force to `meridian certs`)")]
    Exists { path: PathBuf },
    #[error("issuing a certificate: {0}")]
    Issue(String),
}

impl Error {
    fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
        Error::File {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
