//! Authorization of requests that a follower forwards to the leader, over
//! mutual TLS on real `meridian` processes: the leader sees only the
//! follower's `node/ID` certificate, so the caller's identity must be
//! enforced where it is known (the follower) or travel with the request.
//! An agent of cluster A cannot write cluster B's endpoints through a
//! follower; an editor's rollback cannot re-create or delete cluster
//! registrations (admin-only), through a follower or on the leader.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use meridian_pki::{Identity, Role, Validity};
use meridian_proto::v1 as pb;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use meridian_proto::v1::internal_service_client::InternalServiceClient;
use meridian_tests::{meridian_bin, show, Cluster, ClusterOpts};
use meridian_tls::{Connector, Expect, TlsFiles};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

fn tls_opts() -> ClusterOpts {
    ClusterOpts {
        tls: true,
        ..ClusterOpts::default()
    }
}

async fn channel(addr: &str, files: &TlsFiles, c: &Cluster) -> Result<Channel, String> {
    let pki = c.pki().unwrap();
    let connector = Connector::new(pki.client(files).expect("client cert"), Expect::AnyNode);
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))
}

fn cli_as(files: &TlsFiles, server: &str, args: &[&str]) -> Output {
    Command::new(meridian_bin())
        .args(["--server", server])
        .arg("--ca")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run meridian")
}

/// Registers an agent's cluster as the kit's admin; its token.
fn register(c: &Cluster, name: &str) -> String {
    let o = c.cli(&["clusters", "add", name, "--region", "us-east"]);
    assert!(o.status.success(), "{}", show(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Names of the objects of `kind` on the leader, linearizable.
async fn names(c: &Cluster, leader: u64, kind: &str) -> Vec<String> {
    let r = c
        .config(leader)
        .await
        .list(pb::ListRequest {
            kind: kind.into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .expect("list as the kit's admin")
        .into_inner();
    r.objects.into_iter().map(|o| o.name).collect()
}

async fn value(c: &Cluster, leader: u64, kind: &str, name: &str) -> Option<serde_json::Value> {
    let r = c
        .config(leader)
        .await
        .get(pb::GetRequest {
            key: Some(pb::ObjectKey {
                kind: kind.into(),
                name: name.into(),
            }),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .ok()?
        .into_inner();
    serde_json::from_slice(&r.object?.value).ok()
}

fn hello(cluster: &str, token: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            cluster: cluster.into(),
            region: "us-east".into(),
            zone: String::new(),
            token: token.into(),
            session: format!("s-{cluster}"),
            agent: "test-agent".into(),
        })),
    }
}

fn update(version: u64, service: &str, port: u16) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Update(pb::EndpointUpdate {
            version,
            replace: true,
            upserts: vec![pb::AgentEndpoint {
                service: service.into(),
                address: "127.0.0.1".into(),
                port: port as u32,
                zone: String::new(),
                weight: 1,
                health: pb::EndpointHealth::Healthy as i32,
            }],
            removals: vec![],
        })),
    }
}

/// The first message of the controller that is not empty, or the stream's
/// error.
async fn next(
    s: &mut tonic::Streaming<pb::ControllerMessage>,
) -> Result<pb::controller_message::Msg, tonic::Status> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), s.message())
            .await
            .expect("an answer from the controller")?
            .expect("the stream ended");
        if let Some(m) = m.msg {
            return Ok(m);
        }
    }
}

/// Opens an agent session on `addr` and sends one full endpoint set; the
/// controller's answers (welcome, then ack or nack) or the first error.
async fn report(
    ch: Channel,
    hello: pb::AgentMessage,
    service: &str,
) -> Result<Vec<pb::controller_message::Msg>, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello).await.unwrap();
    let mut s = AgentServiceClient::new(ch)
        .report(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let welcome = next(&mut s).await?;
    tx.send(update(1, service, 8080)).await.unwrap();
    let answer = next(&mut s).await?;
    Ok(vec![welcome, answer])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_writes_only_its_clusters_endpoints_also_through_a_follower() {
    let c = Cluster::start(3, tls_opts()).await;
    let pki = c.pki().unwrap();
    let leader = c.wait_leader().await;
    let follower = c.a_follower(leader);
    let via = c.node(follower).api_addr();
    let token_a = register(&c, "east-a");
    let token_b = register(&c, "east-b");
    let agent_a = pki
        .issue(
            Identity::Agent {
                cluster: "east-a".into(),
            },
            Validity::leaf_default(),
        )
        .unwrap();

    // Cluster B's valid token does not help an agent whose certificate
    // names cluster A: refused at hello, on the follower, before anything
    // is forwarded.
    let ch = channel(&via, &agent_a, &c).await.unwrap();
    let st = report(ch, hello("east-b", &token_b), "web")
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(
        st.message().contains("cluster/east-a") && st.message().contains("east-b"),
        "{st:?}"
    );
    assert!(
        names(&c, leader, "claim").await.is_empty(),
        "a refused session claimed a cluster"
    );
    assert!(names(&c, leader, "endpoints").await.is_empty());

    // Its own cluster, through the same follower: forwarded to the leader
    // and committed there, under cluster A only.
    let ch = channel(&via, &agent_a, &c).await.unwrap();
    let answers = report(ch, hello("east-a", &token_a), "web").await.unwrap();
    assert!(
        matches!(answers[0], pb::controller_message::Msg::Welcome(ref w) if w.controller_id == follower),
        "{answers:?}"
    );
    assert!(
        matches!(answers[1], pb::controller_message::Msg::Ack(_)),
        "{answers:?}"
    );
    assert_eq!(
        names(&c, leader, "endpoints").await,
        vec!["east-a.web".to_string()]
    );
    assert_eq!(names(&c, leader, "claim").await, vec!["east-a".to_string()]);
    let claim = value(&c, leader, "claim", "east-a").await.unwrap();
    assert_eq!(
        claim["controller"], follower,
        "not written through the follower: {claim}"
    );

    // The forwarding path itself (the peer port's InternalService) is
    // for nodes only: an agent's certificate does not get past TLS.
    let peer = format!("127.0.0.1:{}", c.node(follower).ports.peer);
    let r = match channel(&peer, &agent_a, &c).await {
        Err(e) => Err(e),
        Ok(ch) => InternalServiceClient::new(ch)
            .agent_txn(pb::RaftMessage {
                payload: vec![],
                from: follower,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|st| format!("{st:?}")),
    };
    let err = r.expect_err("an agent called the peer port's InternalService");
    assert!(
        !err.contains("InvalidArgument") && !err.contains("PermissionDenied"),
        "an agent got past the peer port's TLS: {err}"
    );
    assert_eq!(
        names(&c, leader, "endpoints").await,
        vec!["east-a.web".to_string()]
    );
}

fn service(port: u16) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "port": port })).unwrap()
}

