//! Mutual TLS and authorization, black-box, on clusters of real `meridian`
//! processes started with TLS by the test kit (`ClusterOpts::tls`): every
//! listener refuses callers without a certificate, from another CA, with
//! an expired certificate or of the wrong identity type, and lets the
//! right one in; operators' roles decide what they may call; certificates
//! rotate on disk while streams and writes go on; `meridian server`
//! refuses to run without TLS unless told `--insecure`; a real Envoy gets
//! its config over mutual TLS from `meridian bootstrap --tls-*`, and an
//! xDS stream views only as the proxy group its certificate names, so
//! another group's secrets never reach it.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use meridian_pki::{Identity, Role, Validity};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_proto::v1::config_service_client::ConfigServiceClient;
use meridian_proto::v1::raft_service_client::RaftServiceClient;
use meridian_tests::envoy::{wait_all_ok, Envoy};
use meridian_tests::http::http_get;
use meridian_tests::ops::{edge_ops, put_op};
use meridian_tests::pki::{foreign, Pki};
use meridian_tests::upstream::Upstream;
use meridian_tests::{eventually, meridian_bin, show, Cluster, ClusterOpts};
use meridian_tls::{Connector, Expect, TlsFiles};
use meridian_xds::testing::{names, node, SotwClient};
use meridian_xds::types::{LISTENER, SECRET};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

fn tls_opts() -> ClusterOpts {
    ClusterOpts {
        tls: true,
        ..ClusterOpts::default()
    }
}

fn operator(name: &str, role: Role) -> Identity {
    Identity::Operator {
        name: name.into(),
        role,
    }
}

/// What a call got: no further than the handshake, or an answer of the
/// service (or of the authorization in front of it).
#[derive(Debug, PartialEq)]
enum Outcome {
    Refused(String),
    Answered(Code),
}

async fn channel(addr: &str, connector: Connector) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))
}

fn outcome<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
    match r {
        Ok(_) => Outcome::Answered(Code::Ok),
        // The TLS layer cut the connection: tonic reports the transport.
        Err(st)
            if matches!(
                st.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) =>
        {
            Outcome::Refused(format!("{st:?}"))
        }
        Err(st) => Outcome::Answered(st.code()),
    }
}

#[derive(Clone, Copy, Debug)]
enum Port {
    Peer,
    Api,
    Xds,
}

/// One representative call on `port` of node 1: a Raft vote (an empty
/// payload, which the service refuses as INVALID_ARGUMENT once past TLS),
/// a config write, a CSDS fetch.
async fn call(c: &Cluster, port: Port, connector: Connector) -> Outcome {
    let ports = c.node(1).ports;
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let ch = match port {
        Port::Peer => channel(&addr(ports.peer), connector).await,
        Port::Api => channel(&addr(ports.api), connector).await,
        Port::Xds => channel(&addr(ports.xds), connector).await,
    };
    let ch = match ch {
        Ok(ch) => ch,
        Err(e) => return Outcome::Refused(e),
    };
    match port {
        Port::Peer => outcome(
            RaftServiceClient::new(ch)
                .vote(pb::RaftMessage {
                    payload: vec![],
                    from: 2,
                    ..Default::default()
                })
                .await,
        ),
        Port::Api => outcome(
            ConfigServiceClient::new(ch)
                .txn(pb::TxnRequest {
                    request_id: String::new(),
                    ops: vec![put_service("intruder", 81)],
                    dry_run: false,
                })
                .await,
        ),
        Port::Xds => outcome(
            ClientStatusDiscoveryServiceClient::new(ch)
                .fetch_client_status(ClientStatusRequest::default())
                .await,
        ),
    }
}

fn put_service(name: &str, port: u16) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: Some(pb::ObjectKey {
                kind: "service".into(),
                name: name.into(),
            }),
            value: serde_json::to_vec(&serde_json::json!({ "port": port })).unwrap(),
            expected_revision: None,
        })),
    }
}

fn with(pki: &Pki, files: &TlsFiles) -> Connector {
    Connector::new(
        pki.client(files).expect("load client cert"),
        Expect::AnyNode,
    )
}

