//! A throw-away n-node cluster of this very binary on loopback, for
//! `meridian bench store` and `meridian bench xds`. The children live in a guard that kills them on
//! drop, so an error, a panic or Ctrl-C never leaves servers behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use tonic::transport::Endpoint;

struct LocalNode {
    id: u64,
    api: String,
    xds: String,
    admin: String,
    log: PathBuf,
    child: Child,
}

pub struct LocalCluster {
    nodes: Vec<LocalNode>,
    // Dropped after the children are killed (Drop runs before the fields).
    dir: tempfile::TempDir,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

/// Distinct free loopback ports: all listeners are held until every port is
/// picked, so the same port is never handed out twice.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("picking free ports")?;
    ls.iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<_>>()
        .map_err(Into::into)
}

impl LocalCluster {
    /// Starts `n` nodes (node 1 bootstraps, the others join it) and waits
    /// until all are voters and there is a leader.
    pub async fn start(n: usize, root: Option<&Path>) -> Result<LocalCluster> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let root = root
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("meridian-bench-")
            .tempdir_in(&root)
            .with_context(|| format!("creating a temp dir in {}", root.display()))?;
        let mut c = LocalCluster {
            nodes: Vec::new(),
            dir,
        };
        let ports = free_ports(4 * n)?;
        let first_api = format!("127.0.0.1:{}", ports[0]);
        for i in 0..n {
            let id = i as u64 + 1;
            let p = &ports[4 * i..4 * i + 4];
            let api = format!("127.0.0.1:{}", p[0]);
            let data = c.dir.path().join(format!("node-{id}"));
            let log = c.dir.path().join(format!("node-{id}.log"));
            let out = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("server")
                .args(["--node-id", &id.to_string(), "--region", "us-east"])
                .arg("--data-dir")
                .arg(&data)
                .args(["--api-listen", &api])
                .args(["--peer-listen", &format!("127.0.0.1:{}", p[1])])
                .args(["--xds-listen", &format!("127.0.0.1:{}", p[2])])
                .args(["--admin-listen", &format!("127.0.0.1:{}", p[3])])
                // Logging at info would put log formatting on the same two
                // cores as the load; warnings still reach the log file.
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            if i == 0 {
                cmd.arg("--bootstrap");
            } else {
                cmd.args(["--join", &first_api]);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {} server", exe.display()))?;
            c.nodes.push(LocalNode {
                id,
                api,
                xds: format!("127.0.0.1:{}", p[2]),
                admin: format!("127.0.0.1:{}", p[3]),
                log,
                child,
            });
            if i == 0 {
                // The others join through node 1: it must lead first.
                c.wait(1).await?;
            }
        }
        c.wait(n).await?;
        Ok(c)
    }

    pub fn api_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.api.clone()).collect()
    }

    pub fn xds_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.xds.clone()).collect()
    }

    /// The xDS listeners, parsed, for the simulated Envoys to dial.
    pub fn xds_socket_addrs(&self) -> Result<Vec<std::net::SocketAddr>> {
        self.nodes
            .iter()
            .map(|n| n.xds.parse().context("xds address"))
            .collect()
    }

    /// Tells the operator where the data, logs and processes are.
    pub fn announce(&self) {
        eprintln!(
            "ready, data and logs in {}, pids {:?}",
            self.dir().display(),
            self.pids()
        );
    }

    pub fn admin_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.admin.clone()).collect()
    }

    /// The children's process ids, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until node 1 reports a leader and `voters` voters.
    async fn wait(&mut self, voters: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for n in &mut self.nodes {
                if let Some(st) = n.child.try_wait()? {
                    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    bail!(
                        "node {} exited ({st}) while starting; log {}:\n{}",
                        n.id,
                        n.log.display(),
                        tail.join("\n")
                    );
                }
            }
            let last = match self.status().await {
                Ok(st) => {
                    let v = st.members.iter().filter(|m| m.voter).count();
                    if st.leader_id != 0 && v >= voters {
                        return Ok(());
                    }
                    format!("leader {}, {v} voter(s)", st.leader_id)
                }
                Err(e) => e,
            };
            if Instant::now() > deadline {
                bail!(
                    "the local cluster did not get a leader and {voters} voter(s) within 60s \
                     ({last}); logs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn status(&self) -> Result<pb::ClusterStatusResponse, String> {
        let ep = Endpoint::from_shared(format!("http://{}", self.nodes[0].api))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2));
        let ch = ep.connect().await.map_err(|e| e.to_string())?;
        ClusterServiceClient::new(ch)
            .get_cluster_status(pb::ClusterStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.message().to_string())
    }
}
