//! The chaos suite: seeded runs against real `meridian` processes, each in
//! its own network namespace, with faults (kills, pauses, real network
//! cuts) while clients record their histories, and the checks on those
//! histories (linearizability, nothing acknowledged lost, recovery). See
//! docs/CHAOS.md.
//!
//! Layers, each using only those below: `scenario` (a run and its checks)
//! over `nemesis` (faults), `clients` (histories) and `dataplane` (an Envoy
//! and an agent serving traffic), over `nodes` (the processes) and `net`
//! (namespaces and cuts); `checker` and `history` are
//! pure and know nothing of processes or the network.

pub mod checker;
pub mod clients;
pub mod dataplane;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod scenario;

mod error;
pub use error::Error;
