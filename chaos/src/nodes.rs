//! Real `meridian server` processes, one per namespace of a [`Net`], on the
//! same ports at different addresses. Killed (SIGKILL), paused
//! (SIGSTOP/SIGCONT) and restarted on their data dirs by the nemesis; a
//! guard kills them on drop, and [`kill_all_started`] does for the signal
//! handler.
//!
//! A namespace is a slot (the ids the nemesis and the network speak of);
//! the Raft node id in a slot changes when the slot's node is removed and
//! another joins there (ids are never reused). Spare slots start empty, for
//! the membership faults.
//!
//! This file is long because it is every operation on a node process the
//! nemesis needs (start, kill, pause, wipe, add, remove, fill its disk),
//! each short, around one table of slots; split, they would share that
//! table through accessors.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;

use crate::net::Net;
use crate::Error;

pub const API_PORT: u16 = 7000;
const PEER_PORT: u16 = 7001;
const XDS_PORT: u16 = 7002;
const ADMIN_PORT: u16 = 7003;

/// Every pid this process started, for the signal handler.
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Every tmpfs this process mounted, for the signal handler.
static MOUNTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Each slot's data dirs live on a small filesystem of its own, so that a
/// fault can fill one node's disk and no other's.
const DISK_SIZE: &str = "size=96m";

#[derive(Clone, Debug)]
pub struct NodeOpts {
    pub write_timeout: Duration,
    pub snapshot_logs: u64,
    /// A test-only flag for the node, to show the suite fails on a broken
    /// server (none exists yet; the broken modes are client-side).
    pub extra_args: Vec<String>,
    /// libfaketime, preloaded into every node so that [`Nodes::skew`] can
    /// move a running node's wall clock (`None`: clocks are never skewed).
    pub faketime: Option<PathBuf>,
}

/// Where Debian's `libfaketime` package puts the multi-threaded library.
pub fn find_faketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join("libfaketimeMT.so.1"))
    .find(|p| p.exists())
}

struct Node {
    /// The slot: the namespace and address.
    id: u64,
    /// The Raft node id now in the slot.
    raft_id: u64,
    /// Whether the slot's node is a member (runs, or is to be restarted).
    member: bool,
    child: Option<Child>,
    paused: bool,
    data: PathBuf,
    log: PathBuf,
}

pub struct Nodes {
    pub net: Net,
    nodes: Vec<Node>,
    bin: PathBuf,
    opts: NodeOpts,
    dir: tempfile::TempDir,
    bootstrapped: bool,
    next_id: u64,
    /// What a fault found wrong on its own (a check inside the nemesis),
    /// for the scenario's problems.
    pub notes: Vec<String>,
}

