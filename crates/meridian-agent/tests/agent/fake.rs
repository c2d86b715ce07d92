//! A fake AgentService on 127.0.0.1:0 whose every stream the test drives by
//! hand: it reads what the agent sends and answers what it wants. Next to it,
//! the cluster API's GetNodeStatus answers whether the controller is ready,
//! as the test decides, for the agent's failback probes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use meridian_proto::v1::agent_message::Msg as Out;
use meridian_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use meridian_proto::v1::cluster_service_server::{ClusterService, ClusterServiceServer};
use meridian_proto::v1::controller_message::Msg as In;
use meridian_proto::v1::{
    AddNodeRequest, AddNodeResponse, AgentAck, AgentHello, AgentMessage, AgentNack,
    AgentSuperseded, AgentWelcome, ClusterStatusRequest, ClusterStatusResponse, ControllerMessage,
    EndpointUpdate, InitRequest, InitResponse, NodeInfo, NodeStatus, NodeStatusRequest,
    ProxyConfigRequest, ProxyConfigResponse, ProxyStatusRequest, ProxyStatusResponse,
    RemoveNodeRequest, RemoveNodeResponse, SnapshotChunk, SnapshotRequest,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(5);

/// One stream the agent opened.
pub struct FakeStream {
    incoming: Streaming<AgentMessage>,
    outgoing: mpsc::UnboundedSender<Result<ControllerMessage, Status>>,
    /// Heartbeats seen while waiting for other messages.
    pub heartbeats: usize,
}

struct Svc {
    streams: mpsc::UnboundedSender<FakeStream>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Svc {
    type ReportStream = Answers;

    async fn report(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Answers>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.streams.send(FakeStream {
            incoming: request.into_inner(),
            outgoing: tx,
            heartbeats: 0,
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// What GetNodeStatus answers.
struct Readiness {
    region: String,
    ready: AtomicBool,
    asked: AtomicUsize,
}

struct StatusSvc(Arc<Readiness>);

type Chunks = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterService for StatusSvc {
    type SnapshotStream = Chunks;

    async fn get_node_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        self.0.asked.fetch_add(1, Ordering::SeqCst);
        let ready = self.0.ready.load(Ordering::SeqCst);
        Ok(Response::new(NodeStatus {
            node: Some(NodeInfo {
                region: self.0.region.clone(),
                ..NodeInfo::default()
            }),
            ready,
            not_ready_reason: if ready { "" } else { "no leader known" }.into(),
            ..NodeStatus::default()
        }))
    }

    async fn init(&self, _: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn add_node(
        &self,
        _: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn remove_node(
        &self,
        _: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Chunks>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_proxy_status(
        &self,
        _: Request<ProxyStatusRequest>,
    ) -> Result<Response<ProxyStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_proxy_config(
        &self,
        _: Request<ProxyConfigRequest>,
    ) -> Result<Response<ProxyConfigResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

pub struct FakeController {
    pub addr: SocketAddr,
    streams: mpsc::UnboundedReceiver<FakeStream>,
    stop: Option<oneshot::Sender<()>>,
    readiness: Arc<Readiness>,
}

impl FakeController {
    /// A ready controller of region "eu", the test agents' region.
    pub async fn start() -> Self {
        Self::start_in("eu").await
    }

    /// A ready controller of `region`.
    pub async fn start_in(region: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, streams) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let readiness = Arc::new(Readiness {
            region: region.into(),
            ready: AtomicBool::new(true),
            asked: AtomicUsize::new(0),
        });
        let status = StatusSvc(readiness.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(Svc { streams: tx }))
                .add_service(ClusterServiceServer::new(status))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            streams,
            stop: Some(stop),
            readiness,
        }
    }

    /// What GetNodeStatus says from now on.
    pub fn set_ready(&self, ready: bool) {
        self.readiness.ready.store(ready, Ordering::SeqCst);
    }

    /// GetNodeStatus calls so far.
    pub fn probes(&self) -> usize {
        self.readiness.asked.load(Ordering::SeqCst)
    }

    /// Asserts that the agent opens no stream for `d`.
    pub async fn must_accept_nothing_for(&mut self, d: Duration) {
        if let Ok(Some(_)) = tokio::time::timeout(d, self.streams.recv()).await {
            panic!("the agent opened an unexpected stream");
        }
    }

    /// The next stream the agent opens.
    pub async fn must_accept(&mut self) -> FakeStream {
        tokio::time::timeout(WAIT, self.streams.recv())
            .await
            .expect("the agent opens a stream within 5s")
            .unwrap()
    }

    /// The next stream, past its Hello, welcomed by controller
    /// `controller_id` of region eu.
    pub async fn must_accept_welcomed(&mut self, controller_id: u64, heartbeat_interval_ms: u64) -> FakeStream {
        let mut s = self.must_accept().await;
        s.must_hello().await;
        s.welcome(controller_id, heartbeat_interval_ms);
        s
    }

    /// Stops listening (streams already open are ended by the test).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl FakeStream {
    /// The next message, heartbeats included.
    pub async fn must_recv(&mut self) -> Out {
        let m = tokio::time::timeout(WAIT, self.incoming.message())
            .await
            .expect("a message within 5s")
            .expect("stream ok")
            .expect("stream open");
        m.msg.expect("message has a body")
    }

    pub async fn must_hello(&mut self) -> AgentHello {
        match self.must_recv().await {
            Out::Hello(h) => h,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    /// The next update, counting heartbeats on the way.
    pub async fn must_update(&mut self) -> EndpointUpdate {
        loop {
            match self.must_recv().await {
                Out::Update(u) => return u,
                Out::Heartbeat(_) => self.heartbeats += 1,
                Out::Hello(h) => panic!("unexpected Hello {h:?}"),
            }
        }
    }

    /// Waits until the agent closes its side of the stream (heartbeats
    /// before that are counted), then closes this side as a controller does.
    pub async fn must_be_closed(mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.incoming.message())
                .await
                .expect("the agent closes the stream within 5s")
            {
                Ok(Some(AgentMessage {
                    msg: Some(Out::Heartbeat(_)),
                })) => self.heartbeats += 1,
                Ok(None) => return,
                other => panic!("expected the stream to end, got {other:?}"),
            }
        }
    }

    /// Asserts that nothing but heartbeats arrives for `d`.
    pub async fn must_send_no_update_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.message()).await {
                Err(_) => return,
                Ok(Ok(Some(AgentMessage {
                    msg: Some(Out::Heartbeat(_)),
                }))) => self.heartbeats += 1,
                Ok(other) => panic!("expected only heartbeats, got {other:?}"),
            }
        }
    }

    fn send(&self, msg: In) {
        self.outgoing
            .send(Ok(ControllerMessage { msg: Some(msg) }))
            .unwrap();
    }

    pub fn welcome(&self, controller_id: u64, heartbeat_interval_ms: u64) {
        self.welcome_from("eu", controller_id, heartbeat_interval_ms);
    }

    pub fn welcome_from(&self, region: &str, controller_id: u64, heartbeat_interval_ms: u64) {
        self.send(In::Welcome(AgentWelcome {
            controller_id,
            controller_region: region.into(),
            lease_ttl_ms: 10_000,
            heartbeat_interval_ms,
        }));
    }

    pub fn ack(&self, version: u64) {
        self.send(In::Ack(AgentAck {
            version,
            revision: 100 + version,
        }));
    }

    pub fn nack(&self, version: u64, reason: &str) {
        self.send(In::Nack(AgentNack {
            version,
            reason: reason.into(),
        }));
    }

    pub fn supersede(&self, by_session: &str) {
        self.send(In::Superseded(AgentSuperseded {
            by_session: by_session.into(),
        }));
    }

    /// Ends the stream with an error, as a crashing controller would.
    pub fn fail(self) {
        let _ = self
            .outgoing
            .send(Err(Status::unavailable("controller going away")));
    }
}
