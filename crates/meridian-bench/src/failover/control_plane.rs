//! `meridian-bench failover --control-plane`: control-plane failures with
//! traffic on (one controller per region, the Envoy in us-east): the data
//! plane's success rate and the time until proxy-status shows the Envoy
//! SYNCED again.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use meridian_testkit::envoy::Envoy;
use meridian_testkit::http::http_get;
use meridian_testkit::upstream::Upstream;
use meridian_testkit::{try_eventually, Cluster, ClusterOpts};
use serde_json::{json, Value};

use super::{Client, FailoverArgs};
use crate::output::{print_value, table, Format};
use crate::Global;

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
    let spec = Envoy::spec_for(&c, &node, "us-east");
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

    let client = Client::start(port, a.rate, a.client_timeout);
    let success = |from: Instant, to: Instant| {
        let s = client.samples();
        let w: Vec<_> = s.iter().filter(|x| x.at >= from && x.at < to).collect();
        let ok = w.iter().filter(|x| x.body.is_some()).count();
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
    client.stop().await;
    drop(up);
    Ok(rows)
}

pub(super) async fn run(a: FailoverArgs, g: &Global) -> Result<()> {
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
