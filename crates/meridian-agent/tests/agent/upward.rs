use std::time::Duration;

use meridian_agent::{
    AgentConfig, AgentError, AgentStatus, EndpointKey, EndpointMap, EndpointState, Health, Source,
    Token, UpwardClient,
};
use meridian_proto::v1::{AgentEndpoint, EndpointHealth, EndpointUpdate};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::fake::{FakeController, WAIT};

const TOKEN: &str = "mrd_tok_s3cr3t";

fn config(controllers: &[String]) -> AgentConfig {
    let mut c = AgentConfig::new("eu-k8s-1", "eu", controllers.to_vec(), Token::new(TOKEN));
    c.zone = "eu-1a".into();
    c.connect_timeout = Duration::from_secs(1);
    c.welcome_timeout = Duration::from_secs(2);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c
}

fn set(addresses: &[&str]) -> EndpointMap {
    addresses
        .iter()
        .map(|a| {
            (
                EndpointKey {
                    service: "web".into(),
                    address: (*a).into(),
                    port: 8080,
                },
                EndpointState {
                    zone: "eu-1b".into(),
                    weight: 1,
                    health: Health::Healthy,
                },
            )
        })
        .collect()
}

fn wire(address: &str) -> AgentEndpoint {
    AgentEndpoint {
        service: "web".into(),
        address: address.into(),
        port: 8080,
        zone: "eu-1b".into(),
        weight: 1,
        health: EndpointHealth::Healthy as i32,
    }
}

fn removal(address: &str) -> AgentEndpoint {
    AgentEndpoint {
        service: "web".into(),
        address: address.into(),
        port: 8080,
        ..AgentEndpoint::default()
    }
}

fn full(version: u64, addresses: &[&str]) -> EndpointUpdate {
    EndpointUpdate {
        version,
        replace: true,
        upserts: addresses.iter().map(|a| wire(a)).collect(),
        removals: vec![],
    }
}

fn delta(version: u64, upserts: &[&str], removals: &[&str]) -> EndpointUpdate {
    EndpointUpdate {
        version,
        replace: false,
        upserts: upserts.iter().map(|a| wire(a)).collect(),
        removals: removals.iter().map(|a| removal(a)).collect(),
    }
}

