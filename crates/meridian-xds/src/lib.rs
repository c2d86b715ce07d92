//! meridian-xds serves Envoy its configuration over xDS: state-of-the-world
//! and incremental, over ADS and the per-type services, with CSDS status.
//!
//! Architecture invariant: this crate knows nothing about Raft, sled or
//! Meridian's object model. It consumes one narrow trait, [`SnapshotSource`]
//! ("the resources for this viewer, and a signal when they may change"); the
//! node crate implements it on top of the replicated store. The protocol rules
//! implemented here are listed in `PROTOCOL.md`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod authorize;
mod config;
mod csds;
mod error;
mod metrics;
mod serve;
mod server;
mod source;
mod status;
mod stream;
pub mod subscription;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;
mod view;

pub use authorize::{Denied, StreamAuthorizer};
pub use config::XdsConfig;
pub use error::XdsError;
pub use metrics::{Histogram, Variant, XdsMetrics};
pub use serve::{serve, serve_incoming, serve_incoming_with, serve_with};
pub use server::XdsServer;
pub use source::{
    content_version, version_key, version_string, MemorySource, NotReady, Resources,
    SnapshotSource, VersionedResource, ViewSnapshot, Viewer, DEFAULT_PROXY_GROUP,
};
pub use status::{ProxyStatus, ResourceStatus, TypeStatus};
pub use subscription::{NackRecord, Pending, ResourceState, SyncState};
