//! Operator experience, black-box: `history`, `rollback` and `apply --wait`
//! as real `meridian` processes against real controllers, and with a real
//! Envoy for what `--wait` and a rollback mean to traffic.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_tests::envoy::{batch, wait_all_ok, Envoy};
use meridian_tests::upstream::Upstream;
use meridian_tests::{show, workspace_root, Cluster, ClusterOpts};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", show(o));
}

/// `o` exited with `code` and printed `text`.
#[track_caller]
fn assert_says(o: &Output, code: i32, text: &str) {
    assert_code(o, code);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(text),
        "{}",
        show(o)
    );
}

/// `o` exited with `code` and its error says `text`.
#[track_caller]
fn assert_fails_saying(o: &Output, code: i32, text: &str) {
    assert_code(o, code);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(text),
        "{}",
        show(o)
    );
}

fn json(o: &Output) -> Value {
    assert_code(o, 0);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn apply(c: &Cluster, name: &str, text: &str) -> Output {
    let f = write(c.dir(), name, text);
    c.cli(&["apply", "-f", f.to_str().unwrap()])
}

/// `kind/name` of an object, a history entry or a rollback's change.
fn object_key(v: &Value) -> String {
    format!(
        "{}/{}",
        v["kind"].as_str().unwrap(),
        v["name"].as_str().unwrap()
    )
}

/// The global revision and every object as `kind/name` -> spec.
fn state(c: &Cluster) -> (u64, Vec<(String, Value)>) {
    let v = json(&c.cli(&["get", "all", "-o", "json"]));
    let items = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (object_key(i), i["spec"].clone()))
        .collect();
    (v["revision"].as_u64().unwrap(), items)
}

fn names(st: &(u64, Vec<(String, Value)>)) -> Vec<String> {
    st.1.iter().map(|(k, _)| k.clone()).collect()
}

fn secret_doc() -> String {
    let text =
        std::fs::read_to_string(workspace_root().join("examples/multi-region.yaml")).unwrap();
    text.split("\n---\n")
        .find(|d| d.contains("kind: secret"))
        .expect("a secret in the example")
        .to_string()
}

const V1: &str = "\
kind: service
name: a
spec:
  port: 81
---
kind: route
name: main
spec:
  hosts: ['*']
  rules:
  - backends: [{service: a}]
---
kind: listener
name: edge
spec:
  port: 11001
  routes: [main]
";

const V3: &str = "\
kind: service
name: b
spec:
  port: 82
---
kind: route
name: main
spec:
  hosts: ['*']
  rules:
  - backends: [{service: b}]
";

fn route_backend(c: &Cluster) -> String {
    let v = json(&c.cli(&["get", "route", "main", "-o", "json"]));
    let spec = if v["spec"].is_object() {
        &v["spec"]
    } else {
        &v["items"][0]["spec"]
    };
    spec["rules"][0]["backends"][0]["service"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

fn history(c: &Cluster, args: &[&str]) -> Value {
    let mut a = vec!["history", "-o", "json"];
    a.extend_from_slice(args);
    json(&c.cli(&a))
}

fn entries(h: &Value) -> Vec<(u64, String, String)> {
    h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap(),
                e["action"].as_str().unwrap().to_string(),
                object_key(e),
            )
        })
        .collect()
}

