//! Property: no input on the peer listener can hurt a node. Malformed,
//! truncated, wrong-version and oversized messages, and length prefixes that
//! claim huge sizes, are answered with an error; every node stays healthy,
//! keeps its data and keeps taking writes.

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};
use tokio::io::AsyncWriteExt;

use super::support::*;

/// bincode's varint marker for "a u64 follows", then u64::MAX.
const HUGE_LEN: [u8; 9] = [0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Payloads that no honest peer sends, each with what it stands for.
fn bad_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge_after_vote = vec![1, 1, 1, 0]; // version, vote (term 1, node 1, not committed)
    huge_after_vote.extend_from_slice(&[0, 0, 0, 0]);
    huge_after_vote.extend_from_slice(&HUGE_LEN);
    let mut huge = vec![1];
    huge.extend_from_slice(&HUGE_LEN);
    let mut garbage = vec![1];
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        garbage.push((x >> 24) as u8);
    }
    vec![
        ("empty", vec![]),
        ("unknown wire version", vec![99, 1, 2, 3]),
        ("a huge length prefix", huge),
        ("a huge string length after a vote", huge_after_vote),
        ("a truncated frame", vec![1, 0xFD, 0xFF]),
        ("random bytes", garbage),
    ]
}

async fn assert_healthy(c: &Cluster, ids: &[u64], why: &str) {
    for id in ids {
        let (code, _) = meridian_tests::cluster::http_get(&c.node(*id).admin_url("/healthz"))
            .await
            .unwrap_or_else(|e| panic!("node {id} after {why}: /healthz unreachable: {e}"));
        assert_eq!(code, 200, "node {id} after {why}: /healthz");
        assert!(c.node(*id).is_running(), "node {id} died after {why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_peer_messages_hurt_no_node() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    put_service(&c, leader, "before", 8080).await.unwrap();
    let ids = [1, 2, 3];

    for target in ids {
        let mut raft = raft_client(&c, target).await;
        let mut internal = internal_client(&c, target).await;
        for (what, payload) in bad_payloads() {
            let msg = || pb::RaftMessage {
                payload: payload.clone(),
                from: 99,
                ..Default::default()
            };
            let answers = [
                (
                    "AppendEntries",
                    raft.append_entries(msg()).await.map(|_| ()),
                ),
                ("Vote", raft.vote(msg()).await.map(|_| ())),
                (
                    "InstallSnapshot",
                    raft.install_snapshot(msg()).await.map(|_| ()),
                ),
                ("AgentTxn", internal.agent_txn(msg()).await.map(|_| ())),
            ];
            for (rpc, answer) in answers {
                let status =
                    answer.expect_err(&format!("{rpc} with {what} to node {target} must fail"));
                assert_eq!(
                    status.code(),
                    tonic::Code::InvalidArgument,
                    "{rpc} with {what} to node {target}: {status:?}"
                );
            }
        }
        // Above the listener's message cap: refused by the transport, not read.
        let oversized = pb::RaftMessage {
            payload: vec![1; 65 * 1024 * 1024],
            from: 99,
            ..Default::default()
        };
        let status = raft
            .append_entries(oversized)
            .await
            .expect_err("oversized message refused");
        assert_ne!(status.code(), tonic::Code::Ok);
        assert_healthy(&c, &ids, &format!("bad messages to node {target}")).await;
    }

    // Bytes that are not HTTP/2 at all, on every port.
    for target in ids {
        let p = c.node(target).ports;
        for port in [p.peer, p.api, p.xds, p.admin] {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let _ = s.write_all(&[0xFF; 4096]).await;
                let _ = s
                    .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\xFF\xFF\xFF\x00\x00")
                    .await;
            }
        }
    }
    assert_healthy(&c, &ids, "junk on every port").await;

    // Data kept, writes still taken, through every node.
    let leader = c.wait_leader().await;
    let (names, _) = list_names(&c, leader, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert!(names.contains("before"), "{names:?}");
    for id in ids {
        put_service(&c, id, &format!("after-{id}"), 9000 + id as u16)
            .await
            .unwrap();
    }
}
