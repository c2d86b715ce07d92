//! The multi-region test bed of issue 5, all real processes on loopback:
//! 3 regions x 3 controllers (9 nodes), one agent per region (file source,
//! TCP health checks), one Envoy per region (bootstrap from `meridian
//! bootstrap`), and 2 upstreams per region that answer with their region.
//!
//! The phases run in order on one bed (starting it is the expensive part):
//! (a) locality, (b) failover when a region's upstreams die and are reported
//! gone, and back, (c) outlier detection when they answer 5xx while reported
//! healthy, (d) agent killed: lease expiry drops its endpoints, restart
//! resyncs, (e) all controllers of a region killed: Envoy and agent move to
//! another region and updates still arrive. Failures and times are printed
//! with a `measured:` prefix and bounded by assertions.

use std::time::{Duration, Instant};

use meridian_tests::agent::AgentProc;
use meridian_tests::cluster::http_get;
use meridian_tests::envoy::{wait_all_ok, Envoy};
use meridian_tests::upstream::Upstream;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use serde_json::json;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
const GROUPS: [&str; 3] = ["us", "eu", "ap"];

fn put(c: &Cluster, kind: &str, name: &str, spec: serde_json::Value) {
    let out = c.cli(&["put", kind, name, "--value", &spec.to_string()]);
    assert!(
        out.status.success(),
        "put {kind}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends a request every 50 ms until `n` in a row satisfy `ok`; returns
/// (failed or unwanted requests, time taken).
async fn until_stable(
    port: u16,
    n: usize,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) -> (usize, Duration) {
    let start = Instant::now();
    let (mut bad, mut streak) = (0, 0);
    while streak < n {
        match http_get(&format!("http://127.0.0.1:{port}/")).await {
            Ok((200, body)) if ok(&body) => streak += 1,
            _ => {
                bad += 1;
                streak = 0;
            }
        }
        assert!(
            start.elapsed() < limit,
            "no stable answer through :{port} within {limit:?} ({bad} bad requests)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (bad, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_locality_failover_outliers_leases_and_region_loss() {
    let regions: Vec<String> = REGIONS
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.to_string(), 3))
        .collect();
    let mut c = Cluster::start(
        9,
        ClusterOpts {
            regions,
            ..Default::default()
        },
    )
    .await;
    let by_region = |c: &Cluster, r: &str| -> Vec<u64> {
        c.nodes
            .iter()
            .filter(|n| n.region == r)
            .map(|n| n.id)
            .collect()
    };

    // Config: regions with failover orders, one service with aggressive
    // outlier detection, a route, and one listener per region's proxy group.
    // Regions refer to each other: one apply creates them together.
    let regions_file = c.dir().join("regions.json");
    std::fs::write(
        &regions_file,
        json!([
            {"kind": "region", "name": "us-east", "spec": {"failover": ["eu-west", "ap-south"]}},
            {"kind": "region", "name": "eu-west", "spec": {"failover": ["us-east", "ap-south"]}},
            {"kind": "region", "name": "ap-south", "spec": {"failover": ["eu-west", "us-east"]}}
        ])
        .to_string(),
    )
    .unwrap();
    let out = c.cli(&["apply", "-f", regions_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    put(
        &c,
        "service",
        "web",
        json!({
            "port": 8080,
            "outlierDetection": {"consecutive5xx": 2, "interval": "500ms", "baseEjectionTime": "5s", "maxEjectionPercent": 100},
            "failover": {"thresholdPercent": 50}
        }),
    );
    put(
        &c,
        "route",
        "web",
        json!({"hosts": ["*"], "rules": [{"backends": [{"service": "web"}]}]}),
    );
    let ports: Vec<u16> = GROUPS
        .iter()
        .map(|_| meridian_tests::ports::free_port())
        .collect();
    for (g, port) in GROUPS.iter().zip(&ports) {
        put(
            &c,
            "listener",
            &format!("edge-{g}"),
            json!({"address": "127.0.0.1", "port": port, "routes": ["web"], "proxyGroups": [g]}),
        );
    }

    // Upstreams, clusters, agents (own region's controllers first).
    let mut ups = Vec::new();
    for r in REGIONS {
        ups.push(vec![Upstream::start(r).await, Upstream::start(r).await]);
    }
    let mut agents = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        let cluster = format!("k8s-{r}");
        let out = c.cli(&[
            "clusters",
            "add",
            &cluster,
            "--region",
            r,
            "--lease-ttl",
            "5s",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut order: Vec<String> = by_region(&c, r)
            .iter()
            .map(|id| c.node(*id).api_addr())
            .collect();
        for other in REGIONS.iter().filter(|o| *o != r) {
            order.extend(by_region(&c, other).iter().map(|id| c.node(*id).api_addr()));
        }
        let a = AgentProc::start(c.dir(), &cluster, r, &token, &order);
        a.declare(&[("web", ups[i][0].port), ("web", ups[i][1].port)]);
        agents.push(a);
    }
    eventually(
        "every agent's endpoints committed",
        Duration::from_secs(60),
        || async { (c.healthy_endpoints("web")? == 6).then_some(()) },
    )
    .await;

    let mut envoys = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        envoys.push(Envoy::from_cli(
            &c,
            &format!("envoy-{r}"),
            &["--region", r, "--group", GROUPS[i]],
        ));
    }

    // (a) Each Envoy sends its requests to its own region's upstreams.
    for (i, r) in REGIONS.iter().enumerate() {
        wait_all_ok(ports[i], "/", 20, Duration::from_secs(60), |b| b == *r).await;
    }
    eprintln!("measured: (a) every region served locally");

    // (b) us-east's upstreams die; the agent's health checks report them
    // gone; Envoy us goes to eu-west (us-east's first failover region).
    for u in &ups[0] {
        u.stop();
    }
    let (bad, took) = until_stable(ports[0], 20, Duration::from_secs(30), |b| b == "eu-west").await;
    eprintln!("measured: (b) failover us-east -> eu-west in {took:?}, {bad} failed requests");
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    // Restored: traffic returns to us-east.
    let restored = [
        Upstream::start_on("us-east", ups[0][0].port).await,
        Upstream::start_on("us-east", ups[0][1].port).await,
    ];
    let (bad, took) = until_stable(ports[0], 20, Duration::from_secs(30), |b| b == "us-east").await;
    eprintln!("measured: (b) back to us-east in {took:?}, {bad} failed or remote requests");

    // (c) us-east's upstreams answer 503 while the agent still reports them
    // healthy (TCP checks pass): outlier detection ejects them.
    for u in &restored {
        u.set_failing(true);
    }
    let (bad, took) = until_stable(ports[0], 20, Duration::from_secs(30), |b| b == "eu-west").await;
    eprintln!(
        "measured: (c) outlier ejection us-east -> eu-west in {took:?}, {bad} failed requests"
    );
    assert!(
        bad < 50,
        "{bad} requests failed before outlier detection moved traffic"
    );
    for u in &restored {
        u.set_failing(false);
    }
    let (_, took) = until_stable(ports[0], 20, Duration::from_secs(30), |b| b == "us-east").await;
    eprintln!("measured: (c) healthy again: back to us-east in {took:?} (ejection time 5 s)");

    // (d) Agent eu-west killed: after its 5 s lease its endpoints leave EDS
    // (drop policy) and Envoy eu moves to us-east; restarted, it resyncs.
    agents[1].kill();
    let killed = Instant::now();
    let (bad, took) = until_stable(ports[1], 10, Duration::from_secs(40), |b| b == "us-east").await;
    eprintln!("measured: (d) agent eu-west killed; lease expired and traffic moved after {:?} ({bad} requests went elsewhere or failed)", killed.elapsed());
    assert!(
        took >= Duration::from_secs(4),
        "endpoints dropped before the lease TTL: {took:?}"
    );
    agents[1].spawn();
    let (_, took) = until_stable(ports[1], 10, Duration::from_secs(40), |b| b == "eu-west").await;
    eprintln!("measured: (d) restarted agent resynced; eu-west local again in {took:?}");
    let out = c.cli(&["endpoints", "web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let eu: Vec<_> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cluster"] == "k8s-eu-west")
        .collect();
    assert_eq!(
        eu.len(),
        2,
        "no stale or duplicate endpoints after resync: {v}"
    );

    // (e) Every us-east controller killed. Envoy us keeps serving, moves to
    // another region's controller and still gets updates; agent us too.
    let before = envoys[0].stat("control_plane.identifier").await.unwrap();
    let us_east = by_region(&c, "us-east");
    for &id in &us_east {
        c.kill(id);
    }
    let killed = Instant::now();
    let (bad, _) = until_stable(ports[0], 20, Duration::from_secs(10), |b| {
        REGIONS.contains(&b)
    })
    .await;
    assert_eq!(
        bad, 0,
        "Envoy us stopped serving when its region's controllers died"
    );
    // It moves to the next region's controllers (priority 1) holding the
    // current config: shown SYNCED there within 5 s of the move (issue 13).
    // The move waits for the election (the leader was in us-east: until a
    // new one answers, no controller takes new streams) and for Envoy to
    // eject each dead controller at its first refused connection.
    let (moved, synced) = c.wait_moved_then_synced("envoy-us-east", &us_east).await;
    let took = synced.saturating_duration_since(moved);
    eprintln!(
        "measured: (e) Envoy us listed on another region's controller {:?} after us-east's were killed, SYNCED {took:?} after that",
        moved.duration_since(killed)
    );
    assert!(
        took <= Duration::from_secs(5),
        "Envoy us was shown SYNCED only {took:?} after it moved"
    );
    let started = Instant::now();
    put(
        &c,
        "route",
        "web",
        json!({"hosts": ["*"], "rules": [
            {"matches": [{"path": {"exact": "/version"}}], "directResponse": {"status": 200, "body": "v2"}},
            {"backends": [{"service": "web"}]}
        ]}),
    );
    eventually(
        "Envoy us to get the change from another region",
        Duration::from_secs(60),
        || async {
            let (code, body) = http_get(&format!("http://127.0.0.1:{}/version", ports[0]))
                .await
                .ok()?;
            (code == 200 && body == "v2").then_some(())
        },
    )
    .await;
    let after = envoys[0].stat("control_plane.identifier").await.unwrap();
    eprintln!("measured: (e) us-east controllers down; Envoy us moved from {before} to {after} and converged in {:?}", started.elapsed());
    assert!(
        !after.starts_with("meridian-us-east"),
        "Envoy us is still served by {after}"
    );
    // The agent moved too: a change in us-east's endpoints still lands.
    agents[0].declare(&[("web", restored[0].port)]);
    eventually(
        "agent us-east to report through another region",
        Duration::from_secs(60),
        || async {
            let out = c.cli(&["endpoints", "web", "-o", "json"]);
            let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                Ok(v) => v,
                Err(_) => {
                    eprintln!("endpoints: {}", String::from_utf8_lossy(&out.stderr));
                    return None;
                }
            };
            let us = v["endpoints"]
                .as_array()?
                .iter()
                .filter(|e| e["cluster"] == "k8s-us-east")
                .count();
            if us != 1 {
                eprintln!("us-east endpoints: {us}");
            }
            (us == 1).then_some(())
        },
    )
    .await;
    for e in &envoys {
        assert_eq!(e.sum_stats("update_rejected").await, 0);
    }
}
