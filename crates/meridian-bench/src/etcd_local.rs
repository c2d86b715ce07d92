//! A 3-member etcd cluster on loopback, for `compare`: the same cluster
//! `scripts/bench-etcd.sh` starts (fsync on, etcd's default; one data dir
//! per member in a temp dir), started from Rust so that one process can
//! alternate meridian and etcd rounds. The members are killed and their data
//! removed when the value is dropped, also on an error or Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian_testkit::ports::free_port;

use crate::etcd;
use crate::setup::channel;

pub struct EtcdCluster {
    children: Vec<Child>,
    /// Client host:port of each member.
    pub endpoints: Vec<String>,
    dir: tempfile::TempDir,
}

/// `$ETCD_BIN`, else `etcd` on the PATH.
pub fn etcd_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context(
            "etcd is not on the PATH: install Debian's etcd-server (scripts/bench-compare.sh does) or set ETCD_BIN",
        )
}

impl EtcdCluster {
    pub async fn start(data_root: Option<&Path>) -> Result<EtcdCluster> {
        let bin = etcd_binary()?;
        let dir = match data_root {
            Some(root) => tempfile::Builder::new()
                .prefix("etcd-bench-")
                .tempdir_in(root),
            None => tempfile::Builder::new().prefix("etcd-bench-").tempdir(),
        }
        .context("creating the etcd data dir")?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            endpoints: ports
                .iter()
                .map(|(c, _)| format!("127.0.0.1:{c}"))
                .collect(),
            dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let log = std::fs::File::create(cluster.dir.path().join(format!("{name}.log")))?;
            let child = Command::new(&bin)
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(cluster.dir.path().join(&name))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "etcd-bench",
                ])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            cluster.children.push(child);
        }
        cluster.wait_for_leader().await?;
        Ok(cluster)
    }

    /// Every member answers Maintenance.Status and agrees on a leader.
    async fn wait_for_leader(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for ep in &self.endpoints {
                if let Ok(ch) = channel(ep, Duration::from_secs(2)).await {
                    if let Ok(st) = etcd::status(ch).await {
                        leaders.push(st.leader);
                    }
                }
            }
            if leaders.len() == self.endpoints.len()
                && leaders[0] != 0
                && leaders.iter().all(|&l| l == leaders[0])
            {
                return Ok(());
            }
            for c in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!(
                        "an etcd member exited ({status}); its logs are in {}",
                        self.dir.path().display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the etcd cluster has no leader after 30 s; logs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}
