//! The chaos suite: seeded runs against real `meridian` processes, each in
//! its own network namespace, with faults (kills, pauses, real network
//! cuts) while clients record their histories, and the checks on those
//! histories (linearizability, nothing acknowledged lost, recovery). See
//! docs/CHAOS.md.

pub mod checker;
pub mod history;
pub mod net;

mod error;
pub use error::Error;