async fn service_names(c: &Cluster) -> Vec<String> {
    let r = c
        .config(1)
        .await
        .list(pb::ListRequest {
            kind: "service".into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .expect("list as the kit's admin")
        .into_inner();
    r.objects.into_iter().map(|o| o.name).collect()
}

async fn metric(c: &Cluster, id: u64, prefix: &str) -> Vec<(String, f64)> {
    let (_, body) = http_get(&c.node(id).admin_url("/metrics"))
        .await
        .expect("/metrics");
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_listener_refuses_strangers_and_wrong_identities_and_lets_the_right_one_in() {
    let c = Cluster::start(3, tls_opts()).await;
    let pki = c.pki().expect("a TLS cluster has a PKI");

    for (port, right, wrong) in [
        (
            Port::Peer,
            Identity::Node { id: 2 },
            operator("mallory", Role::Admin),
        ),
        (
            Port::Api,
            operator("ada", Role::Admin),
            Identity::Proxy {
                group: "edge".into(),
            },
        ),
        (
            Port::Xds,
            Identity::Proxy {
                group: "edge".into(),
            },
            operator("mallory", Role::Admin),
        ),
    ] {
        let stranger = call(&c, port, pki.anonymous()).await;
        assert!(
            matches!(stranger, Outcome::Refused(_)),
            "{port:?}, no certificate: {stranger:?}"
        );

        let other_dir = c.dir().join(format!("other-ca-{port:?}"));
        let foreign_files = foreign(pki, &other_dir, right.clone()).unwrap();
        let foreigner = call(&c, port, with(pki, &foreign_files)).await;
        assert!(
            matches!(foreigner, Outcome::Refused(_)),
            "{port:?}, another CA: {foreigner:?}"
        );

        let expired = pki.issue_expired(right.clone()).unwrap();
        let late = call(&c, port, with(pki, &expired)).await;
        assert!(
            matches!(late, Outcome::Refused(_)),
            "{port:?}, expired: {late:?}"
        );

        let wrong_files = pki.issue(wrong.clone(), Validity::leaf_default()).unwrap();
        let wrong_type = call(&c, port, with(pki, &wrong_files)).await;
        assert!(
            matches!(wrong_type, Outcome::Refused(_)),
            "{port:?}, {wrong} : {wrong_type:?}"
        );

        let right_files = match &right {
            Identity::Node { id } => pki.node(*id).unwrap(),
            _ => pki.issue(right.clone(), Validity::leaf_default()).unwrap(),
        };
        let ok = call(&c, port, with(pki, &right_files)).await;
        let want = match port {
            // Past TLS and the sender check: the empty vote is malformed.
            Port::Peer => Code::InvalidArgument,
            Port::Api | Port::Xds => Code::Ok,
        };
        assert_eq!(ok, Outcome::Answered(want), "{port:?} as {right}");
    }
    // The admin's write went in; none of the refused ones did (they would
    // have been the same object: only one write was let in).
    assert_eq!(service_names(&c).await, vec!["intruder".to_string()]);

    // A node speaks only for itself: node/3 may not send node 2's votes.
    let node3 = pki.node(3).unwrap();
    let as3 = call(&c, Port::Peer, with(pki, &node3)).await;
    assert_eq!(
        as3,
        Outcome::Answered(Code::PermissionDenied),
        "node/3 sending as node 2"
    );

    // An agent's certificate binds it to its cluster.
    let agent = pki
        .issue(
            Identity::Agent {
                cluster: "us-east".into(),
            },
            Validity::leaf_default(),
        )
        .unwrap();
    let ch = channel(&c.node(1).api_addr(), with(pki, &agent))
        .await
        .unwrap();
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            cluster: "eu-west".into(),
            region: "us-east".into(),
            token: "whatever".into(),
            session: "s1".into(),
            ..Default::default()
        })),
    };
    let st = meridian_proto::v1::agent_service_client::AgentServiceClient::new(ch)
        .report(tokio_stream::iter(vec![hello]))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("cluster/us-east"), "{st:?}");

    let refused = metric(&c, 1, "meridian_tls_handshakes_refused_total").await;
    for l in ["peer", "api", "xds"] {
        let n = refused
            .iter()
            .find(|(k, _)| k.contains(&format!("tls=\"{l}\"")))
            .map(|(_, v)| *v);
        assert!(
            n.is_some_and(|n| n >= 3.0),
            "{l}: refused handshakes {refused:?}"
        );
    }
    let expiry = metric(&c, 1, "meridian_tls_cert_expiry_seconds").await;
    assert!(
        expiry
            .iter()
            .any(|(k, v)| k.contains("identity=\"node/1\"") && *v > 300.0 * 86400.0),
        "{expiry:?}"
    );
}

