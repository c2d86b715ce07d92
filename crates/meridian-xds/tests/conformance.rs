//! Conformance: one test per line of the xDS protocol checklist
//! (/work/shared/reference/xds-protocol-checklist.md, mirrored in PROTOCOL.md),
//! each for SotW and delta, over a real tonic server on 127.0.0.1:0.

mod conformance {
    pub mod support;

    mod ack_nack;
    mod architecture;
    mod delta;
    mod generations;
    mod ordering;
    mod push;
    mod real_envoy;
    mod status;
    mod subscriptions;
    mod variants;
}
