//! A Meridian controller node: joins the replicated store (Raft over the peer
//! transport), the client API (config and cluster admin, with routing to the
//! leader), the leader's write lanes with whole-set validation, and the admin
//! HTTP listener. `main` in the `meridian` binary only parses flags and calls
//! [`Node::start`].
//!
//! Modules form layers, each using only those below it:
//! - services: `config_api`, `cluster_api`, `agent_api`, `internal_api`,
//!   `admin`, `leases` (a task of the leader);
//! - seams: `routing` (to the leader, under the one retry policy), `write`
//!   (the lanes), `agent_writes`, `membership`, `status`, `proxy_status`,
//!   `traffic_stats` (Envoys' pushed counters, and their sink);
//! - core: `leadership`, `retry`, `request_ids`, `error`, `metrics`, `config`, `identity`,
//!   `xds_source`, `tls` (the listeners' certificates) and `authz` (the API's
//!   method-to-role table).
//!
//! `node` is the composition root that wires them.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod admin;
mod agent_api;
mod agent_writes;
mod authz;
mod cluster_api;
pub mod config;
mod config_api;
mod error;
mod identity;
mod internal_api;
mod leadership;
mod leases;
mod membership;
mod metrics;
mod node;
mod proxy_status;
mod request_ids;
mod retry;
mod rollout;
mod rollout_api;
mod routing;
mod status;
pub mod tls;
mod traffic_stats;
pub mod ui;
mod write;
mod xds_authz;
mod xds_source;

pub use config::{Listeners, NodeConfig, RaftTimings, TlsConfig, TlsListenerFiles, XdsOptions};
pub use error::NodeError;
pub use node::{Node, NodeHandle};