fn cli_as(c: &Cluster, files: &TlsFiles, servers: &str, args: &[&str]) -> Output {
    Command::new(meridian_bin())
        .args(["--server", servers])
        .arg("--ca")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running meridian in {}: {e}", c.dir().display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_decide_what_an_operator_may_do_also_through_a_follower() {
    let c = Cluster::start(3, tls_opts()).await;
    let pki = c.pki().unwrap();
    let leader = c.wait_leader().await;
    let follower = c.a_follower(leader);
    let via_follower = c.node(follower).api_addr();
    let viewer = pki
        .issue(operator("vera", Role::Viewer), Validity::leaf_default())
        .unwrap();
    let editor = pki
        .issue(operator("ed", Role::Editor), Validity::leaf_default())
        .unwrap();
    let svc = c.dir().join("svc.yaml");
    std::fs::write(&svc, "kind: service\nname: web\nspec:\n  port: 80\n").unwrap();
    let svc = svc.to_str().unwrap();

    let o = cli_as(&c, &viewer, &via_follower, &["apply", "-f", svc]);
    assert_eq!(o.status.code(), Some(9), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("operator/viewer/vera") && err.contains("editor"),
        "{}",
        show(&o)
    );
    assert!(
        service_names(&c).await.is_empty(),
        "a viewer's write went in"
    );

    let o = cli_as(&c, &viewer, &via_follower, &["get", "service"]);
    assert_eq!(o.status.code(), Some(0), "a viewer reads: {}", show(&o));

    // Forwarded to the leader by the follower, as node/FOLLOWER.
    let o = cli_as(&c, &editor, &via_follower, &["apply", "-f", svc]);
    assert_eq!(o.status.code(), Some(0), "an editor writes: {}", show(&o));
    assert_eq!(service_names(&c).await, vec!["web".to_string()]);

    let o = cli_as(
        &c,
        &editor,
        &via_follower,
        &["cluster", "remove-node", &follower.to_string()],
    );
    assert_eq!(o.status.code(), Some(9), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("operator/editor/ed") && err.contains("admin"),
        "{}",
        show(&o)
    );
    let st = c.status(leader).await.unwrap();
    assert_eq!(st.voters.len(), 3, "an editor changed membership: {st:?}");

    // Registering an agent's cluster is a Txn, yet admin-only.
    let o = cli_as(
        &c,
        &editor,
        &via_follower,
        &["clusters", "add", "rogue", "--region", "us-east"],
    );
    assert_eq!(o.status.code(), Some(9), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("operator/editor/ed") && err.contains("admin"),
        "{}",
        show(&o)
    );
    let o = cli_as(
        &c,
        pki.admin(),
        &via_follower,
        &["clusters", "add", "honest", "--region", "us-east"],
    );
    assert_eq!(o.status.code(), Some(0), "an admin registers: {}", show(&o));
    let o = cli_as(
        &c,
        &editor,
        &via_follower,
        &["clusters", "list", "-o", "json"],
    );
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains("honest") && !listed.contains("rogue"),
        "{}",
        show(&o)
    );

    // Raw gRPC: PERMISSION_DENIED, naming who and what is missing.
    let ch = channel(&via_follower, with(pki, &editor)).await.unwrap();
    let st = ClusterServiceClient::new(ch)
        .remove_node(pb::RemoveNodeRequest { node_id: follower })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("operator/editor/ed"), "{st:?}");

    // The CLI without a certificate cannot talk to a TLS cluster at all.
    let o = Command::new(meridian_bin())
        .args(["--server", &via_follower, "get", "service"])
        .env_remove("MERIDIAN_CA")
        .env_remove("MERIDIAN_CERT")
        .env_remove("MERIDIAN_KEY")
        .env("MERIDIAN_CONFIG", c.dir().join("no-cli-config.yaml"))
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotate_on_disk_while_a_watch_and_writes_go_on() {
    let c = Cluster::start(3, tls_opts()).await;
    let pki = c.pki().unwrap();
    let before = metric(&c, 1, "meridian_tls_cert_expiry_seconds").await;

    let mut watch = c
        .config(1)
        .await
        .watch(pb::WatchRequest {
            from_revision: 0,
            kind: "service".into(),
        })
        .await
        .expect("watch")
        .into_inner();

    // A writer that opens a new connection (so a new handshake) per write.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let admin = pki.admin().clone();
        let addrs = c.api_addrs();
        tokio::spawn(async move {
            let source = meridian_tls::TlsSource::client(admin).unwrap();
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0u32;
            while !*stop_rx.borrow() {
                let addr = &addrs[i as usize % addrs.len()];
                let conn = Connector::new(source.clone(), Expect::AnyNode);
                let r = match channel(addr, conn).await {
                    Ok(ch) => ConfigServiceClient::new(ch)
                        .txn(pb::TxnRequest {
                            request_id: format!("rotation-{i}"),
                            ops: vec![put_service(
                                &format!("s{}", i % 20),
                                1000 + (i % 1000) as u16,
                            )],
                            dry_run: false,
                        })
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}")),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
                i += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop_rx.changed() => {}
                }
            }
            (ok, failed)
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    // A file that is not a certificate is refused and the old one stays.
    let node1 = pki.node(1).unwrap();
    let good = std::fs::read(&node1.cert).unwrap();
    std::fs::write(&node1.cert, b"not a certificate").unwrap();
    eventually(
        "node 1 counts the bad file",
        Duration::from_secs(30),
        || async {
            let f = metric(&c, 1, "meridian_tls_reload_failures_total").await;
            f.iter()
                .any(|(k, v)| k.contains("tls=\"api\"") && *v >= 1.0)
                .then_some(())
        },
    )
    .await;
    std::fs::write(&node1.cert, &good).unwrap();

    // Rotate every node's certificate to one valid for 30 days.
    for n in [1, 2, 3] {
        pki.rotate(
            Identity::Node { id: n },
            Validity::for_period(Duration::from_secs(30 * 86400)),
        )
        .unwrap();
    }
    let cr = &c;
    for n in [1u64, 2, 3] {
        eventually(
            &format!("node {n} serves the new certificate"),
            Duration::from_secs(30),
            || async move {
                let e = metric(cr, n, "meridian_tls_cert_expiry_seconds").await;
                let all_new = ["peer", "api", "xds", "client"].iter().all(|l| {
                    e.iter()
                        .any(|(k, v)| k.contains(&format!("tls=\"{l}\"")) && *v < 31.0 * 86400.0)
                });
                all_new.then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).unwrap();
    let (ok, failed) = writer.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} writes failed across the rotation: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 10, "only {ok} writes");

    // The watch opened before the rotation still streams.
    let mut ch = c.config(2).await;
    let rev = ch
        .txn(pb::TxnRequest {
            request_id: "after-rotation".into(),
            ops: vec![put_service("after-rotation", 9999)],
            dry_run: false,
        })
        .await
        .expect("a write after the rotation")
        .into_inner()
        .revision;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = watch.message().await.expect("the watch stream broke") {
            if msg.revision >= rev {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the watch opened before the rotation did not see the later write"
    );
    assert_ne!(
        before,
        metric(&c, 1, "meridian_tls_cert_expiry_seconds").await
    );
}

#[test]
fn the_server_refuses_to_start_without_tls_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut child = Command::new(meridian_bin())
            .args(["server", "--node-id", "1", "--region", "us-east"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--xds-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A server that wrongly starts would run forever: stop it and fail.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("needs TLS") && err.contains("--insecure"),
        "{}",
        show(&o)
    );
    assert!(
        !dir.path().join("data").exists(),
        "a refused start touched the data dir"
    );
}

async fn apply(c: &Cluster, request_id: &str, ops: Vec<pb::TxnOp>) {
    c.config(1)
        .await
        .txn(pb::TxnRequest {
            request_id: request_id.into(),
            ops,
            dry_run: false,
        })
        .await
        .expect("apply as the kit's admin");
}

fn proxy(group: &str) -> Identity {
    Identity::Proxy {
        group: group.into(),
    }
}

/// `--tls-cert F --tls-key F --tls-ca F` of `files`.
fn tls_flags(files: &TlsFiles) -> Vec<String> {
    [
        ("--tls-cert", &files.cert),
        ("--tls-key", &files.key),
        ("--tls-ca", &files.ca),
    ]
    .iter()
    .flat_map(|(f, p)| [f.to_string(), p.to_str().unwrap().to_string()])
    .collect()
}

/// Property: an Envoy started from `meridian bootstrap --tls-*` reaches
/// the controllers of a TLS cluster (which take only mutual TLS),
/// presenting its proxy certificate, gets its listeners and serves
/// traffic; an Envoy whose certificate names another group than its
/// `node.cluster` gets nothing, and its log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envoy_gets_its_config_over_mutual_tls_and_only_as_its_certificate_group() {
    let c = Cluster::start(3, tls_opts()).await;
    let pki = c.pki().unwrap();
    let up = Upstream::start("secure").await;
    let port = meridian_tests::ports::free_port();
    apply(
        &c,
        "web",
        [
            vec![put_op(
                "service",
                "web",
                serde_json::json!({"port": up.port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]}),
            )],
            edge_ops("web", port),
        ]
        .concat(),
    )
    .await;

    let files = pki
        .issue(proxy("default"), Validity::leaf_default())
        .unwrap();
    let flags = tls_flags(&files);
    let mut args: Vec<&str> = vec!["--region", "us-east", "--group", "default"];
    args.extend(flags.iter().map(String::as_str));
    let envoy = Envoy::from_cli(&c, "secure-1", &args);
    wait_all_ok(port, "/", 5, Duration::from_secs(60), |b| b == "secure").await;
    // Really TLS: every controller took the Envoy's certificate (the
    // readiness checks, on the plain admin port, kept them healthy).
    let bootstrap = std::fs::read_to_string(c.dir().join("secure-1.yaml")).unwrap();
    assert!(
        bootstrap.contains("UpstreamTlsContext"),
        "the bootstrap has no TLS socket"
    );
    let e = &envoy;
    eventually(
        "every controller healthy in the Envoy's xDS cluster",
        Duration::from_secs(30),
        || async move {
            let healthy = e.stat("cluster.meridian_xds.membership_healthy").await;
            (healthy.as_deref() == Some("3")).then_some(())
        },
    )
    .await;

    // Another group's certificate, claiming group default: refused.
    let other = pki.issue(proxy("other"), Validity::leaf_default()).unwrap();
    let flags = tls_flags(&other);
    let mut args: Vec<&str> = vec!["--region", "us-east", "--group", "default"];
    args.extend(flags.iter().map(String::as_str));
    let impostor = Envoy::from_cli(&c, "impostor-1", &args);
    let cr = &c;
    eventually(
        "a controller refuses the impostor's stream",
        Duration::from_secs(60),
        || async move {
            let mut denied = 0.0;
            for id in [1, 2, 3] {
                denied += metric(cr, id, "meridian_xds_denied_streams_total")
                    .await
                    .iter()
                    .map(|(_, v)| *v)
                    .sum::<f64>();
            }
            (denied >= 1.0).then_some(())
        },
    )
    .await;
    let refusals: String = [1, 2, 3]
        .iter()
        .map(|id| c.log_of(*id))
        .collect::<Vec<_>>()
        .concat();
    assert!(
        refusals.contains("node=impostor-1")
            && refusals.contains("proxy/other may not receive proxy group \"default\""),
        "the refusal is logged naming the Envoy, its identity and the group"
    );
    assert_eq!(
        impostor
            .stat("control_plane.connected_state")
            .await
            .as_deref(),
        Some("0"),
        "the impostor holds a stream"
    );
    assert_eq!(
        impostor
            .stat("listener_manager.lds.update_success")
            .await
            .as_deref(),
        Some("0"),
        "the impostor got listeners"
    );
}