impl Nodes {
    /// Starts `n` nodes, node 1 bootstrapping and the others joining it, and
    /// waits until all are voters.
    pub async fn start(n: usize, spare: usize, opts: NodeOpts) -> Result<Nodes, Error> {
        let ids: Vec<u64> = (1..=n as u64).collect();
        let slots: Vec<u64> = (1..=(n + spare) as u64).collect();
        let net = Net::create(&slots)?;
        let bin =
            meridian_testkit::try_meridian_bin().map_err(|e| Error::Setup(format!("{e:#}")))?;
        let dir = tempfile::Builder::new()
            .prefix("meridian-chaos-")
            .tempdir()
            .map_err(|e| Error::Io {
                what: "creating the data dir".into(),
                source: e,
            })?;
        for &id in &slots {
            mount_disk(&dir.path().join(format!("disk-{id}")))?;
        }
        let nodes = slots
            .iter()
            .map(|&id| Node {
                id,
                raft_id: id,
                member: id <= n as u64,
                child: None,
                paused: false,
                data: dir.path().join(format!("disk-{id}/node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
            })
            .collect();
        let mut c = Nodes {
            net,
            nodes,
            bin,
            opts,
            dir,
            bootstrapped: false,
            next_id: slots.len() as u64 + 1,
            notes: Vec::new(),
        };
        c.spawn(1)?;
        c.wait_until("node 1 leads", Duration::from_secs(60), |st| {
            st.iter().any(|(id, s)| *id == 1 && s.role == "leader")
        })
        .await?;
        for id in 2..=n as u64 {
            c.spawn(id)?;
        }
        let want = ids.clone();
        c.wait_until(
            &format!("voters {want:?}"),
            Duration::from_secs(90),
            move |st| {
                st.iter().any(|(_, s)| {
                    let mut v = s.voters.clone();
                    v.sort_unstable();
                    s.role == "leader" && v == want && s.learners.is_empty()
                })
            },
        )
        .await?;
        Ok(c)
    }

    /// The slots whose node is a member.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.id)
            .collect()
    }

    /// Every slot, members or not (the clients' targets: a slot nobody
    /// serves refuses connections, an op that did not happen).
    pub fn slots(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Slots whose node is not a member: room for a node to join.
    pub fn spare(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| !n.member)
            .map(|n| n.id)
            .collect()
    }

    pub fn raft_id(&self, slot: u64) -> u64 {
        self.nodes
            .iter()
            .find(|n| n.id == slot)
            .map_or(0, |n| n.raft_id)
    }

    pub fn log_text(&self, slot: u64) -> String {
        self.nodes
            .iter()
            .find(|n| n.id == slot)
            .and_then(|n| std::fs::read_to_string(&n.log).ok())
            .unwrap_or_default()
    }

    pub fn api_addr(&self, id: u64) -> String {
        format!("{}:{API_PORT}", self.net.ip(id))
    }

    pub fn xds_addr(&self, id: u64) -> String {
        format!("{}:{XDS_PORT}", self.net.ip(id))
    }

    pub fn admin_addr(&self, id: u64) -> String {
        format!("{}:{ADMIN_PORT}", self.net.ip(id))
    }

    /// Runs `meridian ARGS` against every member, as an operator does;
    /// its standard output, or what it said when it failed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self.cli_via(&self.ids(), args)?;
        if !out.status.success() {
            return Err(format!(
                "`meridian {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `meridian ARGS` against the members in `slots`.
    fn cli_via(&self, slots: &[u64], args: &[&str]) -> Result<std::process::Output, String> {
        let servers: Vec<String> = slots.iter().map(|&o| self.api_addr(o)).collect();
        Command::new(&self.bin)
            .args(["--server", &servers.join(","), "--timeout", "10s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running meridian {}: {e}", args.join(" ")))
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
    }

    /// Starts node `id` on its data dir (again, after a kill). The first
    /// node started bootstraps the cluster; every later start names the
    /// other members to join through (a node already in the cluster
    /// ignores it), so a node whose data dir was wiped never bootstraps a
    /// cluster of its own.
    pub fn spawn(&mut self, id: u64) -> Result<(), Error> {
        let ip = self.net.ip(id);
        let ns = self.net.ns(id);
        let others: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|o| *o != id)
            .map(|o| self.api_addr(o))
            .collect();
        let join = self.bootstrapped.then(|| others.join(","));
        self.bootstrapped = true;
        let clock = self.clock_file(id);
        if self.opts.faketime.is_some() && !clock.exists() {
            self.write_clock(id, 0)?;
        }
        let (bin, opts) = (self.bin.clone(), self.opts.clone());
        let n = self.node(id);
        let raft_id = n.raft_id;
        if n.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(|e| Error::Io {
                what: format!("opening {}", n.log.display()),
                source: e,
            })?;
        let log2 = log.try_clone().map_err(|e| Error::Io {
            what: "log file".into(),
            source: e,
        })?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(&bin)
            .arg("server")
            // Plaintext: the suite tests consensus and the API, not TLS.
            .arg("--insecure")
            .args(["--node-id", &raft_id.to_string(), "--region", "us-east"])
            .arg("--data-dir")
            .arg(&n.data)
            .args(["--api-listen", &format!("{ip}:{API_PORT}")])
            .args(["--peer-listen", &format!("{ip}:{PEER_PORT}")])
            .args(["--xds-listen", &format!("{ip}:{XDS_PORT}")])
            .args(["--admin-listen", &format!("{ip}:{ADMIN_PORT}")])
            .args(["--snapshot-logs", &opts.snapshot_logs.to_string()])
            // The disk faults (`slow-fsync`, `fsync-error`) go through the
            // admin API's /debug/disk-faults; partitions stay nft's.
            .arg("--enable-fault-injection")
            .args([
                "--write-timeout",
                &format!("{}ms", opts.write_timeout.as_millis()),
            ])
            .args(&opts.extra_args)
            // MERIDIAN_CHAOS_RUST_LOG: the servers' filter, to dig into a failure.
            .env(
                "RUST_LOG",
                std::env::var("MERIDIAN_CHAOS_RUST_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(lib) = &opts.faketime {
            // Only the wall clock moves (what NTP steps); the monotonic clock
            // the timers use stays true. The offset file is re-read every
            // second, so a running node's clock can be stepped.
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &clock)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        match join {
            None => cmd.arg("--bootstrap"),
            Some(j) => cmd.args(["--join", &j]),
        };
        // `ip netns exec` execs the command itself: the pid is the server's.
        let child = cmd
            .spawn()
            .map_err(|e| Error::Setup(format!("starting {} in {ns}: {e}", bin.display())))?;
        PIDS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// The file of slot `id`'s clock offset (outside its disk, so a full
    /// disk or a wipe leaves it).
    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("clock-{id}"))
    }

    fn write_clock(&self, id: u64, secs: i64) -> Result<(), Error> {
        let file = self.clock_file(id);
        std::fs::write(&file, format!("{secs:+}\n")).map_err(|e| Error::Io {
            what: format!("writing {}", file.display()),
            source: e,
        })
    }

    /// Steps slot `id`'s wall clock `secs` away from the true time (0: back
    /// to true), while it runs; the node sees it within about a second.
    pub fn skew(&mut self, id: u64, secs: i64) -> Result<(), Error> {
        if self.opts.faketime.is_none() {
            return Err(Error::Setup(
                "clock skew needs libfaketime preloaded (apt install libfaketime)".into(),
            ));
        }
        self.write_clock(id, secs)
    }

    /// Sets slot `id`'s disk faults (a `DiskFaultConfig` as JSON; `{}`
    /// clears them) through its admin API.
    pub async fn set_disk_faults(&self, id: u64, body: &str) -> Result<(), String> {
        let url = format!("http://{}/debug/disk-faults", self.admin_addr(id));
        match meridian_testkit::http::http_request("PUT", &url, Some(body)).await {
            Ok((200, _)) => Ok(()),
            Ok((code, text)) => Err(format!("PUT {url} {body}: HTTP {code}: {}", text.trim())),
            Err(e) => Err(format!("PUT {url} {body}: {e}")),
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) {
        let n = self.node(id);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            PIDS.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| *p != c.id());
        }
        n.paused = false;
    }

    /// SIGSTOP (`true`) or SIGCONT.
    pub fn pause(&mut self, id: u64, stop: bool) {
        let n = self.node(id);
        if let Some(c) = &n.child {
            let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on a pid we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
            n.paused = stop;
        }
    }

    /// SIGKILL, delete the data dir, and start again with the same node id:
    /// a disk replaced, or a volume lost, under a node that keeps its name.
    pub fn wipe(&mut self, id: u64) -> Result<(), Error> {
        self.kill(id);
        let data = self.node(id).data.clone();
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| Error::Io {
                what: format!("deleting {}", data.display()),
                source: e,
            })?;
        }
        self.spawn(id)
    }