/// Property: history lists every create, update and delete with its
/// revision, newest first, secrets redacted; a rollback of one object and of
/// the whole config is a new revision that restores what was there (deleted
/// if it did not exist), and rolling back again undoes it; bad revisions are
/// refused with a clear error and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_rollback() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    assert_code(&apply(&c, "v1.yaml", V1), 0);
    let r1 = state(&c).0;
    assert_code(&apply(&c, "secret.yaml", &secret_doc()), 0);
    let r2 = state(&c).0;
    assert_code(&apply(&c, "v3.yaml", V3), 0);
    let r3 = state(&c).0;
    assert_code(&c.cli(&["delete", "listener", "edge"]), 0);
    let r4 = state(&c).0;
    assert!(r1 < r2 && r2 < r3 && r3 < r4);

    // History, newest first.
    let h = history(&c, &[]);
    let e = entries(&h);
    let want: Vec<(u64, String, String)> = vec![
        (r4, "deleted".into(), "listener/edge".into()),
        (r3, "updated".into(), "route/main".into()),
        (r3, "created".into(), "service/b".into()),
        (r2, "created".into(), "secret/shop-tls".into()),
    ];
    for w in &want {
        assert!(e.contains(w), "{w:?} missing from {e:?}");
    }
    let revs: Vec<u64> = e.iter().map(|x| x.0).collect();
    assert!(
        revs.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {revs:?}"
    );
    assert_eq!(e.iter().filter(|x| x.0 == r1).count(), 3, "{e:?}");
    assert_eq!(h["oldest_revision"], 0, "nothing compacted");
    let text = h.to_string();
    assert!(!text.contains("PRIVATE KEY"), "secret not redacted: {text}");
    assert!(text.contains("<redacted>"), "{text}");
    // One object; and the table.
    let e = entries(&history(&c, &["route/main"]));
    assert_eq!(
        e,
        vec![
            (r3, "updated".into(), "route/main".into()),
            (r1, "created".into(), "route/main".into())
        ]
    );
    assert_eq!(entries(&history(&c, &["service"])).len(), 2);
    let o = c.cli(&["history", "--limit", "2"]);
    assert_code(&o, 0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("REVISION") && out.contains("DELETED") && out.contains("listener/edge"),
        "{}",
        show(&o)
    );
    assert_eq!(out.lines().count(), 3, "{}", show(&o));
    let o = c.cli(&["history", "secret/shop-tls", "-o", "yaml"]);
    assert_code(&o, 0);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("PRIVATE KEY"));

    // Bad revisions: clear errors, nothing changes.
    let before = state(&c);
    let o = c.cli(&["rollback", "--to", "999999"]);
    assert_fails_saying(&o, 5, "in the future");
    let o = c.cli(&["rollback", "route/main", "--to", &r4.to_string()]);
    assert_fails_saying(&o, 3, "nothing to roll back");
    let o = c.cli(&["rollback", "lease/x", "--to", &r1.to_string()]);
    assert_code(&o, 5);
    let o = c.cli(&["rollback", "route", "--to", &r1.to_string()]);
    assert_code(&o, 2);
    // A dry run changes nothing either.
    let o = c.cli(&["rollback", "--to", &r1.to_string(), "--dry-run"]);
    assert_says(&o, 0, "dry run");
    assert_eq!(state(&c), before);

    // One object.
    let o = c.cli(&["rollback", "route/main", "--to", &r1.to_string()]);
    assert_says(&o, 0, "route/main restored");
    let r5 = state(&c).0;
    assert!(r5 > r4, "a rollback is a new revision");
    assert_eq!(route_backend(&c), "a");
    let e = entries(&history(&c, &["route/main"]));
    assert_eq!(e[0], (r5, "updated".into(), "route/main".into()));
    // Undo it by rolling back again.
    let v = json(&c.cli(&[
        "rollback",
        "route/main",
        "--to",
        &r4.to_string(),
        "-o",
        "json",
    ]));
    assert_eq!(v["changes"][0]["name"], "main", "{v}");
    assert_eq!(route_backend(&c), "b");
    let r6 = state(&c).0;

    // The whole config, back to r1: b and the secret deleted, the listener
    // re-created, the route restored.
    let v = json(&c.cli(&["rollback", "--to", &r1.to_string(), "-o", "json"]));
    assert_eq!(v["base_revision"].as_u64(), Some(r6), "{v}");
    let mut acts: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (object_key(c), c["action"].as_str().unwrap().to_string()))
        .collect();
    acts.sort();
    assert_eq!(
        acts,
        vec![
            ("listener/edge".into(), "created".into()),
            ("route/main".into(), "updated".into()),
            ("secret/shop-tls".into(), "deleted".into()),
            ("service/b".into(), "deleted".into()),
        ]
    );
    let st = state(&c);
    assert_eq!(names(&st), vec!["listener/edge", "route/main", "service/a"]);
    assert_eq!(route_backend(&c), "a");
    // Undo the whole rollback: everything as at r6, the secret with its real
    // private key (the server restored it; the validator accepted it).
    let o = c.cli(&["rollback", "--to", &r6.to_string()]);
    assert_says(&o, 0, "secret/shop-tls restored");
    let st = state(&c);
    assert_eq!(
        names(&st),
        vec!["route/main", "secret/shop-tls", "service/a", "service/b"]
    );
    assert_eq!(route_backend(&c), "b");
    // The restored secret is the applied one: apply finds nothing to change.
    let o = apply(&c, "secret.yaml", &secret_doc());
    assert_says(&o, 0, "unchanged");
}