/// A SotW ADS stream to node 1's xDS listener as `identity`, viewing as
/// `group` (`node.cluster`).
async fn stream_as(c: &Cluster, files: &TlsFiles, group: &str) -> SotwClient {
    let pki = c.pki().unwrap();
    let ch = channel(
        &format!("127.0.0.1:{}", c.node(1).ports.xds),
        with(pki, files),
    )
    .await
    .expect("TLS channel to xDS");
    SotwClient::ads_on(ch, node(&format!("{group}-envoy"), group, "us-east"))
        .await
        .expect("open ADS")
}

/// Every secret name a stream receives before `deadline` passes with no
/// response.
async fn secrets_seen(s: &mut SotwClient, quiet: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(r) = s.recv_within(quiet).await {
        if r.type_url == SECRET {
            seen.extend(names(&r));
        }
    }
    seen
}

/// Property: on a TLS xDS listener, a stream's proxy group is the one its
/// certificate names: `node.cluster` naming another group, or a node
/// identity posing as a proxy, ends with PERMISSION_DENIED naming both
/// (also on the unary fetch), and is counted; a secret used only by group
/// A's listener is served to A and never to group B, whatever B asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_xds_stream_views_only_as_its_certificate_group_and_gets_only_its_secrets() {
    let c = Cluster::start(1, tls_opts()).await;
    let pki = c.pki().unwrap();
    // The listener's own certificate, as a Secret object.
    let served = pki.issue(proxy("www"), Validity::leaf_default()).unwrap();
    let chain = std::fs::read_to_string(&served.cert).unwrap();
    let key = std::fs::read_to_string(&served.key).unwrap();
    let (pa, pb) = (
        meridian_tests::ports::free_port(),
        meridian_tests::ports::free_port(),
    );
    apply(
        &c,
        "groups",
        vec![
            put_op("service", "web", serde_json::json!({"port": 8080})),
            put_op(
                "route",
                "main",
                serde_json::json!({"hosts": ["*"], "rules": [{"backends": [{"service": "web"}]}]}),
            ),
            put_op(
                "secret",
                "a-cert",
                serde_json::json!({"certificateChain": chain, "privateKey": key}),
            ),
            put_op(
                "listener",
                "a",
                serde_json::json!({"port": pa, "proxyGroups": ["group-a"], "routes": ["main"], "tls": {"secret": "a-cert"}}),
            ),
            put_op(
                "listener",
                "b",
                serde_json::json!({"port": pb, "proxyGroups": ["group-b"], "routes": ["main"]}),
            ),
        ],
    )
    .await;
    let a = pki
        .issue(proxy("group-a"), Validity::leaf_default())
        .unwrap();
    let b = pki
        .issue(proxy("group-b"), Validity::leaf_default())
        .unwrap();

    // Group A gets its listener and its secret.
    let mut sa = stream_as(&c, &a, "group-a").await;
    sa.request(LISTENER, &[], "", "").await;
    let lds = sa.expect_response().await;
    assert_eq!(names(&lds), vec!["a".to_string()]);
    sa.request(SECRET, &["a-cert"], "", "").await;
    let sds = sa.expect_response().await;
    assert_eq!(names(&sds), vec!["a-cert".to_string()]);

    // Group B asks for A's secret by name, on its own honest stream: its
    // listeners come, the secret never does.
    let mut sb = stream_as(&c, &b, "group-b").await;
    sb.request(SECRET, &["a-cert"], "", "").await;
    sb.request(LISTENER, &[], "", "").await;
    let mut got_lds = false;
    let mut secrets = Vec::new();
    while let Some(r) = sb.recv_within(Duration::from_secs(5)).await {
        if r.type_url == LISTENER {
            assert_eq!(names(&r), vec!["b".to_string()]);
            got_lds = true;
            break;
        }
        secrets.extend(names(&r));
    }
    assert!(got_lds, "group B's stream got no listeners");
    secrets.extend(secrets_seen(&mut sb, Duration::from_secs(1)).await);
    assert!(
        !secrets.contains(&"a-cert".to_string()),
        "group B received group A's secret"
    );

    // Group B's certificate claiming group A: refused, naming both.
    let mut posing = stream_as(&c, &b, "group-a").await;
    posing.request(SECRET, &["a-cert"], "", "").await;
    let st = posing.next_raw().await.expect_err("a refused stream");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(
        st.message().contains("proxy/group-b") && st.message().contains("\"group-a\""),
        "{st:?}"
    );

    // A node's certificate may not pose as a proxy either.
    let node1 = pki.node(1).unwrap();
    let mut as_node = stream_as(&c, &node1, "group-a").await;
    as_node.request(LISTENER, &[], "", "").await;
    let st = as_node.next_raw().await.expect_err("a refused stream");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("node/1 is not a proxy"), "{st:?}");

    // The unary fetch takes the same check.
    let ch = channel(&format!("127.0.0.1:{}", c.node(1).ports.xds), with(pki, &b))
        .await
        .unwrap();
    let st = SecretDiscoveryServiceClient::new(ch)
        .fetch_secrets(DiscoveryRequest {
            node: Some(node("b-fetch", "group-a", "us-east")),
            type_url: SECRET.into(),
            resource_names: vec!["a-cert".into()],
            ..Default::default()
        })
        .await
        .expect_err("a refused fetch");
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");

    let denied = metric(&c, 1, "meridian_xds_denied_streams_total").await;
    assert_eq!(
        denied.iter().map(|(_, v)| *v).sum::<f64>(),
        3.0,
        "{denied:?}"
    );
}

