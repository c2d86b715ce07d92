//! One stream to one controller: Hello, Welcome, a full update, then deltas
//! and heartbeats. At most one update is in flight: a delta is computed
//! against what the controller acknowledged, so a Nack (nothing applied)
//! never leaves later deltas built on a state the controller does not have.

use std::time::Duration;

use meridian_proto::v1::agent_message::Msg as Out;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use meridian_proto::v1::controller_message::Msg as In;
use meridian_proto::v1::{
    AgentHeartbeat, AgentHello, AgentMessage, AgentWelcome, ControllerMessage,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::Endpoint;

use super::AgentStatus;
use crate::config::AgentConfig;
use crate::convert;
use crate::endpoints::{counts, diff, EndpointMap};

/// How a session ended.
pub(super) enum End {
    Superseded(String),
    SourceStopped,
    Broken {
        welcomed: bool,
        reason: String,
    },
    /// The client asked the session to end (to fail back to a preferred
    /// controller) and it did.
    Left,
}

/// How long a session that is asked to leave waits for the controller to
/// answer what is in flight and close its side. The next session's full
/// update makes waiting longer pointless: it replaces whatever this one
/// left half done.
const LEAVE_GRACE: Duration = Duration::from_secs(2);

fn broken(welcomed: bool, reason: impl Into<String>) -> End {
    End::Broken {
        welcomed,
        reason: reason.into(),
    }
}

pub(super) struct Session<'a> {
    config: &'a AgentConfig,
    controller: &'a str,
    status: &'a watch::Sender<AgentStatus>,
}

/// The update sent and not yet answered.
struct InFlight {
    version: u64,
    set: EndpointMap,
    deadline: Instant,
}

