//! Property: `snapshot restore` of a real backup (an agent connected, its
//! claim, lease and endpoints in the store, thousands of objects that refer
//! to each other, more bytes than one transaction takes) gives the new
//! cluster exactly the old one's config, or, when it fails, nothing at all.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_tests::agent::AgentProc;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use serde_json::json;

use super::support::*;

const SERVICES: usize = 1_300;
const ROUTES_PER_LISTENER: usize = 100;
const CONFIG_KINDS: [&str; 6] = [
    "region", "secret", "service", "cluster", "route", "listener",
];

/// Every object of the cluster, by `kind/name`, with its value as read.
async fn objects(c: &Cluster) -> BTreeMap<String, Vec<u8>> {
    let leader = c.wait_leader().await;
    let mut client = c.config(leader).await;
    let r = client
        .list(pb::ListRequest {
            kind: String::new(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    r.objects
        .into_iter()
        .map(|o| (format!("{}/{}", o.kind, o.name), o.value))
        .collect()
}

fn config_only(all: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    all.iter()
        .filter(|(k, _)| CONFIG_KINDS.contains(&k.split('/').next().unwrap()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn write(c: &Cluster, id: &str, ops: Vec<pb::TxnOp>) {
    let leader = c.wait_leader().await;
    let mut client = c.config(leader).await;
    client
        .txn(pb::TxnRequest {
            request_id: id.into(),
            ops,
            dry_run: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"));
}

/// Regions that fail over to each other, services that fail over to
/// them with ~7 KB of static endpoints each (together more than one
/// transaction's 8 MiB), a route per service, listeners over the routes,
/// and a registered cluster whose agent is connected.
async fn populate(c: &Cluster) -> (AgentProc, String) {
    write(
        c,
        "regions",
        vec![
            put_op("region", "us-east", json!({"failover": ["eu-west"]}), None),
            put_op("region", "eu-west", json!({"failover": ["us-east"]}), None),
        ],
    )
    .await;
    let endpoints: Vec<serde_json::Value> = (0..160)
        .map(|j| json!({"address": format!("10.1.{}.{}", j / 200, j % 200 + 1), "region": "eu-west"}))
        .collect();
    for chunk in (0..SERVICES).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| {
                let spec = json!({"port": 8080, "failover": {"regions": ["eu-west"]}, "endpoints": endpoints});
                put_op("service", &format!("s-{i:04}"), spec, None)
            })
            .collect();
        write(c, &format!("services-{}", chunk[0]), ops).await;
    }
    let routes = (0..SERVICES)
        .map(|i| {
            let spec = json!({
                "hosts": [format!("r-{i:04}.example.com")],
                "rules": [{"backends": [{"service": format!("s-{i:04}")}]}],
            });
            put_op("route", &format!("r-{i:04}"), spec, None)
        })
        .collect();
    write(c, "routes", routes).await;
    let listeners = (0..SERVICES / ROUTES_PER_LISTENER)
        .map(|l| {
            let routes: Vec<String> = (l * ROUTES_PER_LISTENER..(l + 1) * ROUTES_PER_LISTENER)
                .map(|i| format!("r-{i:04}"))
                .collect();
            let spec = json!({"port": 10000 + l, "routes": routes});
            put_op("listener", &format!("l-{l}"), spec, None)
        })
        .collect();
    write(c, "listeners", listeners).await;

    let out = c.cli(&[
        "clusters",
        "add",
        "east-1",
        "--region",
        "us-east",
        "--lease-ttl",
        "30s",
        "--on-lease-expiry",
        "drop",
    ]);
    must_succeed(&out);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let agent = AgentProc::start(c.dir(), "east-1", "us-east", &token, &c.api_addrs());
    agent.declare(&[("s-0000", 8080)]);
    eventually(
        "the agent's claim, lease and endpoints",
        Duration::from_secs(60),
        || async {
            let all = objects(c).await;
            let has = |kind: &str| all.keys().any(|k| k.starts_with(&format!("{kind}/")));
            (has("claim") && has("lease") && has("endpoints")).then_some(())
        },
    )
    .await;
    (agent, token)
}

/// A failed restore (one route of the backup refers to a service that is
/// not there) leaves the new cluster empty, after some of the backup's
/// transactions had committed; the good backup then restores into it the
/// source's config exactly, and the agent, pointed at the new cluster with
/// its old token, reports its endpoints there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_leaves_the_new_cluster_empty_and_a_real_backup_restores_identical_config()
{
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let (mut agent, token) = populate(&c).await;
    let file = c.dir().join("backup.snap");
    must_succeed(&c.cli(&["snapshot", "save", file.to_str().unwrap()]));
    let source = config_only(&objects(&c).await);
    assert!(
        source.len() > 2_000 + 600,
        "{} config objects",
        source.len()
    );
    agent.kill();

    // Same length, so the snapshot still decodes: only the reference breaks.
    let mut bad = std::fs::read(&file).unwrap();
    let (from, to) = (br#""service":"s-1299""#, br#""service":"x-1299""#);
    let mut patched = 0;
    for i in 0..bad.len() - from.len() {
        if &bad[i..i + from.len()] == from {
            bad[i..i + from.len()].copy_from_slice(to);
            patched += 1;
        }
    }
    assert!(patched > 0, "route r-1299 not found in the backup");
    let bad_file = c.dir().join("bad.snap");
    std::fs::write(&bad_file, bad).unwrap();

    let fresh = Cluster::start(1, ClusterOpts::default()).await;
    let out = fresh.cli(&["snapshot", "restore", bad_file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a backup with a broken reference restored"
    );
    assert!(stderr.contains("route/r-1299"), "{stderr}");
    assert!(
        stderr.contains("rolled back: the cluster is empty again"),
        "{stderr}"
    );
    let left = objects(&fresh).await;
    assert!(
        left.is_empty(),
        "{} objects left, e.g. {:?}",
        left.len(),
        left.keys().next()
    );

    let out = fresh.cli(&["snapshot", "restore", file.to_str().unwrap()]);
    must_succeed(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not restored: 1 claim, "), "{stdout}");
    let restored = objects(&fresh).await;
    // Agents' state is theirs to report again, not the backup's.
    assert_eq!(config_only(&restored).len(), restored.len());
    let differ: Vec<&String> = source
        .keys()
        .chain(restored.keys())
        .filter(|k| source.get(*k) != restored.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "{} objects differ, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );

    let token_agent =
        AgentProc::start(fresh.dir(), "east-1", "us-east", &token, &fresh.api_addrs());
    token_agent.declare(&[("s-0000", 8080)]);
    eventually(
        "the agent's endpoints in the new cluster",
        Duration::from_secs(60),
        || async {
            objects(&fresh)
                .await
                .keys()
                .any(|k| k.starts_with("endpoints/"))
                .then_some(())
        },
    )
    .await;
}
