//! Conformance: one test per rule of the xDS protocol that PROTOCOL.md lists,
//! each for SotW and delta, over a real tonic server on 127.0.0.1:0.

mod conformance {
    pub mod support;

    mod ack_nack;
    mod architecture;
    mod delta;
    mod generations;
    mod ordering;
    mod push;
    mod readiness;
    mod real_envoy;
    mod status;
    mod subscriptions;
    mod variants;
}
