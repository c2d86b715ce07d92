//! A cluster of real `meridian server` processes on loopback, for the
//! black-box tests and for `meridian-bench`. The children live in a guard
//! that kills them on drop, so an error, a panic or Ctrl-C never leaves
//! servers behind. This file is long because rustfmt spreads the
//! processes' flags over many lines; the API calls are in `cluster/api.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use crate::http::{http_get, http_request};

mod api;
use crate::{meridian_bin, ports::free_port, try_eventually};
pub use api::proxy_is_synced;

#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Region of each node, by position; nodes past the end get the last one.
    pub regions: Vec<String>,
    /// `--snapshot-logs`: small values exercise snapshot catch-up.
    pub snapshot_logs: u64,
    /// Bootstrap node 1 and join the others to it; otherwise leave them uninitialized.
    pub auto_join: bool,
    pub write_timeout: Duration,
    /// `--enable-fault-injection` (the fault API of `/debug/faults`).
    pub fault_injection: bool,
    /// `RUST_LOG` of the servers.
    pub log_filter: String,
    /// Where the cluster's temp dir is made (default: the system's temp dir).
    pub data_root: Option<PathBuf>,
    /// Prefix of the temp dir's name.
    pub dir_prefix: String,
    /// Mutual TLS on every listener, with a CA and certificates made in
    /// the cluster's dir (`Cluster::pki`); the kit's own clients and `cli`
    /// use an admin operator certificate. Off: the servers run `--insecure`.
    pub tls: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            regions: vec!["us-east".into()],
            snapshot_logs: 10_000,
            auto_join: true,
            write_timeout: Duration::from_secs(3),
            fault_injection: true,
            log_filter: "info,openraft=warn".into(),
            data_root: None,
            dir_prefix: "meridian-test-".into(),
            tls: false,
        }
    }
}

impl ClusterOpts {
    /// A cluster to measure: the server's own defaults, no fault API, and
    /// logs at `warn` (at info, log formatting would share the cores with
    /// the load; warnings still reach the log files).
    pub fn bench(data_root: Option<&Path>) -> ClusterOpts {
        ClusterOpts {
            write_timeout: Duration::from_secs(5),
            fault_injection: false,
            log_filter: "warn".into(),
            data_root: data_root.map(Path::to_path_buf),
            dir_prefix: "meridian-bench-".into(),
            ..ClusterOpts::default()
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub api: u16,
    pub peer: u16,
    pub xds: u16,
    pub admin: u16,
}

pub struct NodeProc {
    pub id: u64,
    pub region: String,
    pub ports: Ports,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    join: Vec<String>,
    bootstrap: bool,
}

impl NodeProc {
    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.api)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.ports.admin, path)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub opts: ClusterOpts,
    dir: tempfile::TempDir,
    next_id: u64,
    pki: Option<crate::pki::Pki>,
}

impl Cluster {
    /// Starts `n` nodes; with `auto_join`, waits until all are voters.
    pub async fn start(n: usize, opts: ClusterOpts) -> Cluster {
        Self::try_start(n, opts)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// As [`Cluster::start`], with failures as errors (a node that exits
    /// while starting, or no leader in time) that carry the nodes' log tails.
    pub async fn try_start(n: usize, opts: ClusterOpts) -> Result<Cluster> {
        let root = opts.data_root.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(&opts.dir_prefix)
            .tempdir_in(&root)
            .with_context(|| format!("creating a temp dir in {}", root.display()))?;
        let pki = match opts.tls {
            true => Some(crate::pki::Pki::create(&dir.path().join("certs"))?),
            false => None,
        };
        let mut c = Cluster {
            nodes: Vec::new(),
            opts,
            dir,
            next_id: 1,
            pki,
        };
        for i in 0..n {
            let bootstrap = c.opts.auto_join && i == 0;
            let join = if c.opts.auto_join && i > 0 {
                vec![c.nodes[0].api_addr()]
            } else {
                vec![]
            };
            c.try_spawn_new(bootstrap, join)?;
            if i == 0 && c.opts.auto_join {
                // The others join through node 1: it must lead first.
                let url = c.nodes[0].admin_url("/readyz");
                c.starting("node 1 ready", Duration::from_secs(30), || {
                    let url = url.clone();
                    async move { (http_get(&url).await.ok()?.0 == 200).then_some(()) }
                })
                .await?;
            }
        }
        if c.opts.auto_join {
            let want: Vec<u64> = c.nodes.iter().map(|n| n.id).collect();
            c.starting(&format!("voters {want:?}"), Duration::from_secs(60), || {
                c.has_voters(&want)
            })
            .await?;
        }
        Ok(c)
    }

    /// Waits for `f` while the cluster starts; a node that exits meanwhile
    /// fails the start at once.
    async fn starting<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let r = try_eventually(what, timeout, || {
            let dead = self.exited();
            let ready = f();
            async move {
                match dead {
                    Some(_) => Some(None),
                    None => ready.await.map(Some),
                }
            }
        })
        .await;
        match r {
            Ok(Some(v)) => Ok(v),
            Ok(None) => bail!(
                "{} while starting\n{}",
                self.exited().unwrap_or_else(|| "a node exited".into()),
                self.log_tails(20)
            ),
            Err(e) => Err(e.context(format!(
                "the cluster in {} did not start\n{}",
                self.dir().display(),
                self.log_tails(40)
            ))),
        }
    }

