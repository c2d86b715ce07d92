//! Streams from an agent that misbehaves (any cluster, right or wrong
//! token, hello twice or never, versions going backwards, endpoints with
//! odd addresses, ports, weights, zones, health values and service names,
//! huge or empty sets, removals of what was never there) against a real
//! single-node controller started in process, over its real gRPC agent
//! API: the controller may NACK, refuse or end a stream, never panic
//! (libFuzzer's panic hook turns a panic in any of its tasks into a
//! crash), and it keeps committing.
#![no_main]

#[path = "script.rs"]
mod script;

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use script::Script;
use meridian_node::{Node, NodeConfig, NodeHandle};
use meridian_proto::v1 as pb;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The registered cluster's token and its SHA-256, as `clusters add` stores it.
const TOKEN: &str = "mrd_fuzz";
const TOKEN_SHA256: &str = "1968c3f11952b9ee1db87e3c9e0e0b2b176fdea6cb09391d4a6f17031c9ba1bf";
const CLUSTERS: [&str; 4] = ["fuzz-a", "fuzz-b", "", "Not A Name"];
const SERVICES: [&str; 5] = ["web", "api", "", "-x", "web"];
const ADDRESSES: [&str; 8] = [
    "10.0.0.1", "10.0.0.2", "::1", "", "999.1.1.1", "localhost", "10.0.0.1 ", "0.0.0.0",
];

struct Fixture {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    _node: NodeHandle,
    _dir: std::path::PathBuf,
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("meridian-fuzz-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let api = free_addr();
    let config: NodeConfig = serde_json::from_value(serde_json::json!({
        "node_id": 1,
        "region": "us-east",
        "data_dir": dir,
        "listen": {"peer": free_addr(), "api": api, "xds": free_addr(), "admin": free_addr()},
        "bootstrap": true,
        "write_timeout_ms": 2000,
    }))
    .expect("node config");
    let node = rt.block_on(Node::start(config)).expect("start the fuzzed controller");
    let channel = rt.block_on(async {
        let ch = Channel::from_shared(format!("http://{api}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the fuzzed controller");
        // Registers fuzz-a once it leads (a write fails until then).
        let spec = serde_json::json!({"region": "us-east", "tokenSha256": TOKEN_SHA256, "leaseTtl": "30s"});
        for _ in 0..200 {
            let put = pb::TxnRequest {
                request_id: "fuzz-register".into(),
                ops: vec![pb::TxnOp {
                    op: Some(pb::txn_op::Op::Put(pb::PutOp {
                        key: Some(pb::ObjectKey { kind: "cluster".into(), name: "fuzz-a".into() }),
                        value: serde_json::to_vec(&spec).expect("json"),
                        expected_revision: None,
                    })),
                }],
                dry_run: false,
            };
            if ConfigServiceClient::new(ch.clone()).txn(put).await.is_ok() {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the fuzzed controller never accepted the cluster's registration");
    });
    Fixture { rt, channel, _node: node, _dir: dir }
});

impl Script<'_> {
    fn pick<'s>(&mut self, from: &[&'s str]) -> String {
        let b = self.byte();
        match from.get(usize::from(b) % (from.len() + 1)) {
            Some(s) => s.to_string(),
            // Some bytes of the input, odd characters included.
            None => String::from_utf8_lossy(&[self.byte(), self.byte(), b]).into_owned(),
        }
    }
    fn endpoints(&mut self) -> Vec<pb::AgentEndpoint> {
        // Now and then a set far larger than any agent sends.
        let n = match self.byte() {
            255 => 2_000,
            b => usize::from(b % 6),
        };
        (0..n)
            .map(|i| pb::AgentEndpoint {
                service: self.pick(&SERVICES),
                address: if n > 6 { format!("10.1.{}.{}", i / 250, i % 250) } else { self.pick(&ADDRESSES) },
                port: [0, 80, 8080, 65535, 65536, u32::MAX][usize::from(self.byte() % 6)],
                zone: ["", "z1", &"z".repeat(64)][usize::from(self.byte() % 3)].to_string(),
                weight: [0, 1, 128, 129, u32::MAX][usize::from(self.byte() % 5)],
                health: i32::from(self.byte() % 6) - 1,
            })
            .collect()
    }
    fn message(&mut self, version: &mut u64) -> pb::AgentMessage {
        let msg = match self.byte() % 4 {
            0 => pb::agent_message::Msg::Hello(pb::AgentHello {
                cluster: self.pick(&CLUSTERS),
                region: ["us-east", "", "eu-west"][usize::from(self.byte() % 3)].into(),
                zone: String::new(),
                token: [TOKEN, "", "mrd_wrong"][usize::from(self.byte() % 3)].into(),
                session: ["s1", "s2", "", &"s".repeat(200)][usize::from(self.byte() % 4)].to_string(),
                agent: "fuzz".into(),
            }),
            1 | 2 => {
                *version = match self.byte() % 4 {
                    0 => 0,
                    1 => version.saturating_sub(1),
                    2 => u64::MAX,
                    _ => *version + 1,
                };
                pb::agent_message::Msg::Update(pb::EndpointUpdate {
                    version: *version,
                    replace: self.byte() % 2 == 0,
                    upserts: self.endpoints(),
                    removals: self.endpoints(),
                })
            }
            _ => pb::agent_message::Msg::Heartbeat(pb::AgentHeartbeat {}),
        };
        pb::AgentMessage { msg: (self.byte() % 16 != 0).then_some(msg) }
    }
}

/// A well-formed hello for the registered cluster, so that most inputs get
/// past the token check to the update handling.
fn good_hello(session: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            cluster: "fuzz-a".into(),
            region: "us-east".into(),
            zone: String::new(),
            token: TOKEN.into(),
            session: session.into(),
            agent: "fuzz".into(),
        })),
    }
}

/// Most messages one input sends.
const MAX_MESSAGES: usize = 64;

/// One stream: every message of the script queued before the call (the
/// controller reads the hello before it answers the call), then every
/// answer read until the controller ends the stream.
async fn stream(ch: Channel, s: &mut Script<'_>) {
    let mut msgs = Vec::new();
    if s.byte() % 4 != 0 {
        msgs.push(good_hello(&format!("good-{}", s.byte() % 3)));
    }
    let mut version = 0;
    while msgs.len() < MAX_MESSAGES && s.next().is_some() {
        msgs.push(s.message(&mut version));
    }
    let (tx, rx) = mpsc::channel(msgs.len().max(1));
    for m in msgs {
        let _ = tx.try_send(m);
    }
    // The agent goes away after its last message: the stream ends.
    drop(tx);
    let mut client = AgentServiceClient::new(ch);
    let call = client.report(ReceiverStream::new(rx));
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), call).await else {
        return;
    };
    let mut inbound = resp.into_inner();
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_secs(5), inbound.message()).await
    {}
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let mut s = Script(data.iter());
    f.rt.block_on(stream(f.channel.clone(), &mut s));
});
