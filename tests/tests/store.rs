//! The replicated store, black-box: real `meridian server` processes on
//! loopback, killed and restarted for real. One module per topic.

mod store {
    pub mod support;

    mod admin;
    mod backup;
    mod bad_input;
    mod context;
    mod disk_faults;
    mod durability;
    mod failover;
    mod hardening;
    mod init;
    mod membership;
    mod peer_input;
    mod quorum;
    mod restore;
    mod retry_hint;
    mod revisions;
    mod secrets;
    mod wiped_node;
}
