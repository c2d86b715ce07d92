//! README's five-minute walkthrough, step by step, on real processes:
//! `meridian dev`, an upstream, the example files, `meridian bootstrap`, a
//! real Envoy, `apply --wait`, `history` and `rollback`. Ports are moved to
//! free ones; everything else is as README says.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use meridian_tests::cluster::http_get;
use meridian_tests::envoy::{wait_all_ok, Envoy};
use meridian_tests::ports::free_port;
use meridian_tests::upstream::Upstream;
use meridian_tests::{eventually, meridian_bin, workspace_root};

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    // `meridian dev` takes four consecutive ports from --base-port.
    let base = loop {
        let p = free_port();
        if (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let _dev = Dev(
        Command::new(meridian_bin())
            .args(["dev", "--base-port", &base.to_string(), "--data-dir"])
            .arg(dir.path().join("meridian-data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dev.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let server = format!("127.0.0.1:{base}");
    let m = |args: &[&str]| Command::new(meridian_bin()).args(["--server", &server]).args(args).output().unwrap();
    eventually("meridian dev to be up", Duration::from_secs(20), || async { m(&["status"]).status.success().then_some(()) }).await;
    let status = ok(m(&["status"]));
    assert!(status.contains("leader"), "{status}");

    // The upstream (README uses python's http.server on 8081).
    let up = Upstream::start("hello from the upstream").await;
    let listen = free_port();
    let root = workspace_root();
    let quickstart = std::fs::read_to_string(root.join("examples/quickstart.yaml"))
        .unwrap()
        .replace("port: 8081", &format!("port: {}", up.port))
        .replace("port: 10000", &format!("port: {listen}"));
    let qs = dir.path().join("quickstart.yaml");
    std::fs::write(&qs, quickstart).unwrap();
    let out = ok(m(&["apply", "-f", qs.to_str().unwrap()]));
    for line in ["service/hello created", "route/hello created", "listener/public created"] {
        assert!(out.contains(line), "{out}");
    }

    let admin = free_port();
    let boot = dir.path().join("envoy.yaml");
    let yaml = ok(m(&["bootstrap", "--node-id", "demo", "--region", "local", "--admin-port", &admin.to_string()]));
    std::fs::write(&boot, yaml).unwrap();
    let _envoy = Envoy::start(&boot, admin, dir.path().join("envoy.log"));
    wait_all_ok(listen, "/", 5, Duration::from_secs(30), |b| b == "hello from the upstream").await;
    let ps = ok(m(&["proxy-status"]));
    assert!(ps.contains("demo") && ps.contains("SYNCED"), "{ps}");

    let v2 = dir.path().join("quickstart-v2.yaml");
    std::fs::copy(root.join("examples/quickstart-v2.yaml"), &v2).unwrap();
    let diff = m(&["diff", "-f", v2.to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(1), "diff exits 1 when there are differences");
    assert!(String::from_utf8_lossy(&diff.stdout).contains("/version"));
    ok(m(&["apply", "-f", v2.to_str().unwrap(), "--wait"]));
    // --wait returned: Envoy has the change now, no polling needed.
    let (code, body) = http_get(&format!("http://127.0.0.1:{listen}/version")).await.unwrap();
    assert_eq!((code, body.as_str()), (200, "v2\n"));

    let h: serde_json::Value = serde_json::from_str(&ok(m(&["history", "route/hello", "-o", "json"]))).unwrap();
    let revs: Vec<u64> = h["items"].as_array().expect("history items").iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    let first = *revs.iter().min().unwrap();
    ok(m(&["rollback", "route/hello", "--to", &first.to_string(), "--wait"]));
    let (code, body) = http_get(&format!("http://127.0.0.1:{listen}/version")).await.unwrap();
    assert_eq!((code, body.as_str()), (200, "hello from the upstream"), "rolled back: /version goes to the upstream again");
}
