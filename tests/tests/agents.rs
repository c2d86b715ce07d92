//! The controller side of the agents' upward protocol, driven by a minimal
//! agent written here against the real gRPC API of real controllers, the
//! lease policies seen through a real Envoy, and a real `meridian agent`
//! failing over to another region and back.

use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use meridian_tests::agent::AgentProc;
use meridian_tests::envoy::{batch, wait_all_ok, Envoy};
use meridian_tests::upstream::Upstream;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct TestAgent {
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::ControllerMessage>,
    version: u64,
}

fn hello(cluster: &str, region: &str, token: &str, session: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::AgentHello {
            cluster: cluster.into(),
            region: region.into(),
            zone: String::new(),
            token: token.into(),
            session: session.into(),
            agent: "test-agent".into(),
        })),
    }
}

fn ep(service: &str, port: u16) -> pb::AgentEndpoint {
    pb::AgentEndpoint {
        service: service.into(),
        address: "127.0.0.1".into(),
        port: port as u32,
        zone: String::new(),
        weight: 1,
        health: pb::EndpointHealth::Healthy as i32,
    }
}

impl TestAgent {
    async fn connect(
        c: &Cluster,
        node: u64,
        cluster: &str,
        region: &str,
        token: &str,
        session: &str,
    ) -> Result<TestAgent, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(hello(cluster, region, token, session))
            .await
            .unwrap();
        let mut client = AgentServiceClient::new(c.channel(node).await);
        let mut stream = client.report(ReceiverStream::new(rx)).await?.into_inner();
        match stream.message().await? {
            Some(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Welcome(_)),
            }) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        Ok(TestAgent {
            tx,
            rx: stream,
            version: 0,
        })
    }

    async fn send(
        &mut self,
        replace: bool,
        upserts: Vec<pb::AgentEndpoint>,
        removals: Vec<pb::AgentEndpoint>,
    ) -> pb::controller_message::Msg {
        self.version += 1;
        let u = pb::EndpointUpdate {
            version: self.version,
            replace,
            upserts,
            removals,
        };
        self.tx
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Update(u)),
            })
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(15), self.rx.message())
                .await
                .expect("answer")
                .expect("stream")
                .expect("message");
            if let Some(msg) = m.msg {
                return msg;
            }
        }
    }

    async fn heartbeat(&self) {
        let _ = self
            .tx
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Heartbeat(pb::AgentHeartbeat {})),
            })
            .await;
    }
}