/// Property: once the event history was trimmed, history says so and a
/// rollback to a revision before it is refused, naming the oldest revision
/// available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_before_compacted_history_is_refused() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    assert_code(&apply(&c, "v1.yaml", V1), 0);
    let r1 = state(&c).0;
    let id = c.running_ids()[0];
    let mut client = c.config(id).await;
    // 11 x 1000 changes: more than the 10,000 retained events.
    for round in 0..11 {
        let ops = (0..1000)
            .map(|i| pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(pb::PutOp {
                    key: Some(pb::ObjectKey {
                        kind: "service".into(),
                        name: format!("s-{i}"),
                    }),
                    value: serde_json::to_vec(&serde_json::json!({"port": 1000 + round})).unwrap(),
                    expected_revision: None,
                })),
            })
            .collect();
        let req = pb::TxnRequest {
            request_id: format!("fill-{round}"),
            ops,
            dry_run: false,
        };
        client.txn(req).await.expect("txn");
    }
    let before = state(&c).0;
    let h = history(&c, &["--limit", "5"]);
    let oldest = h["oldest_revision"].as_u64().unwrap();
    assert!(oldest > r1, "{h}");
    let o = c.cli(&["rollback", "--to", &r1.to_string()]);
    assert_code(&o, 5);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("compacted")
            && err.contains(&format!("oldest revision available is {oldest}")),
        "{}",
        show(&o)
    );
    assert_eq!(state(&c).0, before, "nothing changed");
    // From the oldest available revision it works.
    let o = c.cli(&["rollback", "route/main", "--to", &oldest.to_string()]);
    assert_code(&o, 3); // route/main did not change since
}

// ---- with a real Envoy ----

fn start_envoy(c: &Cluster, node_id: &str) -> Envoy {
    Envoy::from_cli(c, node_id, &["--region", "us-east", "--delta"])
}

fn service(name: &str, up: &Upstream) -> String {
    format!(
        "kind: service\nname: {name}\nspec:\n  port: {}\n  endpoints: [{{address: 127.0.0.1, region: us-east}}]\n---\n",
        up.port
    )
}

fn route_to(svc: &str) -> String {
    format!("kind: route\nname: main\nspec:\n  hosts: ['*']\n  rules:\n  - backends: [{{service: {svc}}}]\n---\n")
}

fn listener(name: &str, addr: &str, port: u16) -> String {
    format!("kind: listener\nname: {name}\nspec:\n  address: {addr}\n  port: {port}\n  routes: [main]\n")
}

/// Property: `apply --wait` returns only once the Envoy ACKed the change, so
/// the very next request through Envoy sees it; a config Envoy rejects is
/// reported with Envoy's message (exit 7) as soon as it is NACKed; a
/// rollback restores the earlier behaviour, as seen through Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_and_rollback_through_envoy() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let port = meridian_tests::ports::free_port();
    let base = format!(
        "{}{}{}{}",
        service("a", &a),
        service("b", &b),
        route_to("a"),
        listener("edge", "127.0.0.1", port)
    );
    assert_code(&apply(&c, "base.yaml", &base), 0);
    let _envoy = start_envoy(&c, "ops-delta");
    wait_all_ok(port, "/", 5, CONVERGE, |body| body == "A").await;
    let r_a = state(&c).0;

    // The route moves to B; --wait returns after Envoy ACKed it.
    let f = write(c.dir(), "to-b.yaml", &route_to("b"));
    let o = c.cli(&["apply", "--wait", "-f", f.to_str().unwrap()]);
    assert_says(&o, 0, "1 of 1 Envoy ACKed");
    let (ok, failed) = batch(port, "/", 10).await;
    assert_eq!(failed, 0);
    assert!(
        ok.iter().all(|body| body == "B"),
        "right after apply --wait: {ok:?}"
    );

    // Rollback of the route, waited for: A again at once.
    let o = c.cli(&[
        "rollback",
        "route/main",
        "--to",
        &r_a.to_string(),
        "--wait=30s",
    ]);
    assert_code(&o, 0);
    let (ok, failed) = batch(port, "/", 10).await;
    assert_eq!(failed, 0);
    assert!(
        ok.iter().all(|body| body == "A"),
        "right after rollback --wait: {ok:?}"
    );
    let r_back = state(&c).0;

    // Envoy cannot bind 192.0.2.1: it NACKs, and --wait reports it with
    // Envoy's message instead of waiting out its timeout.
    let bad = meridian_tests::ports::free_port();
    let f = write(
        c.dir(),
        "bad.yaml",
        &listener("unbindable", "192.0.2.1", bad),
    );
    let started = Instant::now();
    let o = c.cli(&["apply", "--wait=40s", "-f", f.to_str().unwrap()]);
    assert_code(&o, 7);
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "the NACK ended the wait"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ops-delta") && err.contains("NACKed lds"),
        "{}",
        show(&o)
    );
    assert!(
        err.contains("192.0.2.1") || err.contains("bind"),
        "Envoy's message: {}",
        show(&o)
    );
    // Traffic still flows on the old listener.
    let (_, failed) = batch(port, "/", 5).await;
    assert_eq!(failed, 0);

    // Rolling the whole config back removes the listener; Envoy ACKs again.
    let o = c.cli(&["rollback", "--to", &r_back.to_string(), "--wait"]);
    assert_says(&o, 0, "listener/unbindable deleted");
    // At r_back the route led to A; it still does.
    let (ok, failed) = batch(port, "/", 10).await;
    assert_eq!(failed, 0);
    assert!(ok.iter().all(|body| body == "A"), "{ok:?}");
    // Roll the whole config back to before the rollback of the route: B.
    let history = history(&c, &["route/main"]);
    let to_b = entries(&history)
        .iter()
        .find(|e| e.0 < r_back)
        .map(|e| e.0)
        .unwrap();
    let o = c.cli(&["rollback", "--to", &to_b.to_string(), "--wait"]);
    assert_code(&o, 0);
    let (ok, failed) = batch(port, "/", 10).await;
    assert_eq!(failed, 0);
    assert!(ok.iter().all(|body| body == "B"), "{ok:?}");
}

