//! The operator CLI's file commands, black-box: `apply`, `diff` and
//! `delete -f` run as real `meridian` processes against a real controller.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use meridian_tests::{meridian_bin, show, workspace_root, Cluster, ClusterOpts};

fn example() -> PathBuf {
    workspace_root().join("examples").join("multi-region.yaml")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", show(o));
}

/// The global revision and every object's (kind, name, revision).
type Snapshot = (u64, Vec<(String, String, u64)>);

/// The objects in the cluster and the global revision, as `get all` shows them.
fn snapshot(c: &Cluster) -> Snapshot {
    let o = c.cli(&["get", "all", "-o", "json"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let items = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["name"].as_str().unwrap().to_string(),
                i["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    (v["revision"].as_u64().unwrap(), items)
}

/// `o` exited with `code` and printed `text`.
#[track_caller]
fn assert_says(o: &Output, code: i32, text: &str) {
    assert_says_all(o, code, &[text]);
}

/// `o` exited with `code` and printed each of `texts`.
#[track_caller]
fn assert_says_all(o: &Output, code: i32, texts: &[&str]) {
    assert_code(o, code);
    for text in texts {
        assert!(stdout(o).contains(text), "missing {text:?}\n{}", show(o));
    }
}

/// `o` exited with `code` and its error says `text`.
#[track_caller]
fn assert_fails_saying(o: &Output, code: i32, text: &str) {
    assert_code(o, code);
    assert!(stderr(o).contains(text), "{}", show(o));
}

/// A one-node cluster holding the example, a scratch directory for files,
/// and the cluster's objects before the test changes anything.
async fn cluster_with_example() -> (Cluster, tempfile::TempDir, Snapshot) {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let o = c.cli(&["apply", "-f", s(&example())]);
    assert_code(&o, 0);
    let before = snapshot(&c);
    (c, dir, before)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const WEB: &str = "\
kind: service
name: web
spec:
  port: 80
---
kind: listener
name: edge
spec:
  port: 11000
  protocol: tcp
  proxyGroups: [edge]
  service: web
";

#[tokio::test(flavor = "multi_thread")]
async fn apply_reapply_change_diff_and_delete() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();

    // First apply: everything is created, in file order, secrets not printed.
    let o = c.cli(&["apply", "-f", s(&example())]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for line in [
        "region/us-east created",
        "service/storefront created",
        "route/shop created",
        "secret/shop-tls created",
        "listener/catalog-tcp created",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?}\n{}",
            show(&o)
        );
    }
    assert_eq!(out.lines().count(), 11, "{}", show(&o));
    let (rev, objects) = snapshot(&c);
    assert_eq!(objects.len(), 11);

    // Re-apply: all unchanged, nothing written.
    let o = c.cli(&["apply", "-f", s(&example())]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        show(&o)
    );
    assert!(
        stdout(&o).contains("secret/shop-tls unchanged"),
        "{}",
        show(&o)
    );
    assert_eq!(snapshot(&c).0, rev, "an unchanged apply must not write");

    // diff: no difference → exit 0, nothing printed.
    let o = c.cli(&["diff", "-f", s(&example())]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");

    // A changed file: diff shows it (exit 1), apply says configured.
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("maxRetries: 10", "maxRetries: 11");
    let changed = write(dir.path(), "changed.yaml", &text);
    let o = c.cli(&["diff", "-f", s(&changed)]);
    assert_says_all(
        &o,
        1,
        &[
            "--- service/storefront (cluster)",
            "-  maxRetries: 10",
            "+  maxRetries: 11",
        ],
    );
    let out = stdout(&o);
    assert!(!out.contains("PRIVATE KEY"), "{}", show(&o));
    assert!(
        !out.contains("route/shop"),
        "only changed objects: {}",
        show(&o)
    );

    let web = write(dir.path(), "web.yaml", WEB);
    let o = c.cli(&["diff", "-f", s(&changed), "-f", s(&web)]);
    assert_says(&o, 1, "+port: 80");

    let o = c.cli(&["apply", "-f", s(&changed), "-f", s(&web)]);
    assert_says_all(
        &o,
        0,
        &[
            "service/storefront configured",
            "route/shop unchanged",
            "secret/shop-tls unchanged",
            "service/web created",
            "listener/edge created",
        ],
    );
    let (rev2, objects) = snapshot(&c);
    assert_eq!(objects.len(), 13);
    // One transaction: every written object carries the same revision.
    let written: Vec<u64> = objects
        .iter()
        .filter(|(k, n, _)| {
            (k == "service" && (n == "storefront" || n == "web"))
                || (k == "listener" && n == "edge")
        })
        .map(|o| o.2)
        .collect();
    assert_eq!(written, vec![rev2; 3], "{objects:?}");
    let o = c.cli(&["diff", "-f", s(&changed), "-f", s(&web)]);
    assert_code(&o, 0);

    // diff of a file that cannot be read is an error (> 1), not "differences".
    let o = c.cli(&["diff", "-f", s(&dir.path().join("nope.yaml"))]);
    assert!(o.status.code().unwrap() > 1, "{}", show(&o));

    // delete -f: both objects in one transaction.
    let o = c.cli(&["delete", "-f", s(&web)]);
    assert_says(&o, 0, "service/web deleted");
    assert!(stdout(&o).contains("listener/edge deleted"), "{}", show(&o));
    let (_, objects) = snapshot(&c);
    assert_eq!(objects.len(), 11);
    // Deleting them again: not found (exit 3).
    let o = c.cli(&["delete", "-f", s(&web)]);
    assert_fails_saying(&o, 3, "service/web: not found");

    // The whole example in one transaction, although its regions fail over
    // to each other (a reference cycle inside the deleted group).
    let o = c.cli(&["delete", "-f", s(&example())]);
    assert_code(&o, 0);
    assert_eq!(snapshot(&c).1.len(), 0, "{}", show(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_files_list_every_error_and_change_nothing() {
    let (c, dir, before) = cluster_with_example().await;

    let bad = write(
        dir.path(),
        "bad.yaml",
        "\
kind: service
name: api
spec:
  port: 70000
---
kind: servce
name: x
spec: {}
---
kind: route
name: r1
spec:
  hosts: [r1.example.com]
  rules:
    - backends:
        - service: storefront
          weigth: 3
---
kind: listener
name: Bad_Name
spec:
  port: 0
  routes: [shop]
",
    );
    // A valid object in a second file is not applied either.
    let web = write(dir.path(), "web.yaml", WEB);
    let o = c.cli(&["apply", "-f", s(&web), "-f", s(&bad)]);
    assert_code(&o, 5);
    let err = stderr(&o);
    let b = s(&bad);
    for want in [
        format!("{b}:4: service/api: port: "),
        format!("{b}:6: kind: unknown kind \"servce\", did you mean \"service\"?"),
        format!(
            "{b}:17: route/r1: rules[0].backends[0].weigth: unknown field \"weigth\", did you mean \"weight\"?"
        ),
        format!("{b}:19: listener/Bad_Name: port: must be between 1 and 65535"),
        format!("{b}:19: listener/Bad_Name: name "),
    ] {
        assert!(err.contains(&want), "missing {want:?}\n{}", show(&o));
    }
    assert!(err.contains("nothing was sent"), "{}", show(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(snapshot(&c), before, "an invalid apply must change nothing");

    // The same for diff (exit 5, not 1) and delete -f.
    let o = c.cli(&["diff", "-f", s(&bad)]);
    assert_code(&o, 5);

    // Syntax errors carry the file and line too.
    let broken = write(
        dir.path(),
        "broken.json",
        "{\"kind\": \"service\",\n \"name\": ",
    );
    let o = c.cli(&["apply", "-f", s(&broken)]);
    assert_fails_saying(&o, 5, &format!("{}:", s(&broken)));

    // The same object twice across files.
    let o = c.cli(&["apply", "-f", s(&web), "-f", s(&web)]);
    assert_fails_saying(&o, 5, "service/web: defined twice");
    assert_eq!(snapshot(&c), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_validation_against_the_cluster() {
    let (c, dir, before) = cluster_with_example().await;

    // References that resolve nowhere: every error from the server, one per
    // line, and nothing changes (the valid route is not applied either).
    let missing = write(
        dir.path(),
        "missing.yaml",
        "\
kind: route
name: orphan
spec:
  hosts: [orphan.example.com]
  rules:
    - backends:
        - service: nope
---
kind: listener
name: l2
spec:
  port: 12000
  routes: [orphan, shop2]
",
    );
    let o = c.cli(&["apply", "-f", s(&missing)]);
    assert_code(&o, 5);
    let err = stderr(&o);
    assert!(
        err.contains("route/orphan: rules[0].backends[0].service: service \"nope\" does not exist"),
        "{}",
        show(&o)
    );
    assert!(
        err.contains("listener/l2: routes[1]: route \"shop2\" does not exist"),
        "{}",
        show(&o)
    );
    assert_eq!(snapshot(&c), before);

    // A reference to an object that is only in the cluster is fine.
    let ok = write(
        dir.path(),
        "ok.yaml",
        "\
kind: route
name: extra
spec:
  hosts: [extra.example.com]
  rules:
    - backends:
        - service: storefront
",
    );
    let o = c.cli(&["apply", "-f", s(&ok)]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "route/extra created");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_changes_nothing_and_lists_envoy_changes() {
    let (c, dir, before) = cluster_with_example().await;

    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("maxRetries: 10", "maxRetries: 11");
    let changed = write(dir.path(), "changed.yaml", &text);
    let web = write(dir.path(), "web.yaml", WEB);
    let o = c.cli(&["apply", "--dry-run", "-f", s(&changed), "-f", s(&web)]);
    assert_says_all(
        &o,
        0,
        &[
            "service/storefront configured (dry run)",
            "service/web created (dry run)",
            "route/shop unchanged (dry run)",
            "region us-east, proxy group edge:",
            "region ap-south, proxy group default",
            "  + listener edge",
            "  + cluster web",
            "  ~ cluster storefront",
        ],
    );
    let out = stdout(&o);
    assert!(
        !out.contains("secret shop-tls"),
        "unchanged secret: {}",
        show(&o)
    );
    assert!(!out.contains("PRIVATE KEY"), "{}", show(&o));
    // The edge listener is only for the edge group.
    let default_block: String = out
        .split("region us-east, proxy group default")
        .nth(1)
        .unwrap()
        .split("region ")
        .next()
        .unwrap()
        .to_string();
    assert!(!default_block.contains("listener edge"), "{}", show(&o));
    assert_eq!(snapshot(&c), before, "a dry run must change nothing");

    // A listener's new port shows as a changed listener.
    let text2 = text.replace(
        "  port: 10000\n  routes: [shop]",
        "  port: 10001\n  routes: [shop]",
    );
    let changed2 = write(dir.path(), "changed2.yaml", &text2);
    let o = c.cli(&["apply", "--dry-run", "-f", s(&changed2)]);
    assert_says(&o, 0, "  ~ listener public-http");

    // The server's verdict: a dry run that would be invalid fails with 5.
    let missing = write(
        dir.path(),
        "missing.yaml",
        "kind: listener\nname: l2\nspec:\n  port: 12000\n  routes: [nope]\n",
    );
    let o = c.cli(&["apply", "--dry-run", "-f", s(&missing)]);
    assert_code(&o, 5);
    assert!(
        stderr(&o).contains("route \"nope\" does not exist"),
        "{}",
        show(&o)
    );
    assert_eq!(snapshot(&c), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_from_stdin_and_directories() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();

    let run_stdin = |args: &[&str], input: &str| -> Output {
        let mut child = Command::new(meridian_bin())
            .args(["--server", &c.servers()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meridian");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = run_stdin(&["apply", "-f", "-"], WEB);
    assert_says(&o, 0, "service/web created");
    assert!(stdout(&o).contains("listener/edge created"), "{}", show(&o));

    // Errors from stdin name <stdin>.
    let o = run_stdin(
        &["apply", "-f", "-"],
        "kind: service\nname: w2\nspec:\n  prot: 1\n",
    );
    assert_code(&o, 5);
    assert!(
        stderr(&o).contains(
            "<stdin>:4: service/w2: prot: unknown field \"prot\", did you mean \"port\"?"
        ),
        "{}",
        show(&o)
    );

    // A directory: its *.yaml/*.yml/*.json in name order, subdirectories only with -R.
    let d = dir.path().join("conf");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    write(&d, "a.yaml", "kind: service\nname: a\nspec:\n  port: 81\n");
    write(
        &d,
        "b.json",
        r#"{"kind": "service", "name": "b", "spec": {"port": 82}}"#,
    );
    write(&d, "notes.txt", "not an object");
    write(
        &d.join("sub"),
        "c.yml",
        "kind: service\nname: c\nspec:\n  port: 83\n",
    );
    let o = c.cli(&["apply", "-f", s(&d)]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "service/a created\nservice/b created\n",
        "{}",
        show(&o)
    );
    let o = c.cli(&["apply", "-R", "-f", s(&d)]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "service/a unchanged\nservice/b unchanged\nservice/c created\n",
        "{}",
        show(&o)
    );
    let o = c.cli(&["delete", "-R", "-f", s(&d)]);
    assert_code(&o, 0);
    let (_, objects) = snapshot(&c);
    let names: Vec<&str> = objects.iter().map(|o| o.1.as_str()).collect();
    assert_eq!(names, vec!["edge", "web"]);
}

/// Property: printing into a pipe whose reader is gone ends the CLI quietly
/// (like any Unix tool: status 0 or killed by SIGPIPE), never with a panic.
#[test]
fn closed_stdout_pipe_is_a_quiet_exit() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("pipe");
    // The reader is closed before the child starts, so its first write
    // already meets a closed pipe, whatever the output's size.
    drop(reader);
    let o = Command::new(meridian_bin())
        .args(["completion", "bash"])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run meridian completion");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{}", show(&o));
    assert!(
        o.status.code() == Some(0) || o.status.signal() == Some(SIGPIPE),
        "{:?}: {}",
        o.status,
        show(&o)
    );
}

/// SIGPIPE's number on Linux and the BSDs.
const SIGPIPE: i32 = 13;

/// Property: logs that go to a file or a pipe carry no ANSI colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn logs_to_files_and_pipes_have_no_colour_codes() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let log = c.log_of(1);
    assert!(log.contains("INFO"), "the node logged at info: {log}");
    assert!(
        !log.contains("\x1b["),
        "colour codes in a log file: {log:?}"
    );

    // An agent whose controller is not there logs its start and its retries.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "eps.yaml", "endpoints: []\n");
    let mut child = Command::new(meridian_bin())
        .args([
            "agent",
            "--cluster",
            "c1",
            "--region",
            "us-east",
            "--controllers",
            "127.0.0.1:1",
        ])
        .arg("--source")
        .arg(format!("file:{}", s(&file)))
        .env("MERIDIAN_AGENT_TOKEN", "t")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meridian agent");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lines.len() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "the agent logged nothing within 20s");
    for l in &lines {
        assert!(!l.contains("\x1b["), "colour codes in piped logs: {l:?}");
    }
}

/// Property: the agent's `--controllers` help names what it takes: the
/// controllers' API addresses.
#[test]
fn agent_help_describes_controllers_as_their_api_addresses() {
    let o = Command::new(meridian_bin())
        .args(["agent", "--help"])
        .stdin(Stdio::null())
        .output()
        .expect("run meridian agent --help");
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("The controllers' API addresses"), "{out}");
    assert!(!out.contains("agent-API"), "{out}");
}

/// Property: controllers given by hand are checked on their `/readyz` when
/// their admin port is given too (so a controller that is not ready yet is
/// skipped, as with controllers asked from the cluster), by TCP otherwise;
/// a malformed controller is refused, naming the flag.
#[test]
fn hand_given_controllers_get_readiness_checks_with_their_admin_port() {
    let bootstrap = |controllers: &str, extra: &[&str]| {
        Command::new(meridian_bin())
            .args(["bootstrap", "--node-id", "e1", "--region", "us-east"])
            .args(["--controllers", controllers])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run meridian bootstrap")
    };
    let two = "us-east=10.0.0.1:7402,eu-west=10.0.1.1:7402";
    let with = bootstrap(two, &["--controller-admin-port", "7403"]);
    assert_code(&with, 0);
    let out = stdout(&with);
    assert!(out.contains("path: /readyz"), "{out}");
    assert!(!out.contains("tcp_health_check"), "{out}");
    assert_eq!(out.matches("port_value: 7403").count(), 2, "{out}");
    let without = bootstrap(two, &[]);
    assert_code(&without, 0);
    let out = stdout(&without);
    assert!(out.contains("tcp_health_check"), "{out}");
    assert!(!out.contains("/readyz"), "{out}");
    let bad = bootstrap("us-east=10.0.0.1", &[]);
    assert_fails_saying(
        &bad,
        1,
        "--controllers \"us-east=10.0.0.1\": expected REGION=HOST:PORT",
    );
}
