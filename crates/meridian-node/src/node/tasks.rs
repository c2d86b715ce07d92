//! The node's background tasks that are not services: accepting
//! connections, counting snapshots, joining a cluster.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_store::Raft;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::metrics::WriteMetrics;

/// Accepted connections with Nagle's algorithm off: tonic ignores its own
/// `tcp_nodelay` for a caller-supplied listener, and Nagle plus delayed ACKs
/// put 40 ms stalls into Raft round trips and forwarded writes.
pub(super) fn incoming(
    l: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(l).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Counts snapshots and purges as openraft's metrics report them, for
/// `/metrics` (openraft only exposes the latest log ids).
pub(super) async fn count_snapshots(
    raft: Raft,
    m: Arc<WriteMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let mut rx = raft.metrics();
    let (mut snap, mut purged) = {
        let cur = rx.borrow();
        (cur.snapshot, cur.purged)
    };
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        let cur = rx.borrow().clone();
        if cur.snapshot != snap {
            snap = cur.snapshot;
            m.snapshots.fetch_add(1, Ordering::Relaxed);
        }
        if cur.purged != purged {
            purged = cur.purged;
            m.purges.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Forgets the incarnations of peers that left the membership, so that a
/// member removed and added again (the way back for a wiped node) is
/// learnt anew.
pub(super) async fn forget_removed_peers(
    raft: Raft,
    incarnations: meridian_peer::Incarnations,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut rx = raft.metrics();
    loop {
        let members: std::collections::BTreeSet<u64> = {
            let cur = rx.borrow();
            cur.membership_config.nodes().map(|(id, _)| *id).collect()
        };
        // Empty until openraft's core loaded the log: not a removal.
        if !members.is_empty() {
            incarnations.retain(&members);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
    }
}

/// Ends the node when openraft stopped on a fatal error (a failed flush of
/// the log, a full disk): a node whose Raft is gone would keep its
/// listeners open and answer nothing useful. Exiting says why, and a
/// restart recovers from what is really on disk.
pub(super) async fn exit_on_raft_fatal(
    raft: Raft,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut rx = raft.metrics();
    loop {
        if let Err(fatal) = &rx.borrow().running_state {
            error!(error = %fatal, "raft stopped; the node exits (restart it once the cause is fixed)");
            return Err(format!(
                "raft stopped: {fatal} (a full or failing disk under the data dir?); \
                 nothing unflushed was acknowledged; restart the node once the disk has room (or works) again"
            ));
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
    }
}

/// Asks the given members to admit this node until one does.
pub(super) async fn join_cluster(
    addrs: Vec<String>,
    me: pb::NodeInfo,
    tls: Option<Arc<meridian_tls::TlsSource>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(200);
    loop {
        for addr in &addrs {
            let ep = match tonic::transport::Endpoint::from_shared(meridian_tls::plain_uri(addr)) {
                Ok(ep) => ep.connect_timeout(Duration::from_secs(2)),
                Err(e) => return Err(format!("--join {addr:?}: {e}")),
            };
            let tls = tls.as_ref().map(|t| (t, meridian_tls::Expect::AnyNode));
            let ch = match meridian_tls::connect(ep, tls).await {
                Ok(ch) => ch,
                Err(e) => {
                    debug!(via = %addr, error = %e, "cannot reach the member to join through; retrying");
                    continue;
                }
            };
            let req = pb::AddNodeRequest {
                node: Some(me.clone()),
                learner_only: false,
            };
            match ClusterServiceClient::new(ch).add_node(req).await {
                Ok(_) => {
                    info!(via = %addr, "joined the cluster");
                    return Ok(());
                }
                Err(st)
                    if st.code() == tonic::Code::FailedPrecondition
                        || st.code() == tonic::Code::AlreadyExists =>
                {
                    error!(via = %addr, error = %st.message(), "the cluster refused this node");
                    return Err(st.message().to_string());
                }
                Err(st) => {
                    warn!(via = %addr, error = %st.message(), "join attempt failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
