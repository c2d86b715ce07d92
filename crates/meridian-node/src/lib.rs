//! A Meridian controller node: joins the replicated store (Raft over the peer
//! transport), the client API (config and cluster admin, with forwarding to the
//! leader), the leader's group-commit proposer with whole-set validation, and
//! the admin HTTP listener. `main` in the `meridian` binary only parses flags
//! and calls [`Node::start`].
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod admin;
mod agents;
mod api;
mod cluster_api;
pub mod config;
mod error;
mod identity;
mod internal;
mod lane;
mod leader;
mod leases;
mod metrics;
mod node;
mod proposer;
mod proxy_status;
mod validate;
mod xds_source;

pub use config::{Listeners, NodeConfig, RaftTimings, XdsOptions};
pub use error::NodeError;
pub use node::{Node, NodeHandle};
