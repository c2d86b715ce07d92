//! One failover run: a bed (controllers, upstreams, endpoints static or
//! from agents, one Envoy in us-east), a fault on us-east's upstreams
//! watched for `observe`, the healing watched for `observe`, and the
//! figures of both.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use meridian_testkit::agent::AgentProc;
use meridian_testkit::envoy::Envoy;
use meridian_testkit::http::http_get;
use meridian_testkit::upstream::Upstream;
use meridian_testkit::{try_eventually, Cluster, ClusterOpts};
use serde_json::{json, Value};

use super::{Client, FailoverArgs, Mode, Sample};

pub(super) const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// The Envoy's counters a run reports (summed over its clusters, for the
/// whole run): why requests failed or were retried.
const ENVOY_STATS: [&str; 6] = [
    "upstream_rq_retry",
    "upstream_rq_retry_overflow",
    "upstream_rq_per_try_timeout",
    "upstream_rq_timeout",
    "outlier_detection.ejections_enforced_total",
    "health_check.failure",
];

/// What a run needs alive; fields drop in order, the Envoy first.
struct Bed {
    envoy: Envoy,
    _agents: Vec<AgentProc>,
    /// us-east's upstreams: the ones that fail.
    us: Vec<Upstream>,
    _others: Vec<Upstream>,
    /// The Envoy's listener.
    port: u16,
    c: Cluster,
}

/// From `t0` on: the time after which ≥ 99 % of requests succeed with
/// `want` (to the end), the time of the last request not answered by
/// `want`, and the failed requests. `samples` are in the order sent.
fn analyse(samples: &[Sample], t0: Instant, want: &str) -> (f64, f64, usize) {
    let after: Vec<&Sample> = samples.iter().filter(|x| x.at >= t0).collect();
    let good: Vec<bool> = after
        .iter()
        .map(|x| x.body.as_deref() == Some(want))
        .collect();
    let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0;
    // Suffix success rates, from the end.
    let (mut ok, mut n, mut sustained) = (0usize, 0usize, 0.0);
    for (i, g) in good.iter().enumerate().rev() {
        n += 1;
        ok += usize::from(*g);
        if ok * 100 >= n * 99 {
            sustained = if i == 0 { 0.0 } else { ms(after[i].at) };
        }
    }
    let last_bad = after
        .iter()
        .zip(&good)
        .filter(|(_, g)| !**g)
        .map(|(x, _)| ms(x.at))
        .fold(0.0, f64::max);
    let failed = after.iter().filter(|x| x.body.is_none()).count();
    (sustained, last_bad, failed)
}

/// Whether traffic reached the failing region again after it had left
/// (20 requests in a row elsewhere): a failure, or an answer from it.
fn returned(samples: &[Sample], t0: Instant, away: &str) -> bool {
    let mut streak = 0;
    for x in samples.iter().filter(|x| x.at >= t0) {
        match x.body.as_deref() {
            Some(r) if r != away => streak += 1,
            _ if streak >= 20 => return true,
            _ => streak = 0,
        }
    }
    false
}