/// Property: `meridian status` shows each node's certificate expiry (the
/// table's soonest, JSON every listener's), and the CLI's exit code tells
/// a denied request (9) and a failed TLS handshake (11, both ways: the
/// server refusing our certificate, we refusing the server's) from an
/// unreachable cluster (6).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_certificate_expiry_and_the_cli_exit_code_names_denials_and_tls_failures() {
    let c = Cluster::start(1, tls_opts()).await;
    let pki = c.pki().unwrap();
    let servers = c.servers();

    let o = c.cli(&["status", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let certs = v["members"][0]["certificates"].as_array().unwrap().clone();
    let listeners: Vec<&str> = certs
        .iter()
        .map(|c| c["listener"].as_str().unwrap())
        .collect();
    assert_eq!(listeners, vec!["peer", "api", "xds", "client"], "{v}");
    for cert in &certs {
        assert_eq!(cert["identity"], "node/1");
        let left = cert["expires_in_seconds"].as_i64().unwrap();
        assert!(left > 300 * 86400, "{cert}");
        assert!(
            cert["not_after"].as_str().unwrap().ends_with(" UTC"),
            "{cert}"
        );
    }
    let o = c.cli(&["status"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("CERT EXPIRY"), "{table}");
    let days = certs[0]["expires_in_seconds"].as_i64().unwrap() / 86400;
    assert!(table.contains(&format!("{days}d")), "{table}");

    // A viewer's write: PERMISSION_DENIED, exit 9.
    let viewer = pki
        .issue(operator("vera", Role::Viewer), Validity::leaf_default())
        .unwrap();
    let svc = c.dir().join("svc.yaml");
    std::fs::write(&svc, "kind: service\nname: web\nspec:\n  port: 80\n").unwrap();
    let o = cli_as(
        &c,
        &viewer,
        &servers,
        &["apply", "-f", svc.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(9), "{}", show(&o));

    // The server refuses a certificate of another CA (the client trusts both).
    let foreign_files =
        foreign(pki, &c.dir().join("other-ca"), operator("eve", Role::Admin)).unwrap();
    let o = cli_as(&c, &foreign_files, &servers, &["get", "service"]);
    assert_eq!(o.status.code(), Some(11), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("TLS handshake failed"),
        "{}",
        show(&o)
    );
    // The client does not trust the server's CA.
    let distrust = TlsFiles {
        ca: c.dir().join("other-ca").join("ca.pem"),
        ..foreign_files.clone()
    };
    let o = cli_as(&c, &distrust, &servers, &["get", "service"]);
    assert_eq!(o.status.code(), Some(11), "{}", show(&o));

    // Nothing listening: unavailable, exit 6, as before.
    let nobody = format!("127.0.0.1:{}", meridian_tests::ports::free_port());
    let o = cli_as(&c, pki.admin(), &nobody, &["get", "service"]);
    assert_eq!(o.status.code(), Some(6), "{}", show(&o));
}