    /// Starts a new node (a new Raft id) in spare slot `slot`; it joins
    /// through the members, as a voter, on its own.
    pub fn add(&mut self, slot: u64) -> Result<u64, Error> {
        let raft_id = self.next_id;
        self.next_id += 1;
        let dir = self
            .dir
            .path()
            .join(format!("disk-{slot}/node-{slot}-id{raft_id}"));
        let n = self.node(slot);
        n.raft_id = raft_id;
        n.member = true;
        n.data = dir;
        self.spawn(slot)?;
        Ok(raft_id)
    }

    /// Removes slot `slot`'s node the way an operator does: `meridian
    /// cluster remove-node ID` through the other members, then stops it.
    /// Returns the CLI's answer; on an error the node is left a member.
    pub fn remove(&mut self, slot: u64) -> Result<String, String> {
        let raft_id = self.raft_id(slot);
        let others: Vec<u64> = self.ids().into_iter().filter(|o| *o != slot).collect();
        let out = self.cli_via(&others, &["cluster", "remove-node", &raft_id.to_string()])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if !out.status.success() {
            return Err(format!(
                "`meridian cluster remove-node {raft_id}` failed: {text}"
            ));
        }
        self.kill(slot);
        self.node(slot).member = false;
        Ok(text)
    }

    fn disk(&self, slot: u64) -> PathBuf {
        self.dir.path().join(format!("disk-{slot}"))
    }