fn register(c: &Cluster, name: &str, region: &str, ttl: &str, policy: &str) -> String {
    let out = c.cli(&[
        "clusters",
        "add",
        name,
        "--region",
        region,
        "--lease-ttl",
        ttl,
        "--on-lease-expiry",
        policy,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn endpoints(c: &Cluster, service: &str) -> Vec<Value> {
    let out = c.cli(&["endpoints", service, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["endpoints"].as_array().unwrap().clone()
}

fn clusters(c: &Cluster) -> Value {
    let out = c.cli(&["clusters", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Property: only the holder of a cluster's token can write its endpoints;
/// a wrong token or an unregistered cluster gets a clear error and nothing
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_cannot_write_another_clusters_endpoints() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let token = register(&c, "east-1", "us-east", "30s", "drop");
    assert!(token.starts_with("mrd_"));
    let rev_before = c.status(1).await.unwrap().revision;

    let err = TestAgent::connect(&c, 1, "east-1", "us-east", "not-the-token", "s1")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("east-1"), "{}", err.message());
    let err = TestAgent::connect(&c, 1, "west-9", "us-east", &token, "s1")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("meridian clusters add"),
        "{}",
        err.message()
    );
    let err = TestAgent::connect(&c, 1, "east-1", "eu-west", &token, "s1")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("registered in region"),
        "{}",
        err.message()
    );
    assert_eq!(
        c.status(1).await.unwrap().revision,
        rev_before,
        "a refused agent changed the store"
    );
    // The token never shows in the node's log.
    assert!(!c.log_of(1).contains(&token));
}

/// Property: an agent sent to a follower right after `clusters add` is
/// welcomed even if that follower has not applied the registration yet
/// (it catches up with the leader before it refuses). The follower is cut
/// off from the leader while the cluster is registered, and healed a
/// moment after the agent says hello (well inside an election timeout, so
/// the leader stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_at_a_follower_behind_the_registration_is_welcomed() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    let follower = c.a_follower(leader);
    c.set_faults(leader, &format!(r#"{{"isolated_from": [{follower}]}}"#))
        .await;
    c.set_faults(follower, &format!(r#"{{"isolated_from": [{leader}]}}"#))
        .await;
    let token = register(&c, "east-1", "us-east", "30s", "drop");
    let key = pb::GetRequest {
        key: Some(pb::ObjectKey {
            kind: "cluster".into(),
            name: "east-1".into(),
        }),
        consistency: pb::Consistency::Local as i32,
    };
    let local = c.config(follower).await.get(key).await;
    assert!(
        local.ok().and_then(|r| r.into_inner().object).is_none(),
        "the follower applied the registration while cut off"
    );
    let heal = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.set_faults(leader, "{}").await;
        c.set_faults(follower, "{}").await;
    };
    let (agent, ()) = tokio::join!(
        TestAgent::connect(&c, follower, "east-1", "us-east", &token, "run-1"),
        heal
    );
    let mut agent = agent.expect("a registered cluster refused at a follower still catching up");
    let m = agent.send(true, vec![ep("web", 8001)], vec![]).await;
    assert!(matches!(m, pb::controller_message::Msg::Ack(_)), "{m:?}");
    assert_eq!(c.wait_leader().await, leader, "the cut caused an election");
}

/// Property: a full update replaces the cluster's set, deltas change it, each
/// is acknowledged after commit (visible through any node), bad input is
/// NACKed naming the field, a restarted agent's full set leaves nothing
/// stale, and an older session is told it was superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_delta_nack_restart_and_supersede() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let token = register(&c, "east-1", "us-east", "30s", "drop");
    let mut a = TestAgent::connect(&c, 2, "east-1", "us-east", &token, "run-1")
        .await
        .unwrap();
    let m = a
        .send(
            true,
            vec![ep("web", 8001), ep("web", 8002), ep("api", 9001)],
            vec![],
        )
        .await;
    assert!(
        matches!(m, pb::controller_message::Msg::Ack(ref ack) if ack.version == 1 && ack.revision > 0),
        "{m:?}"
    );
    // Acknowledged means committed: a linearizable read on another node sees it.
    assert_eq!(endpoints(&c, "web").len(), 2);
    assert_eq!(endpoints(&c, "api").len(), 1);

    let m = a
        .send(false, vec![ep("web", 8003)], vec![ep("web", 8001)])
        .await;
    assert!(
        matches!(m, pb::controller_message::Msg::Ack(ref ack) if ack.version == 2),
        "{m:?}"
    );
    let ports: Vec<u64> = endpoints(&c, "web")
        .iter()
        .map(|e| e["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![8002, 8003]);

    let mut bad = ep("web", 8004);
    bad.address = "not-an-ip".into();
    let m = a.send(false, vec![bad], vec![]).await;
    match m {
        pb::controller_message::Msg::Nack(n) => {
            assert_eq!(n.version, 3);
            assert!(n.reason.contains("upserts[0].address"), "{}", n.reason);
        }
        other => panic!("expected a nack, got {other:?}"),
    }
    assert_eq!(
        endpoints(&c, "web").len(),
        2,
        "a NACKed update changed something"
    );

    // The agent restarts (new session) with a smaller set: nothing of the
    // first run lingers.
    let mut b = TestAgent::connect(&c, 3, "east-1", "us-east", &token, "run-2")
        .await
        .unwrap();
    let m = b.send(true, vec![ep("web", 8002)], vec![]).await;
    assert!(matches!(m, pb::controller_message::Msg::Ack(_)), "{m:?}");
    assert_eq!(endpoints(&c, "web").len(), 1);
    assert!(
        endpoints(&c, "api").is_empty(),
        "the old run's api endpoint lingers"
    );
    let cl = clusters(&c);
    assert_eq!(cl["clusters"][0]["session"], "run-2");

    // The same session reconnects (its agent process lives on) and starts
    // its versions again: its writes are new, not retries of the old stream's.
    let mut b2 = TestAgent::connect(&c, 1, "east-1", "us-east", &token, "run-2")
        .await
        .unwrap();
    let m = b2
        .send(true, vec![ep("web", 8005), ep("web", 8006)], vec![])
        .await;
    assert!(matches!(m, pb::controller_message::Msg::Ack(_)), "{m:?}");
    let ports: Vec<u64> = endpoints(&c, "web")
        .iter()
        .map(|e| e["port"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ports,
        vec![8005, 8006],
        "a reconnecting session's full set was not applied"
    );
    drop(b);

    // The first session is superseded: its next update is refused.
    let m = a.send(false, vec![ep("web", 8009)], vec![]).await;
    match m {
        pb::controller_message::Msg::Superseded(s) => assert_eq!(s.by_session, "run-2"),
        other => panic!("expected superseded, got {other:?}"),
    }
    assert_eq!(
        endpoints(&c, "web").len(),
        2,
        "the superseded session changed nothing"
    );
}

/// Property: when an agent goes silent past its lease TTL, its endpoints
/// follow the cluster's policy, decided once through the log: `drop` takes
/// them out of Envoy's EDS, `keep` leaves them serving. A restarted agent
/// brings them back.
async fn lease_policy(policy: &str) {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let up = Upstream::start("from-agent").await;
    let token = register(&c, "east-1", "us-east", "5s", policy);
    let port = meridian_tests::ports::free_port();
    let ops = vec![
        ("service", "web", json!({"port": up.port})),
        (
            "route",
            "main",
            json!({"hosts": ["*"], "rules": [{"backends": [{"service": "web"}]}]}),
        ),
        (
            "listener",
            "edge",
            json!({"address": "127.0.0.1", "port": port, "routes": ["main"]}),
        ),
    ];
    for (k, n, v) in ops {
        let out = c.cli(&["put", k, n, "--value", &v.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut a = TestAgent::connect(&c, 1, "east-1", "us-east", &token, "s1")
        .await
        .unwrap();
    assert!(matches!(
        a.send(true, vec![ep("web", up.port)], vec![]).await,
        pb::controller_message::Msg::Ack(_)
    ));

    let _envoy = Envoy::from_cli(&c, "e1", &["--region", "us-east"]);
    wait_all_ok(port, "/", 10, Duration::from_secs(30), |b| {
        b == "from-agent"
    })
    .await;

    // Heartbeats keep the lease alive past its TTL.
    for _ in 0..8 {
        a.heartbeat().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(clusters(&c)["clusters"][0]["lease"], "active");

    // The agent dies.
    drop(a);
    eventually("the lease to expire", Duration::from_secs(30), || async {
        (clusters(&c)["clusters"][0]["lease"] == "expired").then_some(())
    })
    .await;
    if policy == "drop" {
        eventually(
            "Envoy to lose the endpoints",
            Duration::from_secs(30),
            || async {
                let (_, failed) = batch(port, "/", 5).await;
                (failed == 5).then_some(())
            },
        )
        .await;
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, failed) = batch(port, "/", 20).await;
        assert_eq!(failed, 0, "keep: the last known endpoints keep serving");
    }
    // A restarted agent resyncs and the lease is active again.
    let mut b = TestAgent::connect(&c, 1, "east-1", "us-east", &token, "s2")
        .await
        .unwrap();
    assert!(matches!(
        b.send(true, vec![ep("web", up.port)], vec![]).await,
        pb::controller_message::Msg::Ack(_)
    ));
    assert_eq!(clusters(&c)["clusters"][0]["lease"], "active");
    wait_all_ok(port, "/", 10, Duration::from_secs(30), |b| {
        b == "from-agent"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_with_drop_policy_removes_endpoints_from_envoy() {
    lease_policy("drop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_with_keep_policy_keeps_endpoints() {
    lease_policy("keep").await;
}

/// The controller holding `cluster`'s lease, as `meridian clusters` shows it.
fn controller_of(c: &Cluster, cluster: &str) -> Option<u64> {
    let out = c.cli(&["clusters", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["clusters"]
        .as_array()?
        .iter()
        .find(|r| r["cluster"] == cluster)?["controller"]
        .as_u64()
}

/// Whether `cluster`'s endpoints of `service` are exactly on `ports`.
fn reported(c: &Cluster, service: &str, cluster: &str, ports: &[u16]) -> Option<bool> {
    let out = c.cli(&["endpoints", service, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut got: Vec<u64> = v["endpoints"]
        .as_array()?
        .iter()
        .filter(|e| e["cluster"] == cluster)
        .filter_map(|e| e["port"].as_u64())
        .collect();
    let mut want: Vec<u64> = ports.iter().map(|p| *p as u64).collect();
    got.sort_unstable();
    want.sort_unstable();
    Some(got == want)
}

/// Property: an agent whose own region's controller dies fails over to
/// another region's and keeps reporting; once its own controller is back
/// and ready, the agent ends the remote session and fails back to it within
/// a few failback intervals, resyncs there, and keeps reporting through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_back_to_its_own_regions_controller() {
    // Node 3 is us-east's only controller; eu-west's two keep the quorum
    // while it is down.
    let regions = vec!["eu-west".to_string(), "eu-west".into(), "us-east".into()];
    let mut c = Cluster::start(
        3,
        ClusterOpts {
            regions,
            ..Default::default()
        },
    )
    .await;
    let home = 3;
    let out = c.cli(&[
        "put",
        "service",
        "web",
        "--value",
        &json!({"port": 8080}).to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = register(&c, "k8s-us-east", "us-east", "30s", "drop");
    let order: Vec<String> = [home, 1, 2]
        .iter()
        .map(|id| c.node(*id).api_addr())
        .collect();
    let p = [
        meridian_tests::ports::free_port(),
        meridian_tests::ports::free_port(),
        meridian_tests::ports::free_port(),
    ];
    // Debug logs show the failback probes.
    let agent = AgentProc::start_with(
        c.dir(),
        "k8s-us-east",
        "us-east",
        &token,
        &order,
        &["--failback-interval", "2s"],
        "info,meridian_agent::client::failback=debug",
    );
    agent.declare(&[("web", p[0])]);
    eventually(
        "the agent to report through its own region's controller",
        Duration::from_secs(60),
        || async {
            (controller_of(&c, "k8s-us-east")? == home
                && reported(&c, "web", "k8s-us-east", &p[..1])?)
            .then_some(())
        },
    )
    .await;

    // Its region's controller dies: the agent moves to eu-west and its
    // changes still land.
    c.kill(home);
    agent.declare(&[("web", p[0]), ("web", p[1])]);
    let away = eventually(
        "the agent to fail over to eu-west",
        Duration::from_secs(60),
        || async {
            let at = controller_of(&c, "k8s-us-east")?;
            (at != home && reported(&c, "web", "k8s-us-east", &p[..2])?).then_some(at)
        },
    )
    .await;
    // Probes of the dead controller fail and change nothing.
    eventually(
        "a failback probe of the dead controller",
        Duration::from_secs(30),
        || async {
            agent
                .log_text()
                .contains("failback probe: not ready")
                .then_some(())
        },
    )
    .await;
    assert!(
        !agent.log_text().contains("failing back"),
        "failed back while its controller was down"
    );
    assert_eq!(controller_of(&c, "k8s-us-east"), Some(away));

    // Back and ready: the agent returns within a few 2 s intervals.
    c.spawn(home);
    c.wait_ready(home).await;
    let ready = Instant::now();
    eventually(
        "the agent to fail back to its own region's controller",
        Duration::from_secs(30),
        || async { (controller_of(&c, "k8s-us-east")? == home).then_some(()) },
    )
    .await;
    let took = ready.elapsed();
    eprintln!("measured: failback from node {away} to node {home} {took:?} after it was ready");
    assert!(
        took < Duration::from_secs(15),
        "failback took {took:?} with a 2 s interval"
    );
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("failing back to a preferred controller"))
        .unwrap_or_else(|| panic!("no failback logged:\n{log}"));
    assert!(
        line.contains(&c.node(home).api_addr()) && line.contains(&c.node(away).api_addr()),
        "{line}"
    );

    // The new session resynced and carries the next change; nothing stale.
    agent.declare(&[("web", p[1]), ("web", p[2])]);
    eventually(
        "a change to land through the home controller",
        Duration::from_secs(30),
        || async { reported(&c, "web", "k8s-us-east", &p[1..])?.then_some(()) },
    )
    .await;
    assert_eq!(controller_of(&c, "k8s-us-east"), Some(home));
    let log = agent.log_text();
    assert_eq!(
        log.matches("failing back to a preferred controller")
            .count(),
        1,
        "{log}"
    );
}
