//! `meridian-bench failover`: traffic failover between two regions through
//! one real Envoy (bootstrap as `meridian bootstrap` makes it, /readyz
//! checks included), at the model's defaults for a service with `failover`
//! and an HTTP health check. For each failure mode (upstreams answering
//! 503, upstreams refusing connections) and each run: the time from the
//! fault to sustained ≥ 99 % success, the failed requests, whether traffic
//! ever went back to the failing region before it healed, and the same for
//! healing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use meridian_testkit::envoy::Envoy;
use meridian_testkit::http::http_get;
use meridian_testkit::upstream::Upstream;
use meridian_testkit::{try_eventually, Cluster, ClusterOpts};
use meridian_translate::bootstrap::BootstrapSpec;
use serde_json::{json, Value};

use crate::output::{print_value, table, Format};
use crate::Global;

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Requests per second through the Envoy (one client, one at a time).
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// How long each fault, and each healing, is watched.
    #[arg(long, default_value = "10s", value_parser = crate::output::parse_duration)]
    pub observe: Duration,
    /// Runs per failure mode.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The service's health check interval (healthy threshold 2).
    #[arg(long, default_value = "1s", value_parser = crate::output::parse_duration)]
    pub hc_interval: Duration,
    /// Turn the route's retries off (`retries: {attempts: 0}`): the
    /// behaviour before failover services got retries by default, for a
    /// before/after comparison with one binary.
    #[arg(long)]
    pub no_retries: bool,
    /// Measure control-plane failures instead (controllers in three regions,
    /// the Envoy's region's controller killed; all killed and restarted):
    /// the data plane's success rate and the time until the Envoy is
    /// SYNCED again in proxy-status.
    #[arg(long)]
    pub control_plane: bool,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Http503,
    Refused,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Http503 => "503",
            Mode::Refused => "refused",
        }
    }
}

type Sample = (Instant, Option<String>);

/// From `t0` on: the time after which ≥ 99 % of requests succeed with
/// `want` (to the end), the time of the last request not answered by
/// `want`, and the failed requests.
fn analyse(samples: &[Sample], t0: Instant, want: &str) -> (f64, f64, usize) {
    let after: Vec<&Sample> = samples.iter().filter(|(at, _)| *at >= t0).collect();
    let good: Vec<bool> = after
        .iter()
        .map(|(_, g)| g.as_deref() == Some(want))
        .collect();
    let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0;
    // Suffix success rates, from the end.
    let (mut ok, mut n, mut sustained) = (0usize, 0usize, 0.0);
    for (i, g) in good.iter().enumerate().rev() {
        n += 1;
        ok += usize::from(*g);
        if ok * 100 >= n * 99 {
            sustained = if i == 0 { 0.0 } else { ms(after[i].0) };
        }
    }
    let last_bad = after
        .iter()
        .zip(&good)
        .filter(|(_, g)| !**g)
        .map(|((at, _), _)| ms(*at))
        .fold(0.0, f64::max);
    let failed = after.iter().filter(|(_, g)| g.is_none()).count();
    (sustained, last_bad, failed)
}

/// Whether traffic reached the failing region again after it had left
/// (20 requests in a row elsewhere): a failure, or an answer from it.
fn returned(samples: &[Sample], t0: Instant, away: &str) -> bool {
    let mut streak = 0;
    for (_, g) in samples.iter().filter(|(at, _)| *at >= t0) {
        match g.as_deref() {
            Some(r) if r != away => streak += 1,
            _ if streak >= 20 => return true,
            _ => streak = 0,
        }
    }
    false
}

