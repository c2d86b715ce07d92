//! Mutual TLS for Meridian's gRPC listeners and clients, on rustls with
//! ring. A [`TlsSource`] holds one certificate, key and CA bundle loaded
//! through `meridian-pki`, re-read from disk when the files change
//! ([`reload_loop`]); [`incoming`] turns a TCP listener into verified TLS
//! connections whose [`Caller`] (the peer's `meridian_pki::Identity`)
//! tonic puts into every request's extensions; [`Connector`] dials with a
//! client certificate and checks the server's identity, not its host name.
//!
//! Why not tonic's own `tls-ring`: its server config is fixed at start (no
//! reload) and it exposes only the raw peer certificates, so every handler
//! would parse identities itself.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod accept;
mod connect;
mod source;
mod verify;

pub use accept::{incoming, Caller, TlsConn};
pub use connect::{connect, connect_lazy, handshake_failure, plain_uri, Connector};
pub use source::{reload_loop, Expect, Listener, TlsFiles, TlsSource, TlsStatus};

/// Why TLS material could not be used. Each message names the file or the
/// setting it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] meridian_pki::Error),
    #[error("{what}: {reason}")]
    Config { what: String, reason: String },
}

impl TlsError {
    fn config(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> TlsError {
        TlsError::Config {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}