async fn write(c: &Cluster, leader: u64, op: pb::txn_op::Op) -> u64 {
    c.config(leader)
        .await
        .txn(pb::TxnRequest {
            request_id: String::new(),
            ops: vec![pb::TxnOp { op: Some(op) }],
            dry_run: false,
        })
        .await
        .expect("write as the kit's admin")
        .into_inner()
        .revision
}

async fn web_port(c: &Cluster, leader: u64) -> serde_json::Value {
    value(c, leader, "service", "web").await.unwrap()["port"].clone()
}

fn key(kind: &str, name: &str) -> Option<pb::ObjectKey> {
    Some(pb::ObjectKey {
        kind: kind.into(),
        name: name.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editors_rollback_cannot_touch_cluster_registrations_but_an_admins_can() {
    let c = Cluster::start(3, tls_opts()).await;
    let pki = c.pki().unwrap();
    let leader = c.wait_leader().await;
    let follower = c.a_follower(leader);
    let (via_follower, on_leader) = (c.node(follower).api_addr(), c.node(leader).api_addr());
    let editor = pki
        .issue(
            Identity::Operator {
                name: "ed".into(),
                role: Role::Editor,
            },
            Validity::leaf_default(),
        )
        .unwrap();
    let put = |name: &str, port: u16| {
        pb::txn_op::Op::Put(pb::PutOp {
            key: key("service", name),
            value: service(port),
            expected_revision: None,
        })
    };
    let before = write(&c, leader, put("web", 80)).await;
    register(&c, "east-a");
    write(&c, leader, put("web", 81)).await;

    // Back to before the registration: it would delete cluster/east-a.
    for (entry, dry) in [
        (&via_follower, false),
        (&via_follower, true),
        (&on_leader, false),
    ] {
        let to = before.to_string();
        let mut args = vec!["rollback", "--to", to.as_str()];
        if dry {
            args.push("--dry-run");
        }
        let o = cli_as(&editor, entry, &args);
        assert_eq!(o.status.code(), Some(9), "{entry} dry={dry}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("operator/editor/ed")
                && err.contains("admin")
                && err.contains("cluster/east-a")
                && err.contains("deleted"),
            "{}",
            show(&o)
        );
        assert_eq!(
            names(&c, leader, "cluster").await,
            vec!["east-a".to_string()]
        );
        assert_eq!(
            web_port(&c, leader).await,
            81,
            "a refused rollback changed the service"
        );
    }

    // One config object is the editor's to roll back.
    let to = before.to_string();
    let o = cli_as(
        &editor,
        &via_follower,
        &["rollback", "service/web", "--to", &to],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(web_port(&c, leader).await, 80);

    // An admin deletes the registration; the editor may not bring it back.
    let registered = write(&c, leader, put("api", 90)).await;
    write(
        &c,
        leader,
        pb::txn_op::Op::Delete(pb::DeleteOp {
            key: key("cluster", "east-a"),
            expected_revision: None,
        }),
    )
    .await;
    let to = registered.to_string();
    let o = cli_as(&editor, &via_follower, &["rollback", "--to", &to]);
    assert_eq!(o.status.code(), Some(9), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cluster/east-a") && err.contains("created"),
        "{}",
        show(&o)
    );
    assert!(names(&c, leader, "cluster").await.is_empty());

    // The admin may, through the follower too.
    let o = cli_as(pki.admin(), &via_follower, &["rollback", "--to", &to]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        names(&c, leader, "cluster").await,
        vec!["east-a".to_string()]
    );
}