/// Per-stream protocol state.
struct Stream {
    tx: mpsc::Sender<AgentMessage>,
    /// What the controller holds for this cluster, as acknowledged on this
    /// stream; `None` until the first full update is acknowledged, and the
    /// next update is then a full one.
    base: Option<EndpointMap>,
    version: u64,
    in_flight: Option<InFlight>,
    /// A set the controller refused; not sent again until the source moves.
    rejected: Option<EndpointMap>,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        config: &'a AgentConfig,
        controller: &'a str,
        status: &'a watch::Sender<AgentStatus>,
    ) -> Self {
        Self {
            config,
            controller,
            status,
        }
    }

    /// Runs the stream until it breaks, or until `leave` resolves after the
    /// Welcome; then it closes its side and lets the controller finish.
    pub(super) async fn run(
        self,
        endpoints: &mut watch::Receiver<EndpointMap>,
        leave: impl std::future::Future<Output = ()>,
    ) -> End {
        tokio::pin!(leave);
        let (tx, mut inbound, welcome) = match self.open().await {
            Ok(x) => x,
            Err(end) => return end,
        };
        let cluster = self.config.cluster.as_str();
        let controller = self.controller;
        tracing::info!(
            cluster,
            controller,
            controller_id = welcome.controller_id,
            controller_region = %welcome.controller_region,
            lease_ttl_ms = welcome.lease_ttl_ms,
            "connected to controller"
        );
        self.status.send_modify(|s| {
            s.controller = Some(controller.to_string());
            s.controller_id = Some(welcome.controller_id);
            s.controller_region = Some(welcome.controller_region.clone());
            s.sessions += 1;
            s.last_ack_version = None;
            s.last_ack_revision = None;
            s.pending_version = None;
        });
        let every = match welcome.heartbeat_interval_ms {
            0 => self.config.heartbeat_interval,
            ms => Duration::from_millis(ms),
        };
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut st = Stream {
            tx,
            base: None,
            version: 0,
            in_flight: None,
            rejected: None,
        };
        endpoints.borrow_and_update();
        if let Err(e) = self.maybe_send(&mut st, endpoints).await {
            return e;
        }
        loop {
            let deadline = st.in_flight.as_ref().map(|f| f.deadline);
            tokio::select! {
                _ = &mut leave => return self.leave(st, inbound).await,
                changed = endpoints.changed() => {
                    if changed.is_err() {
                        return End::SourceStopped;
                    }
                    endpoints.borrow_and_update();
                }
                _ = heartbeat.tick() => {
                    let hb = AgentMessage { msg: Some(Out::Heartbeat(AgentHeartbeat {})) };
                    if st.tx.send(hb).await.is_err() {
                        return broken(true, "stream closed while sending a heartbeat");
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let v = st.in_flight.as_ref().map(|f| f.version).unwrap_or(0);
                    return broken(true, format!("no answer to update version {v} within {:?}", self.config.ack_timeout));
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if let Some(end) = self.on_message(&mut st, m) {
                            return end;
                        }
                    }
                    Ok(None) => return broken(true, "controller closed the stream"),
                    Err(status) => return broken(true, format!("{}: {}", status.code(), status.message())),
                },
            }
            if let Err(e) = self.maybe_send(&mut st, endpoints).await {
                return e;
            }
        }
    }

    /// Half-closes the stream so the controller sees a normal end rather
    /// than a reset, and reads its last answers until it closes its side.
    async fn leave(&self, mut st: Stream, mut inbound: Streaming<ControllerMessage>) -> End {
        // Nothing is sent any more; the placeholder's receiver is gone too.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut st.tx, closed));
        let drained = tokio::time::timeout(LEAVE_GRACE, async {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if let Some(end) = self.on_message(&mut st, m) {
                            return end;
                        }
                    }
                    Ok(None) | Err(_) => return End::Left,
                }
            }
        })
        .await;
        self.status.send_modify(|s| s.pending_version = None);
        match drained {
            // A newer agent process took the cluster over meanwhile: that
            // must still stop this one.
            Ok(End::Superseded(by)) => End::Superseded(by),
            Ok(_) => End::Left,
            Err(_) => {
                tracing::debug!(
                    cluster = %self.config.cluster,
                    controller = self.controller,
                    "controller did not close the stream within {LEAVE_GRACE:?}; dropping it"
                );
                End::Left
            }
        }
    }

    /// Connects, says Hello and waits for Welcome.
    async fn open(
        &self,
    ) -> Result<
        (
            mpsc::Sender<AgentMessage>,
            Streaming<ControllerMessage>,
            AgentWelcome,
        ),
        End,
    > {
        let not_welcomed = |reason: String| broken(false, reason);
        let endpoint = Endpoint::from_shared(meridian_tls::plain_uri(&uri(self.controller)))
            .map_err(|e| not_welcomed(format!("bad controller address: {e}")))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        let tls = self.config.tls.as_ref();
        let channel =
            meridian_tls::connect(endpoint, tls.map(|t| (t, meridian_tls::Expect::AnyNode)))
                .await
                .map_err(|e| not_welcomed(format!("connect: {}", error_chain(&e))))?;
        let (tx, rx) = mpsc::channel(16);
        let c = self.config;
        let hello = AgentHello {
            cluster: c.cluster.clone(),
            region: c.region.clone(),
            zone: c.zone.clone(),
            token: c.token.expose().to_string(),
            session: c.session.clone(),
            agent: c.agent.clone(),
        };
        // The channel has room: this cannot block.
        let _ = tx
            .send(AgentMessage {
                msg: Some(Out::Hello(hello)),
            })
            .await;
        let mut client = AgentServiceClient::new(channel);
        let welcome = async {
            let mut inbound = client
                .report(ReceiverStream::new(rx))
                .await
                .map_err(|s| {
                    if matches!(
                        s.code(),
                        tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                            | tonic::Code::InvalidArgument
                    ) {
                        // Retrying will not help until the cluster is registered
                        // or the token fixed; say so loudly, keep trying.
                        tracing::error!(
                            cluster = %c.cluster,
                            controller = self.controller,
                            code = ?s.code(),
                            reason = s.message(),
                            "controller refused the agent; check --cluster, --region and the token"
                        );
                    }
                    not_welcomed(format!("{}: {}", s.code(), s.message()))
                })?
                .into_inner();
            match inbound.message().await {
                Ok(Some(ControllerMessage {
                    msg: Some(In::Welcome(w)),
                })) => Ok((inbound, w)),
                Ok(Some(ControllerMessage {
                    msg: Some(In::Superseded(s)),
                })) => Err(End::Superseded(s.by_session)),
                Ok(Some(other)) => Err(not_welcomed(format!("expected Welcome, got {other:?}"))),
                Ok(None) => Err(not_welcomed("stream closed before Welcome".into())),
                Err(s) => Err(not_welcomed(format!("{}: {}", s.code(), s.message()))),
            }
        };
        match tokio::time::timeout(c.welcome_timeout, welcome).await {
            Ok(Ok((inbound, w))) => Ok((tx, inbound, w)),
            Ok(Err(end)) => Err(end),
            Err(_) => Err(not_welcomed(format!(
                "no Welcome within {:?}",
                c.welcome_timeout
            ))),
        }
    }

    /// Sends the next update if none is in flight and the source's set
    /// differs from what the controller holds.
    async fn maybe_send(
        &self,
        st: &mut Stream,
        endpoints: &watch::Receiver<EndpointMap>,
    ) -> Result<(), End> {
        let latest = endpoints.borrow().clone();
        self.status.send_modify(|s| s.source = counts(&latest));
        if st.in_flight.is_some() || st.rejected.as_ref() == Some(&latest) {
            return Ok(());
        }
        let version = st.version + 1;
        let update = match &st.base {
            None => convert::full_update(version, &latest),
            Some(base) => {
                let d = diff(base, &latest);
                if d.is_empty() {
                    return Ok(());
                }
                convert::delta_update(version, &d)
            }
        };
        tracing::debug!(
            cluster = %self.config.cluster,
            controller = self.controller,
            version,
            replace = update.replace,
            upserts = update.upserts.len(),
            removals = update.removals.len(),
            "sending endpoint update"
        );
        if st
            .tx
            .send(AgentMessage {
                msg: Some(Out::Update(update)),
            })
            .await
            .is_err()
        {
            return Err(broken(true, "stream closed while sending an update"));
        }
        st.version = version;
        st.in_flight = Some(InFlight {
            version,
            set: latest,
            deadline: Instant::now() + self.config.ack_timeout,
        });
        self.status
            .send_modify(|s| s.pending_version = Some(version));
        Ok(())
    }

    fn on_message(&self, st: &mut Stream, m: ControllerMessage) -> Option<End> {
        let cluster = self.config.cluster.as_str();
        let controller = self.controller;
        match m.msg {
            Some(In::Ack(ack)) => match st.in_flight.take_if(|f| f.version == ack.version) {
                Some(f) => {
                    tracing::debug!(
                        cluster,
                        controller,
                        version = ack.version,
                        revision = ack.revision,
                        "update acknowledged"
                    );
                    self.status.send_modify(|s| {
                        s.last_ack_version = Some(ack.version);
                        s.last_ack_revision = Some(ack.revision);
                        s.pending_version = None;
                        s.acked_endpoints = f.set.len();
                    });
                    st.base = Some(f.set);
                    st.rejected = None;
                }
                None => tracing::warn!(
                    cluster,
                    controller,
                    version = ack.version,
                    "ack for a version not in flight; ignored"
                ),
            },
            Some(In::Nack(nack)) => match st.in_flight.take_if(|f| f.version == nack.version) {
                Some(f) => {
                    tracing::error!(
                        cluster,
                        controller,
                        version = nack.version,
                        reason = %nack.reason,
                        "controller refused the endpoint update; it keeps the last acknowledged set"
                    );
                    self.status.send_modify(|s| s.pending_version = None);
                    st.rejected = Some(f.set);
                }
                None => {
                    tracing::warn!(cluster, controller, version = nack.version, reason = %nack.reason, "nack for a version not in flight; ignored")
                }
            },
            Some(In::Superseded(s)) => return Some(End::Superseded(s.by_session)),
            Some(In::Welcome(_)) => {
                tracing::debug!(cluster, controller, "repeated Welcome ignored")
            }
            None => tracing::debug!(cluster, controller, "empty controller message ignored"),
        }
        None
    }
}

/// The URI of a `--controllers` entry (`host:port` or a URI).
pub(super) fn uri(controller: &str) -> String {
    if controller.contains("://") {
        controller.to_string()
    } else {
        format!("http://{controller}")
    }
}

/// `e: cause: cause`, for transport errors whose Display says only "transport error".
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // hyper and tonic often repeat their cause in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}