/// A running agent: its endpoint feed, its status, and a way to stop it.
struct Running {
    endpoints: watch::Sender<EndpointMap>,
    status: watch::Receiver<AgentStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

fn start(config: AgentConfig, initial: EndpointMap) -> Running {
    let (endpoints, rx) = watch::channel(initial);
    let client = UpwardClient::new(config).unwrap();
    let status = client.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        client
            .run(rx, async {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        endpoints,
        status,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn must_reach(&mut self, what: &str, f: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
        let mut rx = self.status.clone();
        let got = match tokio::time::timeout(WAIT, rx.wait_for(|s| f(s))).await {
            Ok(s) => s.unwrap().clone(),
            Err(_) => panic!(
                "status never reached: {what}; last {:?}",
                *self.status.borrow()
            ),
        };
        got
    }

    /// Stops the agent as its owner does, and expects a clean end.
    async fn must_stop(mut self) {
        drop(self.stop.take());
        self.must_end().await.unwrap();
    }

    async fn must_end(self) -> Result<(), AgentError> {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("agent ends within 5s")
            .unwrap()
    }
}

#[tokio::test]
async fn hello_welcome_full_update_then_deltas_and_heartbeats() {
    let mut ctl = FakeController::start().await;
    let mut agent = start(config(&[ctl.addr.to_string()]), set(&["10.0.0.1"]));
    let mut s = ctl.must_accept().await;

    let hello = s.must_hello().await;
    assert_eq!(
        (
            hello.cluster.as_str(),
            hello.region.as_str(),
            hello.zone.as_str()
        ),
        ("eu-k8s-1", "eu", "eu-1a")
    );
    assert_eq!(hello.token, TOKEN);
    assert_eq!(hello.session.len(), 32);
    assert!(hello.agent.contains("meridian-agent/"), "{}", hello.agent);

    s.welcome(7, 40);
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    let st = agent
        .must_reach("ack 1", |s| s.last_ack_version == Some(1))
        .await;
    assert_eq!(
        st.controller.as_deref(),
        Some(ctl.addr.to_string().as_str())
    );
    assert_eq!(
        (st.controller_id, st.controller_region.as_deref()),
        (Some(7), Some("eu"))
    );
    assert_eq!((st.acked_endpoints, st.last_ack_revision), (1, Some(101)));

    agent
        .endpoints
        .send(set(&["10.0.0.1", "10.0.0.2"]))
        .unwrap();
    assert_eq!(s.must_update().await, delta(2, &["10.0.0.2"], &[]));
    // While version 2 is unanswered, changes wait (and coalesce).
    agent
        .endpoints
        .send(set(&["10.0.0.2", "10.0.0.3"]))
        .unwrap();
    agent.endpoints.send(set(&["10.0.0.2"])).unwrap();
    s.must_send_no_update_for(Duration::from_millis(200)).await;
    s.ack(2);
    assert_eq!(s.must_update().await, delta(3, &[], &["10.0.0.1"]));
    s.ack(3);
    agent
        .must_reach("ack 3", |s| {
            s.last_ack_version == Some(3) && s.acked_endpoints == 1
        })
        .await;

    // Heartbeats at the Welcome's 40ms interval.
    s.heartbeats = 0;
    s.must_send_no_update_for(Duration::from_millis(400)).await;
    assert!(
        s.heartbeats >= 5,
        "only {} heartbeats in 400ms",
        s.heartbeats
    );

    agent.stop.take().unwrap().send(()).unwrap();
    agent.must_end().await.unwrap();
}

#[tokio::test]
async fn a_dropped_controller_is_replaced_by_the_next_with_a_full_resync() {
    let mut first = FakeController::start().await;
    let mut second = FakeController::start().await;
    let mut agent = start(
        config(&[first.addr.to_string(), second.addr.to_string()]),
        set(&["10.0.0.1", "10.0.0.2"]),
    );
    let mut s1 = first.must_accept().await;
    let hello1 = s1.must_hello().await;
    s1.welcome(1, 1000);
    assert_eq!(s1.must_update().await, full(1, &["10.0.0.1", "10.0.0.2"]));
    s1.ack(1);
    agent
        .endpoints
        .send(set(&["10.0.0.2", "10.0.0.3"]))
        .unwrap();
    assert_eq!(
        s1.must_update().await,
        delta(2, &["10.0.0.3"], &["10.0.0.1"])
    );
    // The first controller dies before acknowledging version 2.
    first.stop();
    s1.fail();

    // While it reconnects the source moves on once more.
    agent
        .endpoints
        .send(set(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]))
        .unwrap();
    let mut s2 = second.must_accept().await;
    let hello2 = s2.must_hello().await;
    assert_eq!(hello2.session, hello1.session, "same process, same session");
    s2.welcome(2, 1000);
    // Versions restart per stream; the first update replaces everything.
    assert_eq!(
        s2.must_update().await,
        full(1, &["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    );
    s2.ack(1);
    let st = agent
        .must_reach("ack on the second", |s| {
            s.controller_id == Some(2) && s.last_ack_version == Some(1)
        })
        .await;
    assert_eq!(st.sessions, 2);
    assert_eq!(
        st.controller.as_deref(),
        Some(second.addr.to_string().as_str())
    );
    agent.endpoints.send(set(&["10.0.0.4"])).unwrap();
    assert_eq!(
        s2.must_update().await,
        delta(2, &[], &["10.0.0.2", "10.0.0.3"])
    );
    agent.must_stop().await;
}

#[tokio::test]
async fn controllers_are_cycled_until_one_answers() {
    // Nothing listens on the first address: the agent moves on, and keeps
    // cycling (with backoff) when the one that answers drops it at Hello.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut ctl = FakeController::start().await;
    let mut agent = start(config(&[dead, ctl.addr.to_string()]), set(&["10.0.0.1"]));
    let mut s = ctl.must_accept().await;
    s.must_hello().await;
    s.fail();
    let mut s = ctl.must_accept_welcomed(3, 1000).await;
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    agent
        .must_reach("ack", |s| s.last_ack_version == Some(1))
        .await;
    agent.must_stop().await;
}

#[tokio::test]
async fn a_nack_keeps_the_acknowledged_state_and_later_deltas_build_on_it() {
    let mut ctl = FakeController::start().await;
    let mut agent = start(config(&[ctl.addr.to_string()]), set(&["10.0.0.1"]));
    let mut s = ctl.must_accept_welcomed(1, 1000).await;
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);

    agent
        .endpoints
        .send(set(&["10.0.0.1", "10.0.0.99"]))
        .unwrap();
    assert_eq!(s.must_update().await, delta(2, &["10.0.0.99"], &[]));
    s.nack(2, "upserts[0].address: 10.0.0.99 is reserved");
    // The refused set is not sent again...
    s.must_send_no_update_for(Duration::from_millis(200)).await;
    let st = agent
        .must_reach("nack handled", |s| s.pending_version.is_none())
        .await;
    assert_eq!((st.last_ack_version, st.acked_endpoints), (Some(1), 1));

    // ...and the next change is a delta from what the controller holds
    // ({10.0.0.1}), not from the refused set.
    agent
        .endpoints
        .send(set(&["10.0.0.1", "10.0.0.3"]))
        .unwrap();
    assert_eq!(s.must_update().await, delta(3, &["10.0.0.3"], &[]));
    s.ack(3);
    agent
        .must_reach("ack 3", |s| {
            s.last_ack_version == Some(3) && s.acked_endpoints == 2
        })
        .await;
    agent.must_stop().await;
}

#[tokio::test]
async fn a_refused_full_update_is_followed_by_another_full_update() {
    let mut ctl = FakeController::start().await;
    let agent = start(config(&[ctl.addr.to_string()]), set(&["10.0.0.99"]));
    let mut s = ctl.must_accept_welcomed(1, 1000).await;
    assert_eq!(s.must_update().await, full(1, &["10.0.0.99"]));
    s.nack(1, "upserts[0].address: reserved");
    agent.endpoints.send(set(&["10.0.0.1"])).unwrap();
    // Nothing of version 1 was applied, so the controller's state for this
    // stream is unknown: replace again.
    assert_eq!(s.must_update().await, full(2, &["10.0.0.1"]));
}

#[tokio::test]
async fn superseded_stops_the_agent_with_a_clear_error() {
    let mut ctl = FakeController::start().await;
    let agent = start(config(&[ctl.addr.to_string()]), set(&["10.0.0.1"]));
    let mut s = ctl.must_accept_welcomed(1, 1000).await;
    s.must_update().await;
    s.ack(1);
    s.supersede("4f1c");
    let err = agent.must_end().await.unwrap_err();
    assert!(matches!(err, AgentError::Superseded { .. }));
    assert!(
        err.to_string()
            .starts_with("another agent took over cluster eu-k8s-1 (session 4f1c)"),
        "{err}"
    );
}

#[tokio::test]
async fn superseded_instead_of_welcome_also_stops_the_agent() {
    let mut ctl = FakeController::start().await;
    let agent = start(config(&[ctl.addr.to_string()]), set(&[]));
    let mut s = ctl.must_accept().await;
    s.must_hello().await;
    s.supersede("newer");
    let err = agent.must_end().await.unwrap_err();
    assert!(err.to_string().contains("(session newer)"), "{err}");
}

#[tokio::test]
async fn an_unanswered_update_breaks_the_stream_and_resyncs() {
    let mut ctl = FakeController::start().await;
    let mut c = config(&[ctl.addr.to_string()]);
    c.ack_timeout = Duration::from_millis(200);
    let mut agent = start(c, set(&["10.0.0.1"]));
    let mut s = ctl.must_accept_welcomed(1, 1000).await;
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    // No answer: the agent gives up on this stream and opens a new one.
    let mut s = ctl.must_accept_welcomed(1, 1000).await;
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    agent
        .must_reach("ack", |s| s.last_ack_version == Some(1) && s.sessions == 2)
        .await;
    agent.must_stop().await;
}

#[tokio::test]
async fn run_agent_reports_a_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("endpoints.yaml");
    std::fs::write(
        &file,
        "endpoints: [{service: web, address: 10.0.0.1, port: 8080, zone: eu-1b}]",
    )
    .unwrap();
    let mut ctl = FakeController::start().await;
    let source = Source::parse(
        &format!("file:{}", file.display()),
        Duration::from_millis(20),
        Default::default(),
    )
    .unwrap();
    let agent = tokio::spawn(meridian_agent::run_agent(
        config(&[ctl.addr.to_string()]),
        source,
    ));
    let mut s = ctl.must_accept_welcomed(1, 1000).await;
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    std::fs::write(
        &file,
        "endpoints: [{service: web, address: 10.0.0.2, port: 8080, zone: eu-1b}]",
    )
    .unwrap();
    assert_eq!(
        s.must_update().await,
        delta(2, &["10.0.0.2"], &["10.0.0.1"])
    );
    s.supersede("other");
    let err = tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, AgentError::Superseded { .. }), "{err}");
}

#[test]
fn the_token_never_shows_in_debug_output_and_configs_are_checked() {
    let c = config(&["127.0.0.1:1".into()]);
    let shown = format!("{c:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("<redacted>"));
    let mut bad = config(&[]);
    assert!(UpwardClient::new(bad.clone()).is_err());
    bad.controllers = vec!["127.0.0.1:1".into()];
    bad.token = Token::new("  ");
    let err = UpwardClient::new(bad).err().unwrap().to_string();
    assert!(err.contains("token is empty"), "{err}");
}

#[tokio::test]
async fn an_agent_fails_back_to_its_region_once_a_controller_there_is_ready() {
    let mut home = FakeController::start_in("eu").await;
    let mut away = FakeController::start_in("us").await;
    let mut c = config(&[home.addr.to_string(), away.addr.to_string()]);
    c.failback_interval = Duration::from_secs(1);
    let mut agent = start(c, set(&["10.0.0.1"]));

    let mut s = home.must_accept().await;
    s.must_hello().await;
    s.welcome_from("eu", 1, 1000);
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    // The home controller fails and is not ready yet: the agent fails over.
    home.set_ready(false);
    s.fail();
    let mut s = away.must_accept().await;
    s.must_hello().await;
    s.welcome_from("us", 2, 1000);
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    agent
        .must_reach("reporting to the other region", |s| {
            s.controller_id == Some(2) && s.last_ack_version == Some(1)
        })
        .await;

    // Probes that answer "not ready" change nothing.
    s.must_send_no_update_for(Duration::from_millis(2600)).await;
    home.must_accept_nothing_for(Duration::ZERO).await;
    let probes = home.probes();
    assert!(
        (1..=3).contains(&probes),
        "{probes} probes in 2.6s at a 1s interval"
    );
    assert_eq!(away.probes(), 0, "the current controller is not probed");

    // Ready again: the agent leaves the other region cleanly and resyncs home.
    home.set_ready(true);
    s.must_be_closed().await;
    let mut s = home.must_accept().await;
    s.must_hello().await;
    s.welcome_from("eu", 1, 1000);
    assert_eq!(s.must_update().await, full(1, &["10.0.0.1"]));
    s.ack(1);
    let st = agent
        .must_reach("back home", |s| {
            s.controller_id == Some(1) && s.last_ack_version == Some(1)
        })
        .await;
    assert_eq!((st.sessions, st.failbacks), (3, 1));
    assert_eq!(
        st.controller.as_deref(),
        Some(home.addr.to_string().as_str())
    );

    // Home is where it stays: nothing is probed any more.
    let probes = home.probes();
    s.must_send_no_update_for(Duration::from_millis(1500)).await;
    assert_eq!(home.probes(), probes);
    agent.must_stop().await;
}

#[tokio::test]
async fn an_agent_does_not_fail_back_within_its_own_region_or_when_disabled() {
    // Within the region: the second controller is as good as the first.
    stays_after_failing_over(("eu", "eu"), Duration::from_secs(1)).await;
    // Disabled: the agent stays in the other region.
    stays_after_failing_over(("eu", "us"), Duration::ZERO).await;
}

/// The agent's first controller (in `regions.0`) fails and it moves to the
/// second (in `regions.1`): it must stay there and never probe the first.
async fn stays_after_failing_over(regions: (&str, &str), failback_interval: Duration) {
    let mut first = FakeController::start_in(regions.0).await;
    let mut second = FakeController::start_in(regions.1).await;
    let mut c = config(&[first.addr.to_string(), second.addr.to_string()]);
    c.failback_interval = failback_interval;
    let agent = start(c, set(&["10.0.0.1"]));
    let s = first.must_accept().await;
    s.fail();
    let mut s = second.must_accept().await;
    s.must_hello().await;
    s.welcome_from(regions.1, 2, 1000);
    s.must_update().await;
    s.ack(1);
    s.must_send_no_update_for(Duration::from_millis(2600)).await;
    assert_eq!(first.probes(), 0);
    drop(agent);
}

#[test]
fn the_failback_interval_is_checked() {
    let mut c = config(&["127.0.0.1:1".into()]);
    assert_eq!(c.failback_interval, Duration::from_secs(30));
    c.failback_interval = Duration::from_millis(300);
    let err = UpwardClient::new(c.clone()).err().unwrap().to_string();
    assert!(err.contains("failback interval 300ms is below"), "{err}");
    c.failback_interval = Duration::ZERO;
    assert!(UpwardClient::new(c.clone()).is_ok());
    c.failback_interval = Duration::from_secs(1);
    assert!(UpwardClient::new(c).is_ok());
}