async fn one_run(mode: Mode, run: usize, a: &FailoverArgs) -> Result<Value> {
    let c = Cluster::try_start(1, ClusterOpts::default()).await?;
    let mut us = vec![
        Upstream::start("us-east").await,
        Upstream::start("us-east").await,
    ];
    let _eu = [
        Upstream::start("eu-west").await,
        Upstream::start("eu-west").await,
    ];
    let endpoints: Vec<Value> = us
        .iter()
        .map(|u| (u, "us-east"))
        .chain(_eu.iter().map(|u| (u, "eu-west")))
        .map(|(u, r)| json!({"address": "127.0.0.1", "port": u.port, "region": r}))
        .collect();
    let port = meridian_testkit::ports::free_port();
    let mut rule = json!({"backends": [{"service": "web"}]});
    if a.no_retries {
        rule["retries"] = json!({"attempts": 0});
    }
    let file = c.dir().join("failover.json");
    std::fs::write(
        &file,
        json!([
            {"kind": "region", "name": "us-east", "spec": {"failover": ["eu-west"]}},
            {"kind": "region", "name": "eu-west", "spec": {"failover": ["us-east"]}},
            {"kind": "service", "name": "web", "spec": {
                "port": us[0].port, "endpoints": endpoints,
                "healthCheck": {"protocol": "http", "interval": format!("{}ms", a.hc_interval.as_millis())},
                "failover": {"thresholdPercent": 50}
            }},
            {"kind": "route", "name": "web", "spec": {"hosts": ["*"], "rules": [rule]}},
            {"kind": "listener", "name": "edge", "spec": {"address": "127.0.0.1", "port": port, "routes": ["web"]}}
        ])
        .to_string(),
    )?;
    let out = c.cli(&["apply", "-f", &file.to_string_lossy()]);
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spec = BootstrapSpec::new(
        &format!("bench-failover-{run}"),
        "us-east",
        Envoy::free_admin_port(),
        c.controllers(),
    );
    spec.controller_admin = c
        .controllers()
        .into_iter()
        .map(|(_, x)| x)
        .zip(c.admin_addrs())
        .collect::<BTreeMap<_, _>>();
    let _envoy = Envoy::from_spec(&spec, c.dir(), "error")?;
    try_eventually("traffic on us-east", Duration::from_secs(60), || async {
        matches!(http_get(&format!("http://127.0.0.1:{port}/")).await, Ok((200, b)) if b == "us-east").then_some(())
    })
    .await?;

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let out = samples.clone();
    let every = Duration::from_secs_f64(1.0 / f64::from(a.rate.max(1)));
    let client = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sent = Instant::now();
            let got = match http_get(&format!("http://127.0.0.1:{port}/")).await {
                Ok((200, body)) => Some(body),
                _ => None,
            };
            out.lock().unwrap().push((sent, got));
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault = Instant::now();
    let ports: Vec<u16> = us.iter().map(|u| u.port).collect();
    match mode {
        Mode::Http503 => us.iter().for_each(|u| u.set_failing(true)),
        Mode::Refused => us.iter().for_each(Upstream::stop),
    }
    tokio::time::sleep(a.observe).await;
    let healed = Instant::now();
    match mode {
        Mode::Http503 => us.iter().for_each(|u| u.set_failing(false)),
        Mode::Refused => {
            us.clear();
            for p in ports {
                us.push(Upstream::start_on("us-east", p).await);
            }
        }
    }
    tokio::time::sleep(a.observe).await;
    client.abort();
    let s = samples.lock().unwrap().clone();
    let during: Vec<Sample> = s.iter().filter(|(at, _)| *at < healed).cloned().collect();
    let (fo_sustained, fo_last_bad, fo_failed) = analyse(&during, fault, "eu-west");
    let (heal_sustained, heal_last_bad, heal_failed) = analyse(&s, healed, "us-east");
    let requests = during.iter().filter(|(at, _)| *at >= fault).count();
    Ok(json!({
        "mode": mode.name(), "run": run, "requests": requests,
        "failover_ms_99": fo_sustained, "failover_last_bad_ms": fo_last_bad, "failed": fo_failed,
        "failed_percent": 100.0 * fo_failed as f64 / requests.max(1) as f64,
        "returned_before_healed": returned(&during, fault, "us-east"),
        "heal_ms_99": heal_sustained, "heal_last_bad_ms": heal_last_bad, "heal_failed": heal_failed,
    }))
}

