//! Meridian's own gRPC APIs, generated from `proto/meridian/v1`: the config
//! API, the cluster admin API and the Raft peer transport. Nothing else lives
//! here; conversions to domain types belong to the crates that own them.
#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("meridian.v1");
}