    /// Fills slot `slot`'s filesystem to the last byte; returns how much
    /// was written.
    pub fn fill_disk(&self, slot: u64) -> Result<u64, Error> {
        use std::io::Write;
        let path = self.disk(slot).join("filler");
        let mut f = std::fs::File::create(&path).map_err(|e| Error::Io {
            what: format!("creating {}", path.display()),
            source: e,
        })?;
        let chunk = vec![0u8; 1 << 20];
        let mut n = 0u64;
        // Then smaller writes, for the last partial megabyte.
        for size in [1 << 20, 4096, 1] {
            while f.write_all(&chunk[..size]).is_ok() {
                n += size as u64;
            }
        }
        let _ = f.sync_all();
        Ok(n)
    }

    /// Gives slot `slot`'s filesystem its room back.
    pub fn free_disk(&self, slot: u64) -> Result<(), Error> {
        let path = self.disk(slot).join("filler");
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                what: format!("deleting {}", path.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Whether slot `slot`'s process is still running (reaps it if not).
    pub fn alive(&mut self, slot: u64) -> bool {
        let n = self.node(slot);
        match &mut n.child {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    n.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// Continues paused nodes and starts killed ones.
    pub fn revive_all(&mut self) -> Result<(), Error> {
        for id in self.ids() {
            if self.node(id).paused {
                self.pause(id, false);
            }
            if self.node(id).child.is_none() && self.node(id).member {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.id)
            .collect()
    }

    /// Each running node's own status, for those that answer within 1 s.
    pub async fn statuses(&self) -> Vec<(u64, pb::NodeStatus)> {
        let mut out = Vec::new();
        for id in self.running() {
            if let Some(st) = status(&self.api_addr(id)).await {
                out.push((id, st));
            }
        }
        out
    }

    /// The node that says it leads with the highest term, if any.
    pub async fn leader(&self) -> Option<u64> {
        self.statuses()
            .await
            .into_iter()
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| id)
    }

    async fn wait_until<F>(&self, what: &str, timeout: Duration, f: F) -> Result<(), Error>
    where
        F: Fn(&[(u64, pb::NodeStatus)]) -> bool,
    {
        let start = Instant::now();
        loop {
            if f(&self.statuses().await) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Setup(format!(
                    "timed out after {timeout:?} waiting for {what}; logs in {}\n{}",
                    self.dir().display(),
                    self.log_tails(15)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("---- node {} ----\n", n.id));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Whether any node's log shows a panic.
    pub fn panics(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| {
                std::fs::read_to_string(&n.log)
                    .unwrap_or_default()
                    .contains("panicked at")
            })
            .map(|n| n.id)
            .collect()
    }

    /// Keeps the data dir and logs past the run (for a failed one); the
    /// slots' filesystems stay mounted for reading (`umount` them after).
    pub fn keep(&mut self) -> Result<PathBuf, Error> {
        MOUNTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let fresh = tempfile::tempdir().map_err(|e| Error::Io {
            what: "creating a temp dir".into(),
            source: e,
        })?;
        Ok(std::mem::replace(&mut self.dir, fresh).keep())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        unmount_all();
    }
}

/// SIGKILL (after SIGCONT, so a paused one dies too) to every server this
/// process started: for the signal handler, when no destructor will run.
/// A small tmpfs at `path`, for one slot's data dirs.
fn mount_disk(path: &std::path::Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|e| Error::Io {
        what: format!("creating {}", path.display()),
        source: e,
    })?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", DISK_SIZE, "tmpfs"])
        .arg(path)
        .output()
        .map_err(|e| Error::Setup(format!("running mount: {e}")))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "mounting a tmpfs at {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    MOUNTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
    Ok(())
}

/// Unmounts every slot's filesystem this process mounted (and did not keep).
pub fn unmount_all() {
    for m in MOUNTS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&m)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn kill_all_started() {
    for pid in PIDS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        // SAFETY: kill(2); a pid already reaped and reused is the risk,
        // small within one run.
        unsafe {
            libc::kill(pid as i32, libc::SIGCONT);
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

pub async fn status(addr: &str) -> Option<pb::NodeStatus> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    ClusterServiceClient::new(ch)
        .get_node_status(pb::NodeStatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}
