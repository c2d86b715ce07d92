//! Property: a secret's private key never leaves the cluster through the
//! API (get, list, watch) and never appears in a node's log.

use meridian_proto::v1 as pb;
use meridian_tests::{workspace_root, Cluster, ClusterOpts};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_are_redacted_in_reads_watches_and_logs() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let cert = std::fs::read_to_string(workspace_root().join("examples/example-cert.pem")).unwrap();
    let key = std::fs::read_to_string(workspace_root().join("examples/example-key.pem")).unwrap();
    let key_body = key.lines().nth(1).unwrap().to_string();
    let mut client = c.config(1).await;
    let mut watch = client.watch(pb::WatchRequest { from_revision: 0, kind: String::new() }).await.unwrap().into_inner();
    let spec = serde_json::json!({"certificateChain": cert, "privateKey": key});
    client
        .txn(pb::TxnRequest { request_id: "s1".into(), ops: vec![put_op("secret", "tls", spec, None)], dry_run: false })
        .await
        .expect("a valid secret is accepted");

    let got = client
        .get(get_request("secret", "tls"))
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    let text = String::from_utf8_lossy(&got.value).to_string();
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains(&key_body) && !text.contains("PRIVATE KEY"), "get leaks the key: {text}");
    assert!(text.contains("BEGIN CERTIFICATE"), "the certificate is public and shown");

    let list = client.list(pb::ListRequest { kind: "secret".into(), consistency: 0 }).await.unwrap().into_inner();
    assert!(!String::from_utf8_lossy(&list.objects[0].value).contains(&key_body));

    let mut seen = false;
    while !seen {
        let msg = watch.message().await.unwrap().unwrap();
        for e in msg.events {
            if e.key.unwrap().kind == "secret" {
                assert!(!String::from_utf8_lossy(&e.value).contains(&key_body), "watch leaks the key");
                seen = true;
            }
        }
    }
    let out = c.cli(&["get", "secret", "tls", "-o", "yaml"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key_body));
    assert!(!c.log_of(1).contains(&key_body), "the node log contains the key");
}
