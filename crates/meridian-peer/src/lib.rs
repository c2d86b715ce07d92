//! Raft peer transport: openraft's RPCs carried over one tonic service on the
//! peer listener, which is separate from the client API and never exposed to
//! clients. Every outgoing and incoming RPC passes through [`Faults`], so tests
//! and chaos runs can partition, delay and drop traffic inside real processes
//! (the kernel here has no netem).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod activity;
mod client;
mod faults;
mod incarnation;
mod server;
mod unreachable;
pub mod wire;

pub use activity::Activity;
pub use client::PeerNetworkFactory;
pub use faults::{Dropped, FaultConfig, Faults};
pub use incarnation::{IncarnationError, Incarnations, Mismatch};
pub use server::{accept, PeerService};
pub use unreachable::Unreachables;
pub use wire::WireError;
