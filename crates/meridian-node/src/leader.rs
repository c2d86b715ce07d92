//! Who leads, and connections to other nodes' API listeners for forwarding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_store::{NodeId, NodeInfo, Raft};
use tonic::transport::{Channel, Endpoint};

/// Set on a request a node forwards, so the receiver never forwards it again
/// (which could loop while leadership moves).
pub(crate) const FORWARDED: &str = "x-meridian-forwarded";

pub(crate) enum LeaderIs {
    Me,
    Other(NodeInfo),
    Unknown,
    /// This node was removed from the cluster.
    Removed,
}

pub(crate) fn leader(raft: &Raft, me: NodeId) -> LeaderIs {
    let m = raft.metrics().borrow().clone();
    let mem = m.membership_config.membership();
    // A leader that committed its own removal must not act as leader again:
    // openraft 0.9 panics on a membership change from a removed leader.
    if mem.nodes().next().is_some() && mem.get_node(&me).is_none() {
        return LeaderIs::Removed;
    }
    match m.current_leader {
        Some(id) if id == me && m.state.is_leader() && mem.voter_ids().any(|v| v == me) => {
            LeaderIs::Me
        }
        Some(id) if id == me => LeaderIs::Unknown,
        Some(id) => match m.membership_config.membership().get_node(&id) {
            Some(info) => LeaderIs::Other(info.clone()),
            None => LeaderIs::Unknown,
        },
        None => LeaderIs::Unknown,
    }
}

/// Lazily connected channels to other nodes' API listeners, kept apart from
/// the Raft peer connections so client traffic never queues behind
/// replication.
#[derive(Clone, Default)]
pub(crate) struct ApiChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ApiChannels {
    pub(crate) fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad node address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

pub(crate) fn forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().get(FORWARDED).is_some()
}

pub(crate) fn mark_forwarded<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}
