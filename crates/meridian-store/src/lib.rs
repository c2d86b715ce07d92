//! The replicated store: Meridian's Raft state machine (objects, revisions,
//! request de-duplication, watch events) and the durable Raft log, vote and
//! snapshot storage it runs on, with sled kept behind Meridian's own
//! [`backend::LogBackend`] trait so that the backend can change.
//!
//! Entry points: [`open`] gives the [`LogStore`] and [`StateMachineStore`]
//! that `openraft::Raft::new` takes; the node reads state and watches changes
//! through [`StateMachineStore`].

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod backend;
mod bytes;
pub mod codec;
pub mod disk_faults;
pub mod limits;
pub mod log_store;
pub mod sled_backend;
pub mod state_machine;
mod store;
pub mod types;

pub use backend::LogBackend;
pub use codec::{CodecError, FORMAT_VERSION};
pub use disk_faults::{DiskFaultConfig, DiskFaults};
pub use log_store::LogStore;
pub use sled_backend::SledBackend;
pub use state_machine::{EventBatch, StateMachineStore, WatchError};
pub use store::{open, StoreError};
pub use types::*;
