//! The status page (`/ui`) in a real headless Chromium from Debian's
//! packages (`$MERIDIAN_CHROMIUM`, installed by scripts/install-chromium.sh;
//! the test fails, never skips, without it), driven over the DevTools
//! protocol: a 3-region cluster with a real Envoy, the page shows the
//! regions and the Envoy, updates without a reload when a change is
//! applied, shows a revision's diff on click and renders a rollout. The
//! screenshot is a CI artifact: target/test-output/ui/status-page.png.
//! And, without a browser: under TLS the admin page answers only loopback
//! Hosts, and `meridian ui` serves the page with the operator's
//! credentials, so the API's role check applies.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use meridian_pki::{Identity, Role, Validity};
use meridian_tests::cluster::http_get;
use meridian_tests::envoy::Envoy;
use meridian_tests::{eventually, Cluster, ClusterOpts};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

fn chromium_bin() -> PathBuf {
    match std::env::var_os("MERIDIAN_CHROMIUM") {
        Some(p) => PathBuf::from(p),
        None => ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("no Chromium: set MERIDIAN_CHROMIUM or run scripts/install-chromium.sh")
            }),
    }
}

/// A headless Chromium in its own process group (killed whole on drop)
/// with a throw-away profile.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    debug_port: u16,
}

impl Browser {
    async fn start(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // Its own session (`setsid` execs it, same pid), so it and its
        // helpers are one group to kill, and nothing it signals reaches
        // the test's own group.
        let mut child = Command::new("setsid")
            .arg(chromium_bin())
            .args([
                "--headless=new",
                // Root in a container: no user namespace for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1440,1400",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // Chromium prints where its DevTools endpoint listens.
        let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().unwrap()).unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let debug_port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                    return rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                }
                seen.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("chromium printed no DevTools address:\n{}", seen.join("\n")));
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Browser {
            child,
            _profile: profile,
            debug_port,
        }
    }

    /// The DevTools session of the page that shows `url`.
    async fn page(&self, url: &str) -> Cdp {
        let list = format!("http://127.0.0.1:{}/json/list", self.debug_port);
        let ws = eventually(
            "chromium's page target",
            Duration::from_secs(20),
            || async {
                let body = get_json(&list).await?;
                let targets: Vec<Value> = serde_json::from_str(&body).ok()?;
                targets
                    .iter()
                    .find(|t| {
                        t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                    })
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            },
        )
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(ws.as_str())
            .await
            .expect("connect to the page's DevTools socket");
        Cdp { ws, next: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The renderer and GPU processes share the group of the one started.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// GET of a small JSON document, read up to its Content-Length (the
/// DevTools HTTP server may keep the connection open).
async fn get_json(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().ok())
                    })
                    .flatten();
                if n == 0 || len.is_some_and(|len| body.len() >= len) {
                    return Some(body.to_string());
                }
            } else if n == 0 {
                return None;
            }
        }
    })
    .await
    .ok()?
}

