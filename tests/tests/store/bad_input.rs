//! Property: bad input gets a clear gRPC error naming the field and the
//! reason, and changes nothing (the global revision stays put).

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};

use super::support::*;

fn txn(ops: Vec<pb::TxnOp>) -> pb::TxnRequest {
    pb::TxnRequest {
        request_id: String::new(),
        ops,
        dry_run: false,
    }
}

fn raw_put(kind: &str, name: &str, value: &[u8]) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: Some(pb::ObjectKey {
                kind: kind.into(),
                name: name.into(),
            }),
            value: value.to_vec(),
            expected_revision: None,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let rev = put_service(&c, 1, "existing", 8080).await.unwrap();
    let mut client = c.config(2).await;

    let big = format!(
        r#"{{"port": 80, "failover": {{"regions": ["{}"]}}}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(pb::TxnRequest, tonic::Code, &str)> = vec![
        (txn(vec![]), tonic::Code::InvalidArgument, "at least one"),
        (
            txn(vec![pb::TxnOp { op: None }]),
            tonic::Code::InvalidArgument,
            "ops[0]",
        ),
        (
            txn(vec![raw_put("", "x", b"{}")]),
            tonic::Code::InvalidArgument,
            "ops[0].put.key.kind",
        ),
        (
            txn(vec![raw_put("service", "", b"{}")]),
            tonic::Code::InvalidArgument,
            "ops[0].put.key.name",
        ),
        (
            txn(vec![raw_put("widget", "x", br#"{"port":1}"#)]),
            tonic::Code::InvalidArgument,
            "unknown kind",
        ),
        (
            txn(vec![raw_put("service", "Bad_Name", br#"{"port":1}"#)]),
            tonic::Code::InvalidArgument,
            "Bad_Name",
        ),
        (
            txn(vec![raw_put("service", "x", b"{not json")]),
            tonic::Code::InvalidArgument,
            "service/x",
        ),
        (
            txn(vec![raw_put("service", "x", br#"{"port":1,"prot":2}"#)]),
            tonic::Code::InvalidArgument,
            "did you mean",
        ),
        (
            txn(vec![raw_put("service", "huge", big.as_bytes())]),
            tonic::Code::InvalidArgument,
            "bytes",
        ),
        (
            txn(vec![put_op(
                "service",
                "existing",
                service(9),
                Some(rev + 100),
            )]),
            tonic::Code::FailedPrecondition,
            "service/existing: expected revision",
        ),
        (
            txn(vec![put_op("service", "existing", service(9), Some(0))]),
            tonic::Code::FailedPrecondition,
            "already exists",
        ),
        // Atomicity: one bad op fails the whole transaction.
        (
            txn(vec![
                put_op("service", "fine", service(1), None),
                raw_put("service", "x", br#"{"port":"no"}"#),
            ]),
            tonic::Code::InvalidArgument,
            "service/x",
        ),
    ];
    for (req, code, needle) in cases {
        let err = client
            .txn(req.clone())
            .await
            .expect_err(&format!("{req:?} should fail"));
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{:?}: message {:?} should contain {needle:?}",
            req.ops.first(),
            err.message()
        );
    }
    let (names, now) = list_names(&c, 1, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(now, rev, "bad input changed the revision");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["existing".to_string()]
    );

    // Reads of missing objects and bad keys.
    let err = client
        .get(get_request("service", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("service/nope"));
    let err = client
        .get(pb::GetRequest {
            key: None,
            consistency: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A referenced object cannot be deleted; the error lists the referrers.
    let route = serde_json::json!({"hosts": ["example.com"], "rules": [{"backends": [{"service": "existing"}]}]});
    c.config(1)
        .await
        .txn(txn(vec![put_op("route", "r", route, None)]))
        .await
        .expect("valid route");
    let del = pb::TxnOp {
        op: Some(pb::txn_op::Op::Delete(pb::DeleteOp {
            key: Some(pb::ObjectKey {
                kind: "service".into(),
                name: "existing".into(),
            }),
            expected_revision: None,
        })),
    };
    let err = client.txn(txn(vec![del])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("route/r"), "{}", err.message());
}

/// Property: a data dir cannot be started as another node or region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_refuses_another_identity() {
    let mut c = Cluster::start(1, ClusterOpts::default()).await;
    c.stop(1);
    let n = c.node(1);
    let out = std::process::Command::new(meridian_tests::meridian_bin())
        .args(["server", "--insecure", "--node-id", "7", "--region", "us-east"])
        .arg("--data-dir")
        .arg(&n.data_dir)
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--xds-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to node 1"), "{err}");
}

/// Property: SIGTERM shuts a node down cleanly (exit 0) and it restarts on
/// the same data dir with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_data_survives() {
    let mut c = Cluster::start(1, ClusterOpts::default()).await;
    put_service(&c, 1, "kept", 8080).await.unwrap();
    assert_eq!(c.stop(1), Some(0), "clean exit on SIGTERM");
    c.spawn(1);
    c.wait_leader().await;
    let (names, _) = list_names(&c, 1, pb::Consistency::Linearizable)
        .await
        .unwrap();
    assert!(names.contains("kept"));
}

/// Property: a server started with bad settings refuses to start and names
/// the setting and the reason.
#[test]
fn bad_server_settings_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["server", "--node-id", "1", "--api-listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let cases: &[(&[&str], &str)] = &[
        (&["--region", "Bad_Region"], "region"),
        (&["--region", "us-east", "--raft-profile", "moon"], "--raft-profile"),
        (&["--region", "us-east", "--xds-debounce", "500ms", "--xds-debounce-max", "100ms"], "xds.debounce_max_ms"),
        (&["--region", "us-east", "--xds-debounce-max-endpoints", "0s"], "xds.debounce_max_endpoints_ms"),
        (&["--region", "us-east", "--snapshot-logs", "3"], "snapshot_logs"),
    ];
    for (extra, field) in cases {
        let out = std::process::Command::new(meridian_tests::meridian_bin())
            .args(base)
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .args(*extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} should be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{extra:?}: error should name {field}: {err}");
    }
    assert!(!dir.path().join("d").join("identity.json").exists(), "a refused start wrote to the data dir");
}
