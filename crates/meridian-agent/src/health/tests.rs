use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::endpoints::EndpointState;

/// An HTTP server on 127.0.0.1 answering every request with the status in
/// the returned cell; status 0 means "accept and never answer".
async fn http_server() -> (SocketAddr, Arc<AtomicU16>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let cell = status.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let cell = cell.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let code = cell.load(Ordering::SeqCst);
                if code == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let body =
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    (addr, status)
}

/// A port on 127.0.0.1 where nothing listens.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn http(path: &str) -> Probe {
    Probe::Http { path: path.into() }
}

const TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn parses_probe_specs() {
    assert_eq!(Probe::parse("tcp").unwrap(), Probe::Tcp);
    assert_eq!(Probe::parse("http:/healthz").unwrap(), http("/healthz"));
    assert_eq!(Probe::parse("http").unwrap(), http("/"));
    for bad in ["http:healthz", "udp", "http:/a b", ""] {
        let e = Probe::parse(bad).unwrap_err().to_string();
        assert!(e.contains("use http:/PATH or tcp"), "{bad}: {e}");
    }
}

#[test]
fn thresholds_decide_after_the_first_result() {
    let c = HealthConfig {
        unhealthy_threshold: 3,
        healthy_threshold: 2,
        ..HealthConfig::default()
    };
    let mut t = Tracker::default();
    let mut seen = Vec::new();
    for pass in [true, false, false, false, true, true, false, true] {
        t.record(pass, &c);
        seen.push(t.healthy.unwrap());
    }
    assert_eq!(seen, [true, true, true, false, false, true, true, true]);
    let mut first_fail = Tracker::default();
    first_fail.record(false, &c);
    assert_eq!(first_fail.healthy, Some(false));
}

#[tokio::test]
async fn http_probe_passes_on_200_and_fails_on_500_and_hangs() {
    let (addr, status) = http_server().await;
    assert_eq!(probe_once(&http("/healthz"), addr, TIMEOUT).await, Ok(()));
    status.store(204, Ordering::SeqCst);
    assert_eq!(probe_once(&http("/healthz"), addr, TIMEOUT).await, Ok(()));
    status.store(500, Ordering::SeqCst);
    assert_eq!(
        probe_once(&http("/healthz"), addr, TIMEOUT).await,
        Err("HTTP status 500".into())
    );
    status.store(0, Ordering::SeqCst);
    let hang = probe_once(&http("/healthz"), addr, TIMEOUT)
        .await
        .unwrap_err();
    assert!(hang.starts_with("no answer within"), "{hang}");
}

#[tokio::test]
async fn tcp_probe_passes_when_accepted_and_fails_when_refused() {
    let (addr, _) = http_server().await;
    assert_eq!(probe_once(&Probe::Tcp, addr, TIMEOUT).await, Ok(()));
    let closed = closed_port().await;
    let e = probe_once(&Probe::Tcp, closed, TIMEOUT).await.unwrap_err();
    assert!(e.starts_with("connect:"), "{e}");
    let e = probe_once(&http("/"), closed, TIMEOUT).await.unwrap_err();
    assert!(e.starts_with("connect:"), "{e}");
}

fn declared(entries: &[(SocketAddr, Health, Option<Option<Probe>>)]) -> Declared {
    let mut d = Declared::default();
    for (addr, health, check) in entries {
        let key = EndpointKey {
            service: "web".into(),
            address: addr.ip().to_string(),
            port: addr.port(),
        };
        d.endpoints.insert(
            key.clone(),
            EndpointState {
                health: *health,
                ..EndpointState::default()
            },
        );
        if let Some(c) = check {
            d.checks.insert(key, c.clone());
        }
    }
    d
}

fn find(set: &EndpointMap, addr: SocketAddr) -> Option<Health> {
    set.iter()
        .find(|(k, _)| k.port == addr.port())
        .map(|(_, v)| v.health)
}

fn health_of(set: &EndpointMap, addr: SocketAddr) -> Health {
    find(set, addr).unwrap()
}

async fn must_become(rx: &mut watch::Receiver<EndpointMap>, addr: SocketAddr, want: Health) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while find(&rx.borrow_and_update(), addr) != Some(want) {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .unwrap_or_else(|_| panic!("{addr} did not become {want:?}"))
            .unwrap();
    }
}

#[tokio::test]
async fn checker_marks_failing_endpoints_unhealthy_and_recovers_them() {
    let (good, _) = http_server().await;
    let (flaky, status) = http_server().await;
    let closed = closed_port().await;
    let config = HealthConfig {
        probe: Some(http("/healthz")),
        interval: Duration::from_millis(50),
        timeout: TIMEOUT,
        unhealthy_threshold: 3,
        healthy_threshold: 2,
    };
    let d = declared(&[
        (good, Health::Healthy, None),
        (flaky, Health::Healthy, None),
        // Refused, but its own override disables checks: stays as declared.
        (closed, Health::Healthy, Some(None)),
    ]);
    let (_tx, rx) = watch::channel(d);
    let mut out = spawn_checker(config, rx).await;
    {
        let first = out.borrow_and_update();
        assert_eq!(health_of(&first, good), Health::Healthy);
        assert_eq!(health_of(&first, flaky), Health::Healthy);
        assert_eq!(health_of(&first, closed), Health::Healthy);
    }
    status.store(500, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    must_become(&mut out, flaky, Health::Unhealthy).await;
    // Three failures at 50ms intervals: not before the second interval.
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(health_of(&out.borrow(), good), Health::Healthy);
    status.store(200, Ordering::SeqCst);
    must_become(&mut out, flaky, Health::Healthy).await;
}

#[tokio::test]
async fn checker_probes_new_endpoints_and_respects_overrides_and_draining() {
    let (good, _) = http_server().await;
    let closed = closed_port().await;
    let config = HealthConfig {
        probe: None,
        interval: Duration::from_secs(3600),
        timeout: TIMEOUT,
        ..HealthConfig::default()
    };
    let (tx, rx) = watch::channel(declared(&[(good, Health::Healthy, None)]));
    let mut out = spawn_checker(config, rx).await;
    assert_eq!(health_of(&out.borrow_and_update(), good), Health::Healthy);
    // A new endpoint with its own tcp check is probed at once, not after the
    // (hour-long) interval; a draining one is not probed at all.
    let (draining, _) = http_server().await;
    tx.send(declared(&[
        (good, Health::Healthy, None),
        (closed, Health::Healthy, Some(Some(Probe::Tcp))),
        (draining, Health::Draining, Some(Some(Probe::Tcp))),
    ]))
    .unwrap();
    must_become(&mut out, closed, Health::Unhealthy).await;
    assert_eq!(health_of(&out.borrow(), draining), Health::Draining);
}