fn start_envoy_on(c: &Cluster, node_id: &str, group: &str, controller: u64) -> Envoy {
    let ctl = format!("us-east=127.0.0.1:{}", c.node(controller).ports.xds);
    Envoy::from_cli(
        c,
        node_id,
        &[
            "--region",
            "us-east",
            "--group",
            group,
            "--controllers",
            &ctl,
            "--delta",
        ],
    )
}

/// Property: `apply --wait` waits for Envoys connected to different
/// controllers (GetProxyStatus fans out), and when one of them cannot get
/// the new revision (its controller is cut off from the leader) it ends at
/// the timeout with exit 8, naming that Envoy, while the other one ACKed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_spans_controllers_and_times_out() {
    let c = Cluster::start(3, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    let followers: Vec<u64> = c
        .running_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (f1, f2) = (followers[0], followers[1]);
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (p1, p2) = (
        meridian_tests::ports::free_port(),
        meridian_tests::ports::free_port(),
    );
    let base = format!(
        "{}{}{}kind: listener\nname: e1\nspec:\n  address: 127.0.0.1\n  port: {p1}\n  proxyGroups: [g1]\n  routes: [main]\n---\n\
         kind: listener\nname: e2\nspec:\n  address: 127.0.0.1\n  port: {p2}\n  proxyGroups: [g2]\n  routes: [main]\n",
        service("a", &a),
        service("b", &b),
        route_to("a")
    );
    assert_code(&apply(&c, "base.yaml", &base), 0);
    let _e1 = start_envoy_on(&c, "env-1", "g1", f1);
    let _e2 = start_envoy_on(&c, "env-2", "g2", f2);
    for p in [p1, p2] {
        wait_all_ok(p, "/", 5, CONVERGE, |body| body == "A").await;
    }

    let f = write(c.dir(), "to-b.yaml", &route_to("b"));
    let o = c.cli(&["apply", "--wait=30s", "-f", f.to_str().unwrap()]);
    assert_says(&o, 0, "2 of 2 Envoys ACKed");
    for p in [p1, p2] {
        let (ok, failed) = batch(p, "/", 5).await;
        assert!(
            failed == 0 && ok.iter().all(|body| body == "B"),
            ":{p} right after apply --wait: {ok:?}"
        );
    }

    // Cut f2 off from its peers: its Envoy stays connected but cannot get
    // the next revision.
    for id in c.running_ids() {
        let other = if id == f2 { 0 } else { f2 };
        c.set_faults(id, &format!(r#"{{"isolated_from": [{other}]}}"#))
            .await;
    }
    c.set_faults(f2, r#"{"isolate_all": true}"#).await;
    let f = write(c.dir(), "to-a.yaml", &route_to("a"));
    let started = Instant::now();
    // Ask the leader: the CLI would otherwise try the cut-off node first.
    let o = std::process::Command::new(meridian_tests::meridian_bin())
        .args([
            "--server",
            &c.node(leader).api_addr(),
            "apply",
            "--wait=3s",
            "-f",
            f.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_code(&o, 8);
    assert!(started.elapsed() >= Duration::from_secs(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("env-2") && err.contains("did not ACK"),
        "{}",
        show(&o)
    );
    assert!(
        !err.lines()
            .any(|l| l.contains("env-1") && l.contains("did not ACK")),
        "{}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 of 2 Envoys ACKed"),
        "{}",
        show(&o)
    );
    let (ok, failed) = batch(p1, "/", 5).await;
    assert!(failed == 0 && ok.iter().all(|body| body == "A"), "{ok:?}");
    for id in c.running_ids() {
        c.set_faults(id, "{}").await;
    }
}
