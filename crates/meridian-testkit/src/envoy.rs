//! Real Envoy processes for tests and benchmarks, started from Meridian's
//! own bootstrap (`meridian_translate::bootstrap`, or `meridian bootstrap`
//! when the CLI is what a test exercises). The binary comes from
//! `$MERIDIAN_ENVOY` or `.cache/envoy` (installed by
//! scripts/install-envoy.sh); a missing binary fails the test, it never
//! skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use meridian_translate::bootstrap::{bootstrap, BootstrapSpec};

use crate::cluster::Cluster;
use crate::http::http_get;
use crate::ports::free_port;
use crate::workspace_root;

/// The Envoy binary, or why there is none.
pub fn try_envoy_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var("MERIDIAN_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".cache/envoy/envoy/_bin/envoy"));
    anyhow::ensure!(
        p.exists(),
        "Envoy binary {} is missing: run scripts/install-envoy.sh (scripts/test.sh does) or set MERIDIAN_ENVOY",
        p.display()
    );
    Ok(p)
}

pub fn envoy_bin() -> PathBuf {
    try_envoy_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Writes the bootstrap of `spec` to `file` (YAML, as `meridian bootstrap`
/// does).
pub fn write_bootstrap(spec: &BootstrapSpec, file: &Path) -> anyhow::Result<()> {
    let yaml = serde_yaml_ng::to_string(&bootstrap(spec)?)?;
    std::fs::write(file, yaml).with_context(|| format!("writing {}", file.display()))
}

pub struct Envoy {
    pub admin_port: u16,
    pub log: PathBuf,
    child: Child,
}

fn base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Distinct shared-memory ids so several Envoys (and test binaries) coexist.
    std::process::id() % 10_000 * 100 + NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (whose admin port must be `admin_port`).
    pub fn start(bootstrap: &Path, admin_port: u16, log: PathBuf) -> Envoy {
        Self::try_start(bootstrap, admin_port, log, "info").unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// As [`Envoy::start`], logging at `log_level`, with failures as errors.
    pub fn try_start(
        bootstrap: &Path,
        admin_port: u16,
        log: PathBuf,
        log_level: &str,
    ) -> anyhow::Result<Envoy> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(try_envoy_bin()?)
            .arg("-c")
            .arg(bootstrap)
            .args([
                "--base-id",
                &base_id().to_string(),
                "--log-level",
                log_level,
                "--concurrency",
                "1",
            ])
            .args(["--drain-time-s", "1", "--parent-shutdown-time-s", "2"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting Envoy")?;
        Ok(Envoy {
            admin_port,
            log,
            child,
        })
    }

    /// The bootstrap spec of an Envoy in `region` against every controller
    /// of `c`, each checked on its `/readyz`, as `meridian bootstrap` makes it
    /// from the cluster's status; a free admin port.
    pub fn spec_for(c: &Cluster, node_id: &str, region: &str) -> BootstrapSpec {
        let mut spec =
            BootstrapSpec::new(node_id, region, Self::free_admin_port(), c.controllers());
        spec.controller_admin = c
            .controllers()
            .into_iter()
            .map(|(_, xds)| xds)
            .zip(c.admin_addrs())
            .collect();
        spec
    }

    /// Starts an Envoy from `spec` (its admin port is the spec's), with its
    /// bootstrap and log in `dir`, named after the node id.
    pub fn from_spec(spec: &BootstrapSpec, dir: &Path, log_level: &str) -> anyhow::Result<Envoy> {
        let file = dir.join(format!("{}.yaml", spec.node_id));
        write_bootstrap(spec, &file)?;
        Self::try_start(
            &file,
            spec.admin_port,
            dir.join(format!("{}.envoy.log", spec.node_id)),
            log_level,
        )
    }

    /// Starts an Envoy from a bootstrap made by `meridian bootstrap --node-id
    /// NODE_ID --admin-port (free) -O FILE EXTRA...` against `c`, so the test
    /// exercises the CLI's bootstrap as operators run it.
    pub fn from_cli(c: &Cluster, node_id: &str, extra: &[&str]) -> Envoy {
        let admin = Self::free_admin_port();
        let file = c.dir().join(format!("{node_id}.yaml"));
        let admin_s = admin.to_string();
        let mut args = vec![
            "bootstrap",
            "--node-id",
            node_id,
            "--admin-port",
            &admin_s,
            "-O",
            file.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let out = c.cli(&args);
        assert!(
            out.status.success(),
            "bootstrap: exit {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Envoy::start(&file, admin, c.dir().join(format!("{node_id}.envoy.log")))
    }

    /// The admin listener, as host:port.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    pub fn free_admin_port() -> u16 {
        free_port()
    }

    /// The value of one admin stat (counters, gauges and text readouts).
    pub async fn stat(&self, name: &str) -> Option<String> {
        let (code, body) = http_get(&format!(
            "http://127.0.0.1:{}/stats?filter=^{}$",
            self.admin_port,
            name.replace('.', "\\.")
        ))
        .await
        .ok()?;
        if code != 200 {
            return None;
        }
        body.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    }

    /// Every stat whose name ends with `suffix`, summed (e.g. `update_rejected`).
    pub async fn sum_stats(&self, suffix: &str) -> u64 {
        let Ok((_, body)) = http_get(&format!("http://127.0.0.1:{}/stats", self.admin_port)).await
        else {
            return 0;
        };
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- envoy log (last 30 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Sends `n` GETs through Envoy to `127.0.0.1:port/path`; returns the bodies
/// of the successful ones and the number of failures.
pub async fn batch(port: u16, path: &str, n: usize) -> (Vec<String>, usize) {
    let mut ok = Vec::new();
    let mut failed = 0;
    for _ in 0..n {
        match http_get(&format!("http://127.0.0.1:{port}{path}")).await {
            Ok((200, body)) => ok.push(body),
            _ => failed += 1,
        }
    }
    (ok, failed)
}

/// Waits until a whole batch through Envoy succeeds and every body satisfies `want`.
pub async fn wait_all_ok(
    port: u16,
    path: &str,
    n: usize,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        let (ok, failed) = batch(port, path, n).await;
        if failed == 0 && ok.iter().all(|b| want(b)) {
            return;
        }
        if start.elapsed() > timeout {
            panic!("requests to :{port}{path} did not all succeed within {timeout:?}: {failed} failed, bodies {:?}", &ok[..ok.len().min(3)]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