    /// The first node whose process has ended, in words.
    fn exited(&self) -> Option<String> {
        self.nodes.iter().find_map(|n| {
            let pid = n.child.as_ref()?.id();
            // Reaping here would lose the status for `stop`; /proc tells
            // whether the process still runs without waiting on it.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let zombie = stat.as_deref().is_none_or(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            });
            zombie.then(|| format!("node {} (pid {pid}) exited", n.id))
        })
    }

    /// The last `lines` lines of every node's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!(
                "---- node {} log {} (last {lines} lines) ----\n",
                n.id,
                n.log.display()
            ));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn spawn_new(&mut self, bootstrap: bool, join: Vec<String>) -> u64 {
        self.try_spawn_new(bootstrap, join)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn try_spawn_new(&mut self, bootstrap: bool, join: Vec<String>) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let region = self
            .opts
            .regions
            .get(self.nodes.len())
            .or(self.opts.regions.last())
            .cloned()
            .unwrap_or_else(|| "us-east".into());
        let ports = Ports {
            api: free_port(),
            peer: free_port(),
            xds: free_port(),
            admin: free_port(),
        };
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let log = self.dir.path().join(format!("node-{id}.log"));
        self.nodes.push(NodeProc {
            id,
            region,
            ports,
            data_dir,
            log,
            child: None,
            join,
            bootstrap,
        });
        self.try_spawn(id)?;
        Ok(id)
    }

    /// Adds a node that joins through the existing members; returns its id.
    pub async fn add_node(&mut self) -> u64 {
        let join: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.api_addr())
            .collect();
        let id = self.spawn_new(false, join);
        id
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Starts (or restarts) the process of node `id` on its data dir.
    pub fn spawn(&mut self, id: u64) {
        self.try_spawn(id).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn try_spawn(&mut self, id: u64) -> Result<()> {
        let bin = crate::try_meridian_bin()?;
        let opts = self.opts.clone();
        let tls = match &self.pki {
            Some(p) => Some(p.node(id)?),
            None => None,
        };
        let n = self.node_mut(id);
        assert!(n.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .with_context(|| format!("creating {}", n.log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("server")
            .args(["--node-id", &id.to_string(), "--region", &n.region])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--api-listen", &format!("127.0.0.1:{}", n.ports.api)])
            .args(["--peer-listen", &format!("127.0.0.1:{}", n.ports.peer)])
            .args(["--xds-listen", &format!("127.0.0.1:{}", n.ports.xds)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", n.ports.admin)])
            .args(["--snapshot-logs", &opts.snapshot_logs.to_string()])
            .args([
                "--write-timeout",
                &format!("{}ms", opts.write_timeout.as_millis()),
            ])
            .env("RUST_LOG", &opts.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if opts.fault_injection {
            cmd.arg("--enable-fault-injection");
        }
        match &tls {
            Some(f) => {
                cmd.arg("--tls-cert")
                    .arg(&f.cert)
                    .arg("--tls-key")
                    .arg(&f.key)
                    .arg("--tls-ca")
                    .arg(&f.ca);
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        if n.bootstrap {
            cmd.arg("--bootstrap");
        }
        if !n.join.is_empty() {
            cmd.arg("--join").arg(n.join.join(","));
        }
        n.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {} server", bin.display()))?,
        );
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush beyond what was already durable.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.node_mut(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean shutdown. Returns the exit status code.
    pub fn stop(&mut self, id: u64) -> Option<i32> {
        let c = self.node_mut(id).child.take()?;
        let pid = c.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let mut c = c;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node {id} did not stop within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether node `id`'s process ended by itself (not killed by the kit).
    pub fn has_exited(&mut self, id: u64) -> bool {
        self.node_mut(id)
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.kill(id);
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// Addresses of every running node's API, comma-separated, for `--server`.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.api_addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs the CLI against this cluster (as the kit's admin operator when
    /// the cluster has TLS).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(meridian_bin());
        cmd.args(["--server", &self.servers()]);
        if let Some(p) = &self.pki {
            let f = p.admin();
            cmd.arg("--ca")
                .arg(&f.ca)
                .arg("--cert")
                .arg(&f.cert)
                .arg("--key")
                .arg(&f.key);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run meridian cli")
    }

    /// The cluster's CA and certificates, when it runs with TLS.
    pub fn pki(&self) -> Option<&crate::pki::Pki> {
        self.pki.as_ref()
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every node's API address, in node order.
    pub fn api_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.api_addr()).collect()
    }

    /// Every node's xDS address, in node order.
    pub fn xds_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.ports.xds))
            .collect()
    }

    /// The xDS listeners, as socket addresses, for simulated Envoys to dial.
    pub fn xds_socket_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.nodes
            .iter()
            .map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n.ports.xds)))
            .collect()
    }

    /// Every node's admin address (host:port), in node order.
    pub fn admin_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.ports.admin))
            .collect()
    }

    /// `(region, xds address)` of every node: the controllers of a bootstrap.
    pub fn controllers(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.region.clone(), format!("127.0.0.1:{}", n.ports.xds)))
            .collect()
    }

    /// The running children's process ids, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("MERIDIAN_TEST_KEEP").is_some() {
            eprintln!("keeping test dir {}", self.dir.path().display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            // Keep what a failed test needs to be understood.
            for n in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                for (i, l) in lines.iter().enumerate() {
                    if l.contains("panicked at") {
                        eprintln!("---- node {} panicked ----", n.id);
                        for l in &lines[i..(i + 3).min(lines.len())] {
                            eprintln!("{l}");
                        }
                    }
                }
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last 40 lines) ----", n.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