/// Whether proxy-status shows Envoy `node` SYNCED (every type SYNCED or with
/// nothing to send, and the revision it runs), and on which controller.
fn synced_on(c: &Cluster, node: &str) -> Option<u64> {
    let out = c.cli(&["proxy-status", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let p = v["proxies"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == node)?;
    let types = p["types"].as_array()?;
    let ok = !types.is_empty()
        && types
            .iter()
            .all(|t| t["state"] == "SYNCED" || t["state"] == "NOT_SENT")
        && p["synced_revision"].as_u64().unwrap_or(0) > 0;
    ok.then(|| p["controller"].as_u64().unwrap_or(0))
}

/// Polls until `node` is SYNCED on a controller `other_than` allows; the
/// time it took from `t0`.
async fn until_synced(
    c: &Cluster,
    node: &str,
    t0: Instant,
    other_than: Option<u64>,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ctl) = synced_on(c, node) {
            if other_than != Some(ctl) {
                return Ok(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        ensure!(Instant::now() < deadline, "{node} not SYNCED within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Control-plane failures with traffic on: one controller per region
/// (us-east, eu-west, ap-south), the Envoy in us-east.
async fn control_plane_run(run: usize, a: &FailoverArgs) -> Result<Vec<Value>> {
    let opts = ClusterOpts {
        regions: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
        ..ClusterOpts::default()
    };
    let mut c = Cluster::try_start(3, opts).await?;
    let up = Upstream::start("us-east").await;
    let port = meridian_testkit::ports::free_port();
    let file = c.dir().join("cp.json");
    std::fs::write(
        &file,
        json!([
            {"kind": "service", "name": "web", "spec": {"port": up.port,
                "endpoints": [{"address": "127.0.0.1", "port": up.port, "region": "us-east"}]}},
            {"kind": "route", "name": "web", "spec": {"hosts": ["*"], "rules": [{"backends": [{"service": "web"}]}]}},
            {"kind": "listener", "name": "edge", "spec": {"address": "127.0.0.1", "port": port, "routes": ["web"]}}
        ])
        .to_string(),
    )?;
    let out = c.cli(&["apply", "-f", &file.to_string_lossy()]);
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = format!("bench-cp-{run}");
    let mut spec = BootstrapSpec::new(&node, "us-east", Envoy::free_admin_port(), c.controllers());
    spec.controller_admin = c
        .controllers()
        .into_iter()
        .map(|(_, x)| x)
        .zip(c.admin_addrs())
        .collect::<BTreeMap<_, _>>();
    let _envoy = Envoy::from_spec(&spec, c.dir(), "error")?;
    try_eventually(
        "traffic through the Envoy",
        Duration::from_secs(60),
        || async {
            matches!(
                http_get(&format!("http://127.0.0.1:{port}/")).await,
                Ok((200, _))
            )
            .then_some(())
        },
    )
    .await?;
    until_synced(&c, &node, Instant::now(), None).await?;

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let out = samples.clone();
    let every = Duration::from_secs_f64(1.0 / f64::from(a.rate.max(1)));
    let client = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sent = Instant::now();
            let got = match http_get(&format!("http://127.0.0.1:{port}/")).await {
                Ok((200, body)) => Some(body),
                _ => None,
            };
            out.lock().unwrap().push((sent, got));
        }
    });
    let success = |from: Instant, to: Instant| {
        let s = samples.lock().unwrap();
        let w: Vec<_> = s.iter().filter(|(at, _)| *at >= from && *at < to).collect();
        let ok = w.iter().filter(|(_, g)| g.is_some()).count();
        (100.0 * ok as f64 / w.len().max(1) as f64, w.len())
    };
    let mut rows = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The Envoy's region's controller (node 1, us-east) killed.
    let t0 = Instant::now();
    c.kill(1);
    let synced_ms = until_synced(&c, &node, t0, Some(1)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, n) = success(t0, Instant::now());
    rows.push(
        json!({"scenario": "region-controllers-killed", "run": run, "requests": n,
        "success_percent": ok, "synced_ms": synced_ms}),
    );
    c.spawn(1);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // All killed, down for `observe`, all restarted.
    let t0 = Instant::now();
    c.kill_all();
    tokio::time::sleep(a.observe).await;
    let restarted = Instant::now();
    for id in 1..=3 {
        c.spawn(id);
    }
    let synced_ms = until_synced(&c, &node, restarted, None).await?;
    let (ok, n) = success(t0, Instant::now());
    rows.push(
        json!({"scenario": "all-killed-restarted", "run": run, "requests": n,
        "success_percent": ok, "synced_ms": synced_ms}),
    );
    client.abort();
    drop(up);
    Ok(rows)
}

async fn run_control_plane(a: FailoverArgs, g: &Global) -> Result<()> {
    let mut rows = Vec::new();
    for run in 0..a.runs {
        eprintln!("control plane run {} ...", run + 1);
        rows.extend(control_plane_run(run, &a).await?);
    }
    let report = json!({"rate": a.rate, "down_s": a.observe.as_secs_f64(), "runs": rows});
    match g.output {
        Format::Json | Format::Yaml => print_value(&report, g.output)?,
        _ => {
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r["scenario"].as_str().unwrap_or("").to_string(),
                        r["requests"].to_string(),
                        format!("{:.2}", r["success_percent"].as_f64().unwrap_or(0.0)),
                        format!("{:.0}", r["synced_ms"].as_f64().unwrap_or(0.0)),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["SCENARIO", "REQUESTS", "SUCCESS %", "SYNCED AFTER MS"],
                    &body
                )
            );
        }
    }
    Ok(())
}

pub async fn run(a: FailoverArgs, g: &Global) -> Result<()> {
    if a.control_plane {
        return run_control_plane(a, g).await;
    }
    let mut rows = Vec::new();
    for mode in [Mode::Http503, Mode::Refused] {
        for run in 0..a.runs {
            eprintln!("{} run {} ...", mode.name(), run + 1);
            rows.push(one_run(mode, run, &a).await?);
        }
    }
    let report = json!({"rate": a.rate, "observe_s": a.observe.as_secs_f64(), "hc_interval_ms": a.hc_interval.as_millis() as u64, "retries": !a.no_retries, "runs": rows});
    match g.output {
        Format::Json | Format::Yaml => print_value(&report, g.output)?,
        _ => {
            let f = |v: &Value| {
                v.as_f64()
                    .map(|x| format!("{x:.0}"))
                    .unwrap_or_else(|| v.to_string())
            };
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r["mode"].as_str().unwrap_or("").to_string(),
                        f(&r["failover_ms_99"]),
                        f(&r["failover_last_bad_ms"]),
                        format!(
                            "{} ({:.1}%)",
                            r["failed"],
                            r["failed_percent"].as_f64().unwrap_or(0.0)
                        ),
                        r["returned_before_healed"].to_string(),
                        f(&r["heal_ms_99"]),
                        r["heal_failed"].to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "MODE",
                        "TO 99% MS",
                        "LAST BAD MS",
                        "FAILED",
                        "RETURNED",
                        "HEAL 99% MS",
                        "HEAL FAILED"
                    ],
                    &body
                )
            );
        }
    }
    Ok(())
}
