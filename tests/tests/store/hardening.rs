//! Properties from hardening the replicated store: nothing but agents'
//! kinds enters through the agents' peer-port lane, whatever is sent there.

use meridian_proto::v1 as pb;
use meridian_proto::v1::internal_service_client::InternalServiceClient;
use meridian_tests::{Cluster, ClusterOpts};
use tonic::transport::Channel;

use super::support::*;

/// Just enough of bincode 2's standard encoding (what the peer wire speaks
/// after its version byte) to write a store transaction by hand, as a peer
/// that is not a Meridian node could.
#[derive(Default)]
struct Bincode(Vec<u8>);

impl Bincode {
    fn varint(&mut self, n: u64) -> &mut Self {
        match n {
            0..=250 => self.0.push(n as u8),
            251..=0xFFFF => {
                self.0.push(251);
                self.0.extend_from_slice(&(n as u16).to_le_bytes());
            }
            0x1_0000..=0xFFFF_FFFF => {
                self.0.push(252);
                self.0.extend_from_slice(&(n as u32).to_le_bytes());
            }
            _ => {
                self.0.push(253);
                self.0.extend_from_slice(&n.to_le_bytes());
            }
        }
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// `[WIRE_VERSION] Txn { request_id, ops: [Put { kind/name, value, None }] }`.
fn agent_txn_put(request_id: &str, kind: &str, name: &str, value: &[u8]) -> pb::RaftMessage {
    let mut b = Bincode(vec![1]);
    b.bytes(request_id.as_bytes()).varint(1); // one op
    b.varint(0).bytes(kind.as_bytes()).bytes(name.as_bytes()); // Put, key
    b.bytes(value).varint(0); // value, expected_revision: None
    pb::RaftMessage {
        payload: b.0,
        from: 1,
    }
}

async fn internal_client(c: &Cluster, id: u64) -> InternalServiceClient<Channel> {
    let addr = format!("http://127.0.0.1:{}", c.node(id).ports.peer);
    InternalServiceClient::new(Channel::from_shared(addr).unwrap().connect().await.unwrap())
        .max_encoding_message_size(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_txn_on_the_peer_port_refuses_config_kinds_and_oversized_txns() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let rev = put_service(&c, 1, "before", 8080).await.unwrap();
    let mut internal = internal_client(&c, 1).await;
    let big = vec![b' '; 9 * 1024 * 1024];
    let cases = [
        (
            "a config kind",
            agent_txn_put("peer-1", "service", "x", br#"{"port":1}"#),
            "service",
        ),
        (
            "an unknown kind",
            agent_txn_put("peer-2", "widget", "x", b"{}"),
            "widget",
        ),
        (
            "an oversized txn",
            agent_txn_put("peer-3", "endpoints", "c.web", &big),
            "bytes",
        ),
    ];
    for (what, msg, needle) in cases {
        let status = internal
            .agent_txn(msg)
            .await
            .expect_err(&format!("AgentTxn with {what} must be refused"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains(needle),
            "{what}: {}",
            status.message()
        );
    }
    let mut config = c.config(1).await;
    let err = config
        .get(pb::GetRequest {
            key: Some(pb::ObjectKey {
                kind: "service".into(),
                name: "x".into(),
            }),
            consistency: 0,
        })
        .await
        .expect_err("service/x was never written");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let (_, now) = list_names(&c, 1, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(now, rev, "a refused AgentTxn changed the revision");
}
