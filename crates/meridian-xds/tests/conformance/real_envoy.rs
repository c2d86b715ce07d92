//! [How a real Envoy shows the truth]: a real Envoy 1.40 on ADS (SotW and
//! delta) takes two generations of config whose cluster and route names
//! change, keeps serving every request through the switch (make-before-break),
//! rejects nothing (`update_rejected` stays 0) and reports itself connected.
//!
//! Needs the Envoy binary from `scripts/install-envoy.sh` (or `$MERIDIAN_ENVOY`);
//! fails, never skips, without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, AggregatedConfigSource, ConfigSource, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{HttpConnectionManager, Rds};
use envoy_types::util::pack_any;
use meridian_testkit::envoy::{write_bootstrap, Envoy};
use meridian_testkit::bootstrap::{AdsVariant, BootstrapSpec};
use meridian_xds::testing::fixtures::{hcm_listener, router_filter};
use meridian_xds::testing::TestServer;
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use meridian_xds::{MemorySource, SyncState, ViewSnapshot, XdsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::fast;

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: 2,
        ..Default::default()
    }
}

fn sock(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port() as u32)),
            ..Default::default()
        })),
    }
}

/// Generation `g`: cluster `c{g}` at `backend`, route `r{g}` to it, listener
/// `http` on `port` using `r{g}`. Names change every generation.
fn generation(v: &mut ViewSnapshot, g: u32, backend: SocketAddr, listen: SocketAddr) {
    v.by_type.clear();
    let c = format!("c{g}");
    let r = format!("r{g}");
    v.insert(
        c.clone(),
        pack_any(Cluster {
            name: c.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            }),
            ..Default::default()
        }),
    );
    v.insert(
        c.clone(),
        pack_any(ClusterLoadAssignment {
            cluster_name: c.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(sock(backend)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
    );
    v.insert(
        r.clone(),
        pack_any(RouteConfiguration {
            name: r.clone(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.clone())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
    );
    let hcm = HttpConnectionManager {
        stat_prefix: "ingress".into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: r,
        })),
        http_filters: vec![router_filter()],
        ..Default::default()
    };
    v.insert(
        "http",
        pack_any(Listener {
            address: Some(sock(listen)),
            ..hcm_listener("http", hcm)
        }),
    );
}

/// The test kit's free port (below the ephemeral range, per-process), as
/// a loopback address.
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], meridian_testkit::ports::free_port()))
}

/// A backend answering every request with `body`.
async fn backend(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// One HTTP/1.1 GET: (status, body); status 0 when the connection failed.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
    else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    if tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .is_err()
    {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // On failure keep the whole response: headers tell why Envoy refused.
    let body = if status == 200 {
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    } else {
        text.clone()
    };
    (status, body)
}

fn stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(": "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Meridian's own bootstrap (what `meridian bootstrap` prints) for one
/// Envoy on ADS to the test server.
fn bootstrap(delta: bool, xds: SocketAddr, admin: SocketAddr) -> BootstrapSpec {
    let mut spec = BootstrapSpec::new("real-envoy", "home", admin.port(), vec![("home".into(), xds.to_string())]);
    spec.group = "edge".into();
    spec.variant = if delta { AdsVariant::Delta } else { AdsVariant::Sotw };
    spec
}

async fn follow_generations(delta: bool) {
    let (a, b) = (backend("a").await, backend("b").await);
    let listen = free_port();
    let admin = free_port();
    let src = Arc::new(MemorySource::new());
    src.update(|v| generation(v, 0, a, listen));
    // The production removal grace: Envoy's workers switch listeners after
    // Envoy ACKs, and this test sends requests through that window.
    let cfg = XdsConfig {
        removal_grace: XdsConfig::default().removal_grace,
        ..fast()
    };
    let srv = TestServer::start(src.clone(), cfg).await;
    let dir = std::env::temp_dir().join(format!(
        "meridian-xds-envoy-{}-{}",
        std::process::id(),
        if delta { "delta" } else { "sotw" }
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("envoy.yaml");
    write_bootstrap(&bootstrap(delta, srv.addr, admin), &config).unwrap();
    let mut envoy = Envoy::try_start(&config, admin.port(), dir.join("envoy.log"), "warning").expect("start envoy");
    let logs = || envoy.log_text();

    // Generation 0 serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(listen, "/").await != (200, "a".to_string()) {
        assert!(
            Instant::now() < deadline,
            "generation 0 never served; envoy log:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = get(admin, "/stats").await.1;
    assert_eq!(stat(&stats, "control_plane.connected_state"), Some(1));
    for s in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(stat(&stats, s), Some(0), "{s}");
    }
    let synced = || {
        let st = srv.server.status();
        st.iter().any(|p| {
            p.node_id == "real-envoy"
                && [CLUSTER, ENDPOINT, LISTENER, ROUTE].iter().all(|t| {
                    p.types
                        .get(*t)
                        .is_some_and(|x| x.state == SyncState::Synced)
                })
        })
    };
    assert!(
        super::support::eventually(synced).await,
        "status: {:?}",
        srv.server.status()
    );

    // Generations 1..=4 rename cluster and route each time. Every request
    // during a switch must succeed: the new cluster exists (with endpoints)
    // before the route names it, and the old one goes only after.
    for g in 1..=4u32 {
        let (to, body_want) = if g % 2 == 1 { (b, "b") } else { (a, "a") };
        src.update(|v| generation(v, g, to, listen));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = get(listen, "/").await;
            assert_eq!(
                status,
                200,
                "generation {g}: request failed during the switch (body {body:?}); envoy log:\n{}",
                logs()
            );
            if body == body_want {
                break;
            }
            assert!(Instant::now() < deadline, "generation {g} never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            super::support::eventually(synced).await,
            "status: {:?}",
            srv.server.status()
        );
    }
    let stats = get(admin, "/stats").await.1;
    for s in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert_eq!(stat(&stats, s), Some(0), "{s}");
    }
    // The old cluster goes once the new routes are in place.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clusters = get(admin, "/clusters").await.1;
        if clusters.contains("c4::") && !clusters.contains("c3::") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old cluster never removed:\n{clusters}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        srv.server.recent_nacks().is_empty(),
        "{:?}",
        srv.server.recent_nacks()
    );
    envoy.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn real_envoy_follows_generations_sotw() {
    follow_generations(false).await;
}

#[tokio::test]
async fn real_envoy_follows_generations_delta() {
    follow_generations(true).await;
}
