//! Meridian's traffic object model: the objects operators write (Service,
//! Route, Listener, Secret, Region), their parsing from YAML/JSON files, their
//! validation one by one and as a set, and the endpoint data translation
//! consumes.
//!
//! Architecture invariant: this crate does no I/O and knows nothing about
//! Envoy protos, storage or the network. The one exception to "pure" is that
//! [`Object::validate`] reads the wall clock to reject expired certificates;
//! [`Object::validate_at`] takes the time explicitly.
//!
//! The reference of every field, default and limit is in `MODEL.md`.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod config_set;
mod duration;
mod endpoint;
mod error;
mod kind;
mod name;
mod object;
mod parse;
mod pem;
pub mod reported;
pub mod spec;
mod suggest;

pub use config_set::ConfigSet;
pub use duration::Duration;
pub use endpoint::{Endpoint, EndpointSet, Health};
pub use error::{Location, ModelError};
pub use kind::Kind;
pub use name::{validate_name, MAX_NAME_LEN, MAX_OBJECT_BYTES};
pub use object::{Object, Spec};
pub use parse::{parse_documents, parse_documents_located};
pub use spec::{ClusterSpec, LeaseExpiry, ListenerSpec, RegionSpec, RouteSpec, SecretSpec, ServiceSpec};
