//! The federation agent: discovers the endpoints of one cluster (from
//! declaration files with active health checks, or from Kubernetes
//! EndpointSlices) and reports them to the controllers of its region over
//! the upward protocol of `proto/meridian/v1/agent.proto`.
//!
//! It knows nothing of Raft, the store, Envoy or translation: it holds a set
//! of endpoints, diffs it, and streams updates until they are acknowledged.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod client;
mod config;
mod convert;
pub mod endpoints;
mod error;
pub mod health;
pub mod source;

pub use client::{run_agent, run_agent_until, AgentStatus, UpwardClient};
pub use config::{agent_name, new_session, AgentConfig, Token};
pub use endpoints::{diff, Diff, EndpointKey, EndpointMap, EndpointState, Health};
pub use error::AgentError;
pub use health::{HealthConfig, Probe};
pub use source::Source;
