//! Envoy traffic stats pushed to the controllers (issue 16's error-rate
//! signal): real Envoys with Meridian's bootstrap stream their counters
//! (`envoy.stat_sinks.metrics_service`) over the xDS cluster; the
//! controllers count upstream requests and 5xx per Envoy and answer for
//! the whole cluster, whichever controller holds an Envoy's stream.

use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_tests::bootstrap::BootstrapSpec;
use meridian_tests::cluster::http_get;
use meridian_tests::envoy::{batch, wait_all_ok, Envoy};
use meridian_tests::ops::{edge_ops, put_op};
use meridian_tests::upstream::Upstream;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(30);
/// Several flushes at 1 s, and the fan-out.
const COUNTED: Duration = Duration::from_secs(30);
const FAILING: usize = 25;

/// Service `web` on `upstream`, routed from a listener on `port`.
async fn web(c: &Cluster, upstream: &Upstream, port: u16) {
    let mut ops = vec![put_op(
        "service",
        "web",
        json!({"port": upstream.port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]}),
    )];
    ops.extend(edge_ops("web", port));
    c.apply_ops(ops).await;
}

/// Traffic through Envoy once its stats stream is open: some 200s, then
/// `FAILING` requests the upstream answers with 503.
async fn traffic(listener: u16, upstream: &Upstream) {
    wait_all_ok(listener, "/", 10, CONVERGE, |b| b == "web").await;
    upstream.set_failing(true);
    let (ok, failed) = batch(listener, "/", FAILING).await;
    assert_eq!(
        (ok.len(), failed),
        (0, FAILING),
        "the upstream did not fail every request"
    );
    upstream.set_failing(false);
}

async fn traffic_errors(
    c: &Cluster,
    on: u64,
    region: &str,
    group: &str,
    local_only: bool,
) -> pb::TrafficErrorsResponse {
    let req = pb::TrafficErrorsRequest {
        region: region.into(),
        proxy_group: group.into(),
        since_unix_ms: 0,
        local_only,
    };
    c.cluster(on)
        .await
        .get_traffic_errors(req)
        .await
        .expect("GetTrafficErrors")
        .into_inner()
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Property: an Envoy started from `meridian bootstrap` pushes its counters
/// to its controller, and `meridian proxy-status` shows its upstream 5xx of
/// the last minute (JSON and `-o wide`); the node's `/metrics` counts the
/// open stats stream.
#[tokio::test(flavor = "multi_thread")]
async fn an_envoys_upstream_5xx_show_in_proxy_status() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let up = Upstream::start("web").await;
    let listener = meridian_tests::ports::free_port();
    web(&c, &up, listener).await;
    let _envoy = Envoy::from_cli(
        &c,
        "stats-1",
        &["--region", "us-east", "--stats-flush-interval", "1s"],
    );
    // The stats stream's first flush is a baseline: wait for it before
    // the traffic that must be counted.
    eventually("the stats stream", COUNTED, || async {
        let (_, m) = http_get(&c.node(1).admin_url("/metrics")).await.ok()?;
        (metric(&m, "meridian_envoy_stats_streams")? == 1
            && metric(&m, "meridian_envoy_stats_reports_total")? >= 1)
            .then_some(())
    })
    .await;
    traffic(listener, &up).await;
    let p = eventually("proxy-status to show the 5xx", COUNTED, || async {
        let out = c.cli(&["proxy-status", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let p = v["proxies"]
            .as_array()?
            .iter()
            .find(|p| p["node_id"] == "stats-1")?
            .clone();
        (p["traffic_1m"]["errors_5xx"].as_u64()? >= FAILING as u64).then_some(p)
    })
    .await;
    let t = &p["traffic_1m"];
    let (requests, errors) = (
        t["requests"].as_u64().unwrap(),
        t["errors_5xx"].as_u64().unwrap(),
    );
    assert_eq!(
        errors, FAILING as u64,
        "only the failing requests are 5xx: {p}"
    );
    assert!(requests >= errors + 10, "the 200s count as requests: {p}");
    let out = c.cli(&["proxy-status", "-o", "wide"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.contains("RQ/1M") && header.contains("5XX/1M"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("stats-1"))
        .expect("a row for stats-1");
    assert!(
        row.split_whitespace().any(|w| w == FAILING.to_string()),
        "{text}"
    );
    let (_, m) = http_get(&c.node(1).admin_url("/metrics")).await.unwrap();
    assert_eq!(
        metric(
            &m,
            "meridian_envoy_stats_rejected_total{reason=\"malformed\"}"
        ),
        Some(0),
        "{m}"
    );
}

/// Property: an Envoy whose xDS and stats streams go to one controller of
/// three is counted when another controller is asked for its region's
/// errors (the fan-out); the other nodes hold none of it themselves, and a
/// proxy group filter leaves it out.
#[tokio::test(flavor = "multi_thread")]
async fn region_errors_asked_on_one_controller_count_an_envoy_on_another() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    for id in [1, 2, 3] {
        c.wait_ready(id).await;
    }
    let up = Upstream::start("web").await;
    let listener = meridian_tests::ports::free_port();
    web(&c, &up, listener).await;
    let third = c.controllers()[2].clone();
    let mut spec = BootstrapSpec::new("stats-3", "us-east", Envoy::free_admin_port(), vec![third]);
    spec.group = "canary".into();
    spec.stats_flush_interval = Some(Duration::from_secs(1));
    let _envoy = Envoy::from_spec(&spec, c.dir(), "info").expect("envoy");
    eventually("the stats stream on node 3", COUNTED, || async {
        let r = traffic_errors(&c, 3, "us-east", "", true).await;
        (r.per_envoy.len() == 1).then_some(())
    })
    .await;
    traffic(listener, &up).await;
    let r = eventually("node 1 to count node 3's Envoy", COUNTED, || async {
        let r = traffic_errors(&c, 1, "us-east", "canary", false).await;
        (r.errors >= FAILING as u64).then_some(r)
    })
    .await;
    assert_eq!(r.errors, FAILING as u64, "{r:?}");
    assert_eq!(r.envoys, 1, "{r:?}");
    assert!(r.unanswered.is_empty(), "{r:?}");
    assert_eq!(r.per_envoy[0].node_id, "stats-3");
    assert_eq!(
        r.per_envoy[0].controller_id, 3,
        "held by the controller it streams to"
    );
    assert!(r.per_envoy[0].connected);
    // Nodes 1 and 2 hold nothing of it themselves.
    for id in [1, 2] {
        let mine = traffic_errors(&c, id, "us-east", "", true).await;
        assert_eq!((mine.envoys, mine.errors), (0, 0), "node {id}: {mine:?}");
    }
    // Another group, another region: not this Envoy.
    assert_eq!(
        traffic_errors(&c, 2, "us-east", "stable", false)
            .await
            .envoys,
        0
    );
    assert_eq!(traffic_errors(&c, 2, "eu-west", "", false).await.envoys, 0);
    // The same over the operator's CLI path: proxy-status asked on node 1.
    let out = c.cli(&["proxy-status", "stats-3", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["proxies"][0]["controller"], 3, "{v}");
    assert!(
        v["proxies"][0]["traffic_1m"]["errors_5xx"]
            .as_u64()
            .unwrap_or(0)
            >= FAILING as u64,
        "{v}"
    );
}