/// A DevTools-protocol client: one command at a time, events skipped.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .await
            .expect("send to DevTools");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no DevTools answer within 30s"))
                .expect("DevTools socket closed")
                .expect("DevTools socket error");
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` until it is truthy; returns that value.
    async fn until(&mut self, what: &str, limit: Duration, expr: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expr).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            if start.elapsed() > limit {
                let body = self.eval("document.body.innerText").await;
                panic!(
                    "the page did not show {what} within {limit:?}; it shows:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn cli_ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.cli(args);
    assert!(
        out.status.success(),
        "meridian {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(c: &Cluster, name: &str, docs: Value) {
    let file = c.dir().join(name);
    std::fs::write(&file, docs.to_string()).unwrap();
    cli_ok(c, &["apply", "-f", file.to_str().unwrap()]);
}

/// Where CI collects this test's artifacts.
fn output_dir() -> PathBuf {
    let dir = meridian_tests::workspace_root().join("target/test-output/ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_three_regions_an_envoy_and_a_new_revision_without_reload() {
    let regions: Vec<String> = REGIONS.iter().map(|r| r.to_string()).collect();
    let c = Cluster::start(
        3,
        ClusterOpts {
            regions,
            ..Default::default()
        },
    )
    .await;
    let port = meridian_tests::ports::free_port();
    apply(
        &c,
        "base.json",
        json!([
            {"kind": "region", "name": "us-east", "spec": {"failover": ["eu-west", "ap-south"]}},
            {"kind": "region", "name": "eu-west", "spec": {"failover": ["us-east", "ap-south"]}},
            {"kind": "region", "name": "ap-south", "spec": {"failover": ["eu-west", "us-east"]}},
            {"kind": "service", "name": "web", "spec": {"port": 8080}},
            {"kind": "route", "name": "web", "spec": {"hosts": ["*"], "rules": [{"backends": [{"service": "web"}]}]}},
            {"kind": "listener", "name": "edge", "spec": {"address": "127.0.0.1", "port": port, "routes": ["web"], "proxyGroups": ["edge"]}}
        ]),
    );
    let _envoy = Envoy::from_cli(&c, "envoy-ui", &["--region", "eu-west", "--group", "edge"]);

    // A secret, whose key must reach neither the state nor a diff.
    let pki = meridian_tests::pki::Pki::create(&c.dir().join("secret-ca")).unwrap();
    let files = pki
        .issue(
            Identity::Proxy {
                group: "edge".into(),
            },
            Validity::leaf_default(),
        )
        .unwrap();
    let key_pem = std::fs::read_to_string(&files.key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_string();
    apply(
        &c,
        "secret.json",
        json!([{"kind": "secret", "name": "edge-cert", "spec": {
            "certificateChain": std::fs::read_to_string(&files.cert).unwrap(), "privateKey": key_pem}}]),
    );

    let url = c.nodes[1].admin_url("/ui");
    let browser = Browser::start(&url).await;
    eprintln!("chromium's DevTools on port {}", browser.debug_port);
    let mut page = browser.page(&url).await;
    eprintln!("attached to the page");

    page.until(
        "the three regions and the Envoy, synced",
        Duration::from_secs(60),
        r#"(() => {
            const regions = [...document.querySelectorAll('#regions [data-region]')].map(e => e.dataset.region);
            const envoy = document.querySelector('#envoys tr[data-envoy="envoy-ui"]');
            return ['us-east', 'eu-west', 'ap-south'].every(r => regions.includes(r))
                && envoy !== null && envoy.innerText.includes('eu-west') && envoy.innerText.includes('SYNCED');
        })()"#,
    )
    .await;
    let controllers = page
        .eval("document.querySelectorAll('#controllers tbody tr').length")
        .await;
    assert_eq!(controllers, 3, "one row per controller");
    let before: u64 = page
        .eval("Number(document.getElementById('revision').textContent)")
        .await
        .as_u64()
        .unwrap();
    assert!(before > 0);

    // A change, applied while the page stays open: the same document (the
    // marker survives) shows the new revision.
    page.eval("window.sameDocument = 'yes'").await;
    apply(
        &c,
        "change.json",
        json!([{"kind": "service", "name": "checkout", "spec": {"port": 9090}}]),
    );
    let rev = page
        .until(
            "the applied revision in its history",
            Duration::from_secs(20),
            r#"(() => {
                const row = [...document.querySelectorAll('#history tr[data-rev]')].find(r => r.innerText.includes('service/checkout'));
                return row ? Number(row.dataset.rev) : null;
            })()"#,
        )
        .await
        .as_u64()
        .unwrap();
    assert!(rev > before, "new revision {rev} after {before}");
    assert_eq!(
        page.eval("window.sameDocument").await,
        "yes",
        "the page was reloaded"
    );
    let shown = page
        .until(
            "the new revision in the header",
            Duration::from_secs(10),
            &format!("Number(document.getElementById('revision').textContent) >= {rev}"),
        )
        .await;
    assert_eq!(shown, true);

    // Its diff, on click.
    page.eval(&format!(
        "document.querySelector('#history tr[data-rev=\"{rev}\"]').click()"
    ))
    .await;
    let diff = page
        .until("the revision's diff", Duration::from_secs(10), &format!(
            "document.getElementById('diff').dataset.rev === '{rev}' && document.getElementById('diff').innerText"
        ))
        .await;
    let diff = diff.as_str().unwrap();
    assert!(diff.contains("+  \"port\": 9090"), "{diff}");

    let shot = page
        .call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await;
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let shot_path = output_dir().join("status-page.png");
    std::fs::write(&shot_path, png).unwrap();
    println!("artifact: {}", shot_path.display());

    // A rollout, rendered from a made-up entry (rollouts have no source yet).
    let text = page
        .eval(
            r#"(() => {
                render(Object.assign({}, window.lastState, {rollouts: [{name: 'web-v2', policy: 'by-region', state: 'progressing', step: 1,
                    steps: [{targets: ['us-east'], state: 'done'}, {targets: ['eu-west', 'ap-south'], state: 'baking'}],
                    started_unix_ms: Date.now()}]}));
                const row = document.querySelector('#rollouts tr[data-rollout="web-v2"]');
                return row.innerText + ' | current: ' + row.querySelector('.step.cur').innerText;
            })()"#,
        )
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("by-region") && text.contains("progressing"),
        "{text}"
    );
    assert!(
        text.contains("current: 2. eu-west+ap-south · baking"),
        "{text}"
    );

    // What one poll costs when it is not answered from the cache: a
    // fan-out to the three controllers (printed, not asserted).
    let mut took = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let t = Instant::now();
        let (_, body) = http_get(&c.nodes[1].admin_url("/ui/api/state"))
            .await
            .unwrap();
        took.push((t.elapsed(), body.len()));
    }
    took.sort();
    println!(
        "measured: /ui/api/state gathered in {:?} (median of 5), {} bytes",
        took[2].0, took[2].1
    );

    // No secret in the state or in the secret's own diff.
    let (code, state) = http_get(&c.nodes[1].admin_url("/ui/api/state"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&state).unwrap();
    let secret_rev = st["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["kind"] == "secret")
        })
        .expect("the secret's revision is listed")["revision"]
        .as_u64()
        .unwrap();
    let (code, diff) = http_get(&c.nodes[1].admin_url(&format!("/ui/api/revision/{secret_rev}")))
        .await
        .unwrap();
    assert_eq!(code, 200, "{diff}");
    assert!(
        diff.contains("edge-cert") && diff.contains("redacted"),
        "{diff}"
    );
    for (what, body) in [("state", &state), ("diff", &diff)] {
        assert!(
            !body.contains(&key_line) && !body.contains("PRIVATE KEY"),
            "the secret's key is in the {what}: {body}"
        );
    }
}

/// A GET with a chosen Host header: status code and body.
async fn get_with_host(addr: &str, path: &str, host: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

/// `meridian ui` as `identity`; returns the process and the page's address.
async fn meridian_ui(
    c: &Cluster,
    files: &meridian_tls::TlsFiles,
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(meridian_tests::meridian_bin())
        .args(["--server", &c.servers()])
        .arg("--ca")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .args(["ui", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line))
        .await
        .expect("meridian ui prints its address")
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(line.contains(&identity_of(files)), "{line}");
    (child, addr)
}

fn identity_of(files: &meridian_tls::TlsFiles) -> String {
    meridian_tls::TlsSource::client(files.clone())
        .unwrap()
        .identity()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_page_is_local_and_meridian_ui_shows_it_with_the_operators_role() {
    let c = Cluster::start(
        1,
        ClusterOpts {
            tls: true,
            ..Default::default()
        },
    )
    .await;
    let pki = c.pki().unwrap();
    let admin = format!("127.0.0.1:{}", c.nodes[0].ports.admin);

    // The admin listener is on loopback: served, with the certificate's
    // expiry, to a loopback Host only (no DNS rebinding).
    let (code, body) = get_with_host(&admin, "/ui/api/state", &admin).await;
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry = st["controllers"][0]["cert_not_after_unix"]
        .as_i64()
        .expect("the certificate's expiry");
    assert!(expiry > now, "expiry {expiry} is in the future");
    let (code, body) = get_with_host(&admin, "/ui", "status.rebound.example").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("loopback Host"), "{body}");

    // A viewer sees everything through `meridian ui`.
    let viewer = pki
        .issue(
            Identity::Operator {
                name: "ann".into(),
                role: Role::Viewer,
            },
            Validity::leaf_default(),
        )
        .unwrap();
    let (_ui, addr) = meridian_ui(&c, &viewer).await;
    let (code, html) = get_with_host(&addr, "/ui", &addr).await;
    assert_eq!(code, 200);
    assert!(html.contains("<title>Meridian status</title>"));
    let (code, body) = get_with_host(&addr, "/ui/api/state", &addr).await;
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["errors"], json!([]), "{body}");
    assert_eq!(st["controllers"][0]["id"], 1);
    assert_eq!(st["regions"][0]["name"], "us-east");
    let (code, _) = get_with_host(&addr, "/ui/api/state", "status.rebound.example").await;
    assert_eq!(code, 403, "meridian ui answers loopback Hosts only");

    // An agent's certificate is not an operator's: the API refuses each
    // question, and the page says so instead of showing anything.
    let agent = pki
        .issue(
            Identity::Agent {
                cluster: "k8s-a".into(),
            },
            Validity::leaf_default(),
        )
        .unwrap();
    let (_ui, addr) = meridian_ui(&c, &agent).await;
    let (code, body) = get_with_host(&addr, "/ui/api/state", &addr).await;
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).unwrap();
    let errors = st["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .unwrap()
            .contains("may not call GetClusterStatus")),
        "{body}"
    );
    assert_eq!(st["controllers"], json!([]), "{body}");

    // Only a loopback address is served.
    let out = Command::new(meridian_tests::meridian_bin())
        .args(["--server", &c.servers(), "ui", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen 0.0.0.0:0: must be a loopback address"),
        "{err}"
    );
}