fn apply(c: &Cluster, docs: Value) -> Result<()> {
    let file = c.dir().join("failover.json");
    std::fs::write(&file, docs.to_string())?;
    let out = c.cli(&["apply", "-f", &file.to_string_lossy()]);
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The service, route and listener every bed shares; `endpoints` static
/// ones, or none when agents report them.
fn config(a: &FailoverArgs, svc_port: u16, endpoints: Option<Vec<Value>>, port: u16) -> Vec<Value> {
    let mut rule = json!({"backends": [{"service": "web"}]});
    if a.no_retries {
        rule["retries"] = json!({"attempts": 0});
    }
    if let Some(t) = a.per_try_timeout {
        rule["retries"] = json!({
            "attempts": 2, "on": ["5xx", "reset", "connect-failure", "refused-stream"],
            "perTryTimeout": format!("{}ms", t.as_millis()),
        });
    }
    let mut svc = json!({
        "port": svc_port,
        "healthCheck": {"protocol": "http", "interval": format!("{}ms", a.hc_interval.as_millis())},
        "failover": {"thresholdPercent": 50}
    });
    if let Some(n) = a.max_retries {
        svc["circuitBreakers"] = json!({"maxRetries": n});
    }
    if let Some(e) = endpoints {
        svc["endpoints"] = json!(e);
    }
    vec![
        json!({"kind": "service", "name": "web", "spec": svc}),
        json!({"kind": "route", "name": "web", "spec": {"hosts": ["*"], "rules": [rule]}}),
        json!({"kind": "listener", "name": "edge", "spec": {"address": "127.0.0.1", "port": port, "routes": ["web"]}}),
    ]
}

/// One Envoy in us-east, bootstrapped against every controller, once it
/// sends traffic to us-east.
async fn envoy(c: &Cluster, run: usize, port: u16) -> Result<Envoy> {
    let spec = Envoy::spec_for(c, &format!("bench-failover-{run}"), "us-east");
    let e = Envoy::from_spec(&spec, c.dir(), "error")?;
    try_eventually("traffic on us-east", Duration::from_secs(60), || async {
        matches!(http_get(&format!("http://127.0.0.1:{port}/")).await, Ok((200, b)) if b == "us-east").then_some(())
    })
    .await?;
    Ok(e)
}

/// One controller; us-east and eu-west, two upstreams each, as static
/// endpoints of the service.
async fn static_bed(run: usize, a: &FailoverArgs) -> Result<Bed> {
    let c = Cluster::try_start(1, ClusterOpts::default()).await?;
    let us = Upstream::start_many("us-east", 2).await;
    let eu = Upstream::start_many("eu-west", 2).await;
    let endpoints: Vec<Value> = us
        .iter()
        .map(|u| (u, "us-east"))
        .chain(eu.iter().map(|u| (u, "eu-west")))
        .map(|(u, r)| json!({"address": "127.0.0.1", "port": u.port, "region": r}))
        .collect();
    let port = meridian_testkit::ports::free_port();
    let mut docs = vec![
        json!({"kind": "region", "name": "us-east", "spec": {"failover": ["eu-west"]}}),
        json!({"kind": "region", "name": "eu-west", "spec": {"failover": ["us-east"]}}),
    ];
    docs.extend(config(a, us[0].port, Some(endpoints), port));
    apply(&c, json!(docs))?;
    let e = envoy(&c, run, port).await?;
    Ok(Bed {
        envoy: e,
        _agents: Vec::new(),
        us,
        _others: eu,
        port,
        c,
    })
}

/// One controller per region (us-east, eu-west, ap-south), two upstreams
/// per region, reported by one `meridian agent` per region (a cluster of
/// its own, its region's controller first; the kit's agent: TCP checks
/// every 500 ms, unhealthy after 2, healthy after 1).
async fn agents_bed(run: usize, a: &FailoverArgs) -> Result<Bed> {
    let opts = ClusterOpts {
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        ..ClusterOpts::default()
    };
    let c = Cluster::try_start(3, opts).await?;
    let port = meridian_testkit::ports::free_port();
    let mut docs = vec![
        json!({"kind": "region", "name": "us-east", "spec": {"failover": ["eu-west", "ap-south"]}}),
        json!({"kind": "region", "name": "eu-west", "spec": {"failover": ["us-east", "ap-south"]}}),
        json!({"kind": "region", "name": "ap-south", "spec": {"failover": ["eu-west", "us-east"]}}),
    ];
    docs.extend(config(a, 8080, None, port));
    apply(&c, json!(docs))?;
    let (mut us, mut others, mut agents) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in REGIONS.iter().enumerate() {
        let ups = [Upstream::start(r).await, Upstream::start(r).await];
        let cluster = format!("k8s-{r}");
        let out = c.cli(&["clusters", "add", &cluster, "--region", r]);
        ensure!(
            out.status.success(),
            "clusters add {cluster}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout)?.trim().to_string();
        let api = c.api_addrs();
        let order: Vec<String> = std::iter::once(api[i].clone())
            .chain(
                api.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, x)| x.clone()),
            )
            .collect();
        let agent = AgentProc::start(c.dir(), &cluster, r, &token, &order);
        agent.declare(&[("web", ups[0].port), ("web", ups[1].port)]);
        agents.push(agent);
        match i {
            0 => us.extend(ups),
            _ => others.extend(ups),
        }
    }
    try_eventually(
        "every agent's endpoints HEALTHY",
        Duration::from_secs(60),
        || async { (c.healthy_endpoints("web")? == 6).then_some(()) },
    )
    .await
    .context("agents did not report their endpoints")?;
    let e = envoy(&c, run, port).await?;
    Ok(Bed {
        envoy: e,
        _agents: agents,
        us,
        _others: others,
        port,
        c,
    })
}

