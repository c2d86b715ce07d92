//! Progressive rollouts with real controllers and real Envoys: three
//! regions of one controller each, one Envoy per region (its own proxy
//! group and listener), and a route whose direct response names the
//! config generation, so each Envoy's traffic shows which config it has.

use std::time::Duration;

use meridian_tests::cluster::http_get;
use meridian_tests::envoy::Envoy;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use serde_json::{json, Value};

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];
const GROUPS: [&str; 3] = ["us", "eu", "ap"];
const CONVERGE: Duration = Duration::from_secs(60);

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn route(body: &str) -> Value {
    json!({"kind": "route", "name": "web", "spec": {"hosts": ["*"], "rules": [{"directResponse": {"status": 200, "body": body}}]}})
}

fn write(c: &Cluster, name: &str, docs: Value) -> String {
    let f = c.dir().join(name);
    std::fs::write(&f, docs.to_string()).unwrap();
    f.to_str().unwrap().to_string()
}

struct Bed {
    c: Cluster,
    ports: Vec<u16>,
    envoys: Vec<Envoy>,
}

/// The cluster, the policies (one region per step; `regions` bakes 2 s,
/// `slow` 15 s, `manual` 24 h), generation v1 everywhere, and the Envoys.
async fn bed() -> Bed {
    bed_with(&[]).await
}

/// [`bed`], with more `meridian bootstrap` flags for every Envoy.
async fn bed_with(bootstrap: &[&str]) -> Bed {
    let c = Cluster::start(
        3,
        ClusterOpts {
            regions: REGIONS.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        },
    )
    .await;
    let ports: Vec<u16> = GROUPS
        .iter()
        .map(|_| meridian_tests::ports::free_port())
        .collect();
    let steps: Vec<Value> = REGIONS.iter().map(|r| json!({"regions": [r]})).collect();
    let mut docs = vec![
        json!({"kind": "rollout", "name": "regions", "spec": {"steps": steps, "bakeTime": "2s"}}),
        json!({"kind": "rollout", "name": "slow", "spec": {"steps": steps, "bakeTime": "15s"}}),
        json!({"kind": "rollout", "name": "manual", "spec": {"steps": steps, "bakeTime": "24h"}}),
        route("v1"),
    ];
    for (g, p) in GROUPS.iter().zip(&ports) {
        docs.push(json!({"kind": "listener", "name": format!("edge-{g}"), "spec": {"address": "127.0.0.1", "port": p, "routes": ["web"], "proxyGroups": [g]}}));
    }
    let f = write(&c, "base.json", Value::Array(docs));
    ok(&c.cli(&["apply", "-f", &f]), "apply base");
    let mut envoys = Vec::new();
    for (r, g) in REGIONS.iter().zip(GROUPS) {
        let mut args = vec!["--region", r, "--group", g];
        args.extend_from_slice(bootstrap);
        envoys.push(Envoy::from_cli(&c, &format!("envoy-{r}"), &args));
    }
    let bed = Bed { c, ports, envoys };
    for i in 0..3 {
        eventually("every Envoy to serve v1", CONVERGE, || async {
            (bed.body(i).await.as_deref() == Some("v1")).then_some(())
        })
        .await;
    }
    bed
}

impl Bed {
    async fn body(&self, i: usize) -> Option<String> {
        match http_get(&format!("http://127.0.0.1:{}/", self.ports[i])).await {
            Ok((200, b)) => Some(b),
            _ => None,
        }
    }

    fn rollouts(&self) -> Vec<Value> {
        let out = self.c.cli(&["rollout", "status", "-o", "json"]);
        let v: Value = serde_json::from_str(&ok(&out, "rollout status")).unwrap();
        v["rollouts"].as_array().unwrap().clone()
    }

    fn rollout(&self, id: &str) -> Value {
        self.rollouts()
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no rollout {id}"))
    }

    /// Waits until the regions before `reached` serve `new` and checks that
    /// the others still serve `old`.
    async fn staged(&self, reached: usize, new: &str, old: &str) {
        for i in 0..reached {
            eventually("a reached region to serve the change", CONVERGE, || async {
                (self.body(i).await.as_deref() == Some(new)).then_some(())
            })
            .await;
        }
        for i in reached..3 {
            assert_eq!(
                self.body(i).await.as_deref(),
                Some(old),
                "{} got the change before its step",
                REGIONS[i]
            );
        }
    }

