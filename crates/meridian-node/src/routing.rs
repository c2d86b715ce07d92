//! The one place a leader-only request is routed: answered here when this
//! node leads, sent to the leader otherwise, under the one retry policy
//! ([`crate::retry`]). A request that arrives forwarded is tried once and
//! never forwarded again: the node it came from owns the retries, and a
//! second hop could loop while leadership moves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_store::{NodeId, NodeInfo};
use tonic::transport::{Channel, Endpoint};

use crate::error::ApiError;
use crate::leadership::{LeaderIs, Leadership};
use crate::retry::{request_deadline, Retry};

/// Set on a request a node forwards, so the receiver never forwards it again.
const FORWARDED: &str = "x-meridian-forwarded";

pub(crate) fn forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().get(FORWARDED).is_some()
}

pub(crate) fn mark_forwarded<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}

/// Where one try of a request goes.
pub(crate) enum Target {
    Here,
    Leader(NodeId, NodeInfo),
}

#[derive(Clone)]
pub(crate) struct Router {
    leadership: Leadership,
    write_timeout: Duration,
    /// To other nodes' API listeners, kept apart from the Raft peer
    /// connections so client traffic never queues behind replication.
    api: Channels,
    /// To other nodes' peer listeners, for the peer-only writes.
    peer: Channels,
}

impl Router {
    /// `tls`: the node's own certificate, presented when it forwards to
    /// another node; `None` on a plaintext (`--insecure`) node.
    pub(crate) fn new(
        leadership: Leadership,
        write_timeout: Duration,
        tls: Option<Arc<meridian_tls::TlsSource>>,
    ) -> Self {
        let channels = Channels {
            channels: Default::default(),
            tls,
        };
        Router {
            leadership,
            write_timeout,
            api: channels.clone_empty(),
            peer: channels,
        }
    }

    pub(crate) fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Runs `attempt` where the leader is, again while it fails with a
    /// retryable error, until the request's deadline (which each try gets,
    /// to bound its own waits).
    /// Answers `msg` on the leader: `here` when this node leads, else the
    /// same call (`remote`) forwarded to the leader on a client of the
    /// API service that `client` makes from the leader's channel.
    pub(crate) async fn on_leader<M, T, C, H, HF, R, RF>(
        &self,
        forwarded: bool,
        msg: &M,
        client: impl Fn(Channel) -> C,
        here: H,
        remote: R,
    ) -> Result<T, ApiError>
    where
        M: Clone,
        H: Fn(Instant) -> HF,
        HF: Future<Output = Result<T, ApiError>>,
        R: Fn(C, tonic::Request<M>) -> RF,
        RF: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (here, remote, client) = (&here, &remote, &client);
        self.route(forwarded, |target, deadline| async move {
            match target {
                Target::Here => here(deadline).await,
                Target::Leader(_, info) => {
                    let c = client(self.api_channel(&info)?);
                    Ok(remote(c, mark_forwarded(msg.clone())).await?.into_inner())
                }
            }
        })
        .await
    }

    pub(crate) async fn route<T, F, Fut>(
        &self,
        forwarded: bool,
        mut attempt: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut(Target, Instant) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let deadline = request_deadline(self.write_timeout);
        let mut retry = Retry::until(deadline);
        loop {
            let target = match self.leadership.await_leader(deadline).await {
                Ok(LeaderIs::Me) => Ok(Target::Here),
                Ok(LeaderIs::Other(..)) if forwarded => Err(ApiError::NotLeader),
                Ok(LeaderIs::Other(id, info)) => Ok(Target::Leader(id, info)),
                Ok(LeaderIs::Unknown | LeaderIs::Removed) => {
                    unreachable!("await_leader returns a known leader")
                }
                // Ran out of time with no leader at all: say so, and who
                // waited.
                Err(ApiError::NoLeader(m)) => Err(ApiError::NoLeader(format!(
                    "no leader yet (election in progress) as seen by controller {}: {m}",
                    self.leadership.id()
                ))),
                Err(e) => Err(e),
            };
            let result = match target {
                Ok(Target::Leader(id, info)) => {
                    let addr = info.api_addr.clone();
                    attempt(Target::Leader(id, info), deadline)
                        .await
                        .map_err(|e| self.leader_unreachable(e, id, &addr))
                }
                Ok(t) => attempt(t, deadline).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if forwarded => return Err(e),
                Err(e) => retry.again(e).await?,
            }
        }
    }

    /// A leader that cannot be reached has most likely died, and the
    /// others are electing a new one: the request waits for it (the error
    /// stays retryable), and if it gives up, it says so and names this
    /// controller, instead of the transport's "tcp connect error".
    fn leader_unreachable(&self, e: ApiError, leader: NodeId, addr: &str) -> ApiError {
        match e {
            ApiError::Unreachable(reason) => {
                tracing::debug!(node = self.leadership.id(), leader, addr, error = %reason, "leader unreachable, waiting for an election");
                ApiError::NoLeader(format!(
                    "no leader yet (election in progress): controller {} forwarded to node {leader} ({addr}), the leader it knew, which is unreachable ({reason}); retry, or check `meridian status`",
                    self.leadership.id()
                ))
            }
            e => e,
        }
    }

    pub(crate) fn api_channel(&self, node: &NodeInfo) -> Result<Channel, ApiError> {
        self.api.get(&node.api_addr)
    }

    pub(crate) fn peer_channel(&self, node: &NodeInfo) -> Result<Channel, ApiError> {
        self.peer.get(&node.peer_addr)
    }
}

/// Lazily connected channels by address.
#[derive(Clone)]
struct Channels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Arc<meridian_tls::TlsSource>>,
}

impl Channels {
    fn clone_empty(&self) -> Channels {
        Channels {
            channels: Default::default(),
            tls: self.tls.clone(),
        }
    }

    fn get(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ApiError::Internal(format!("bad node address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let ch = meridian_tls::connect_lazy(
            ch,
            self.tls
                .as_ref()
                .map(|t| (t, meridian_tls::Expect::AnyNode)),
        );
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}