/// us-east's endpoints the controllers hold as HEALTHY (from the agent).
fn us_east_healthy(c: &Cluster) -> Option<usize> {
    let out = c.cli(&["endpoints", "web", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let n = v["endpoints"]
        .as_array()?
        .iter()
        .filter(|e| e["cluster"] == "k8s-us-east" && e["health"] == "HEALTHY")
        .count();
    Some(n)
}

pub(super) async fn one_run(mode: Mode, run: usize, a: &FailoverArgs) -> Result<Value> {
    let mut bed = match a.agents {
        true => agents_bed(run, a).await?,
        false => static_bed(run, a).await?,
    };
    let client = Client::start(bed.port, a.rate, a.client_timeout);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault = Instant::now();
    let ports: Vec<u16> = bed.us.iter().map(|u| u.port).collect();
    match mode {
        Mode::Http503 => bed.us.iter().for_each(|u| u.set_failing(true)),
        Mode::Refused => bed.us.iter().for_each(Upstream::stop),
        Mode::Hang => bed.us.iter().for_each(|u| u.set_hanging(true)),
    }
    tokio::time::sleep(a.observe).await;
    // What the agents reported by the end of the fault.
    let reported = a.agents.then(|| us_east_healthy(&bed.c));
    let healed = Instant::now();
    match mode {
        Mode::Http503 => bed.us.iter().for_each(|u| u.set_failing(false)),
        Mode::Refused => {
            bed.us.clear();
            for p in ports {
                bed.us.push(Upstream::start_on("us-east", p).await);
            }
        }
        Mode::Hang => bed.us.iter().for_each(|u| u.set_hanging(false)),
    }
    tokio::time::sleep(a.observe).await;
    let s = client.stop().await;
    let mut envoy = serde_json::Map::new();
    for stat in ENVOY_STATS {
        envoy.insert(stat.into(), bed.envoy.sum_stats(stat).await.into());
    }
    let during: Vec<Sample> = s.iter().filter(|x| x.at < healed).cloned().collect();
    let (fo_sustained, fo_last_bad, fo_failed) = analyse(&during, fault, "eu-west");
    let (heal_sustained, heal_last_bad, heal_failed) = analyse(&s, healed, "us-east");
    let requests = during.iter().filter(|x| x.at >= fault).count();
    // Latency of the fault's successful requests: the price of retries.
    let mut ok_ms: Vec<f64> = during
        .iter()
        .filter(|x| x.at >= fault && x.body.is_some())
        .map(|x| x.took.as_secs_f64() * 1000.0)
        .collect();
    ok_ms.sort_by(f64::total_cmp);
    let p99 = meridian_testkit::percentile(&ok_ms, 0.99);
    let max = ok_ms.last().copied().unwrap_or(0.0);
    Ok(json!({
        "mode": mode.name(), "run": run, "requests": requests,
        "failover_ms_99": fo_sustained, "failover_last_bad_ms": fo_last_bad, "failed": fo_failed,
        "failed_percent": 100.0 * fo_failed as f64 / requests.max(1) as f64,
        "returned_before_healed": returned(&during, fault, "us-east"),
        "heal_ms_99": heal_sustained, "heal_last_bad_ms": heal_last_bad, "heal_failed": heal_failed,
        "ok_latency_ms_p99": p99, "ok_latency_ms_max": max,
        "envoy": envoy, "agents_us_east_healthy_at_heal": reported,
    }))
}