    /// Starts a rollout of generation `body` under `policy`; its id.
    fn start(&self, body: &str, policy: &str) -> String {
        let f = write(&self.c, &format!("{body}.json"), json!([route(body)]));
        let out = ok(
            &self.c.cli(&["apply", "-f", &f, "--rollout", policy]),
            "apply --rollout",
        );
        out.lines()
            .find_map(|l| l.strip_prefix("rollout "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no rollout id in {out}"))
            .to_string()
    }

    /// Observes traffic and status until the rollout `id` completes: a
    /// region serves the new generation only once its step is reached
    /// (status read after the request, and steps only move forward).
    async fn watch_promotions(&self, id: &str, new: &str) {
        for _ in 0..600 {
            let mut seen = Vec::new();
            for i in 0..3 {
                seen.push(self.body(i).await.as_deref() == Some(new));
            }
            let r = self.rollout(id);
            let step = r["step"].as_u64().unwrap() as usize - 1;
            let complete = r["state"] == "complete";
            assert!(
                matches!(r["state"].as_str(), Some("progressing" | "complete")),
                "{r}"
            );
            for (i, s) in seen.iter().enumerate() {
                assert!(
                    !s || complete || i <= step,
                    "region {} serves {new} at step {}: {r}",
                    REGIONS[i],
                    step + 1
                );
            }
            if complete && seen.iter().all(|s| *s) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("rollout {id} did not complete: {}", self.rollout(id));
    }
}

/// A good change promotes region by region; while it runs, a second
/// rollout of the same object and a plain write of it are refused with the
/// object and the rollout named, and change nothing; a change Envoy NACKs
/// halts in the first step and is rolled back there, never reaching the
/// other regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_promote_region_by_region_refuse_overlaps_and_roll_back_nacks() {
    let bed = bed().await;
    let c = &bed.c;
    let id = bed.start("v2", "manual");
    ok(&c.cli(&["rollout", "pause", &id]), "pause");
    assert_eq!(bed.rollout(&id)["state"], "paused");

    // Refusals while the rollout holds route/web.
    let out = c.cli(&[
        "put",
        "route",
        "web",
        "--value",
        &route("v9")["spec"].to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(4),
        "a plain write is a failed precondition: {err}"
    );
    assert!(err.contains("route/web") && err.contains(&id), "{err}");
    let f = write(
        c,
        "overlap.json",
        json!([route("v8"), {"kind": "service", "name": "extra", "spec": {"port": 80}}]),
    );
    let out = c.cli(&["apply", "-f", &f, "--rollout", "slow"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("route/web: already part of rollout") && err.contains(&id),
        "{err}"
    );
    assert_eq!(
        c.cli(&["get", "service", "extra"]).status.code(),
        Some(3),
        "the refused rollout created something"
    );
    let live: Value =
        serde_json::from_str(&ok(&c.cli(&["get", "route", "web", "-o", "json"]), "get")).unwrap();
    assert!(
        live.to_string().contains("v2") && !live.to_string().contains("v9"),
        "{live}"
    );
    let status: Value =
        serde_json::from_str(&ok(&c.cli(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(status["rollouts"][0]["id"], id.as_str(), "{status}");
    ok(&c.cli(&["rollout", "resume", &id]), "resume");

    // Step by step (promoted by hand: the policy bakes 24 h).
    bed.staged(1, "v2", "v1").await;
    ok(&c.cli(&["rollout", "promote", &id]), "promote");
    bed.staged(2, "v2", "v1").await;
    ok(
        &c.cli(&["rollout", "promote"]),
        "promote the one active rollout",
    );
    bed.staged(3, "v2", "v1").await;
    assert_eq!(
        bed.rollout(&id)["state"],
        "progressing",
        "the last step bakes too"
    );
    ok(
        &c.cli(&["rollout", "promote", &id]),
        "promote the last step",
    );
    assert_eq!(bed.rollout(&id)["state"], "complete");
    // Ended: the object is free again.
    ok(
        &c.cli(&[
            "put",
            "route",
            "web",
            "--value",
            &route("v2")["spec"].to_string(),
        ]),
        "put after completion",
    );

    // On its own, 2 s a step: never a region before its step.
    let id = bed.start("v3", "regions");
    bed.watch_promotions(&id, "v3").await;

    // NACK: Envoy cannot bind 192.0.2.1 (TEST-NET-1); the model accepts it.
    let bad = json!([{"kind": "listener", "name": "unbindable", "spec": {"address": "192.0.2.1", "port": meridian_tests::ports::free_port(), "routes": ["web"]}}]);
    let f = write(c, "bad.json", bad);
    let out = c.cli(&["apply", "-f", &f, "--rollout", "slow", "--wait=90s"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(12),
        "a halted rollout exits 12: {err}"
    );
    assert!(
        err.contains("rolled-back at step 1") && err.contains("NACKed"),
        "{err}"
    );
    let r = bed
        .rollouts()
        .into_iter()
        .find(|r| r["policy"] == "slow")
        .unwrap();
    assert_eq!(r["state"], "rolled-back", "{r}");
    assert_eq!(r["step"], 1, "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("envoy-us-east"),
        "{r}"
    );
    assert_eq!(
        c.cli(&["get", "listener", "unbindable"]).status.code(),
        Some(3),
        "the new listener was not rolled back"
    );
    assert!(bed.envoys[0].sum_stats("lds.update_rejected").await >= 1);
    for i in 1..3 {
        assert_eq!(
            bed.envoys[i].sum_stats("lds.update_rejected").await,
            0,
            "{} saw the bad listener",
            REGIONS[i]
        );
        assert_eq!(bed.body(i).await.as_deref(), Some("v3"));
    }
    eventually(
        "us-east back in sync after the rollback",
        CONVERGE,
        || async {
            let out = c.cli(&["proxy-status", "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let p = v["proxies"]
                .as_array()?
                .iter()
                .find(|p| p["node_id"] == "envoy-us-east")?
                .clone();
            p["types"]
                .as_array()?
                .iter()
                .all(|t| t["state"] != "NACKED")
                .then_some(())
        },
    )
    .await;
    // The leader counted the halt.
    let mut halts = 0;
    for id in c.running_ids() {
        let (_, m) = http_get(&c.node(id).admin_url("/metrics")).await.unwrap();
        halts += m
            .lines()
            .find_map(|l| l.strip_prefix("meridian_rollout_halts_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            m.contains("meridian_rollouts{state=\"rolled-back\"} 1"),
            "{m}"
        );
    }
    assert_eq!(halts, 1);
    assert_eq!(
        bed.body(0).await.as_deref(),
        Some("v3"),
        "us-east is back on the config before the change"
    );
}

/// The leader killed mid-rollout: the new leader continues the same run
/// from the step the log holds, and every Envoy ends on the new config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_resumes_from_its_step_on_a_new_leader() {
    let mut bed = bed().await;
    let id = bed.start("v2", "slow");
    eventually("us-east to serve v2", CONVERGE, || async {
        (bed.body(0).await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    let before = bed.rollout(&id);
    let status: Value =
        serde_json::from_str(&ok(&bed.c.cli(&["status", "-o", "json"]), "status")).unwrap();
    let leader = status["leader_id"].as_u64().unwrap();
    bed.c.kill(leader);
    // Promote through the new leader: the step moves on from where it was.
    let after = eventually("a new leader to promote the run", CONVERGE, || async {
        let out = bed.c.cli(&["rollout", "promote", &id, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .await;
    assert_eq!(
        after["started_at_ms"], before["started_at_ms"],
        "the run started over: {after}"
    );
    assert_eq!(
        after["step"].as_u64().unwrap(),
        before["step"].as_u64().unwrap() + 1,
        "{before} -> {after}"
    );
    let status: Value =
        serde_json::from_str(&ok(&bed.c.cli(&["status", "-o", "json"]), "status")).unwrap();
    assert_ne!(status["leader_id"].as_u64(), Some(leader));
    // The rest of the way on its own (15 s bake), through the new leader.
    eventually(
        "the rollout to complete",
        Duration::from_secs(90),
        || async { (bed.rollout(&id)["state"] == "complete").then_some(()) },
    )
    .await;
    for i in 0..3 {
        eventually("every Envoy to serve v2", CONVERGE, || async {
            (bed.body(i).await.as_deref() == Some("v2")).then_some(())
        })
        .await;
    }
    bed.envoys.clear();
}

/// The canary region's Envoys send their upstream 5xx to the controllers
/// (the stats sink of `meridian bootstrap`); a change that routes to an
/// upstream answering 503 raises the step's error rate above the policy's
/// threshold, and the leader rolls the step back before it bakes. The other
/// regions never see the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_5xx_rate_passes_the_threshold_is_rolled_back() {
    let bed = bed_with(&["--stats-flush-interval", "1s"]).await;
    let c = &bed.c;
    let bad = meridian_tests::upstream::Upstream::start("bad").await;
    bad.set_failing(true);
    let steps: Vec<Value> = REGIONS.iter().map(|r| json!({"regions": [r]})).collect();
    let setup = json!([
        {"kind": "rollout", "name": "errors", "spec": {"steps": steps, "bakeTime": "10m", "maxErrorRate": 0.2, "minRequests": 10}},
        {"kind": "service", "name": "bad", "spec": {"port": bad.port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]}},
    ]);
    let f = write(c, "errors-setup.json", setup);
    ok(
        &c.cli(&["apply", "-f", &f]),
        "apply the policy and the service",
    );
    let change = json!([{"kind": "route", "name": "web", "spec": {"hosts": ["*"], "rules": [{"backends": [{"service": "bad"}]}]}}]);
    let f = write(c, "errors-change.json", change);
    ok(
        &c.cli(&["apply", "-f", &f, "--rollout", "errors"]),
        "start the rollout",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let run = loop {
        // Traffic through the canary; the change answers 503 there.
        for _ in 0..5 {
            let _ = bed.body(0).await;
        }
        for i in 1..3 {
            assert_eq!(
                bed.body(i).await.as_deref(),
                Some("v1"),
                "region {} must not see the change before its step",
                REGIONS[i]
            );
        }
        let run = bed
            .rollouts()
            .into_iter()
            .find(|r| r["policy"] == "errors")
            .expect("the rollout");
        if run["state"] != "progressing" {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout did not halt on its error rate: {run:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["state"], "rolled-back", "{run:#}");
    assert_eq!(run["step"], 1, "{run:#}");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error rate"), "{run:#}");
    eventually("the canary to serve v1 again", CONVERGE, || async {
        (bed.body(0).await.as_deref() == Some("v1")).then_some(())
    })
    .await;
}
