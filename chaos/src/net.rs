//! Hosts that can be cut off: every controller in its own network
//! namespace, joined by veth pairs to a bridge that lives in a "switch"
//! namespace of its own, and one more veth from the switch to the root
//! namespace, where the clients and the runner are.
//!
//! The bridge sits in its own namespace because the host's FORWARD chain
//! (Docker's) drops bridged traffic once br_netfilter is loaded; inside a
//! fresh namespace the filter tables are empty, and the host's rules are
//! never touched.
//!
//! Cuts are real: nft drop rules inside the node namespaces (the packets of
//! open connections too, so TCP stalls as on a real partition), or the
//! node's switch port taken down (then clients lose it as well). Names carry
//! the runner's pid (`mch<pid>…`), so parallel runs never collide and a
//! later run can sweep what a killed one left behind.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::Error;

/// Every namespace this process made, for the signal handler's cleanup.
static MADE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Which of a node's directions a one-way cut drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

pub struct Net {
    prefix: String,
    subnet: u8,
    nodes: Vec<u64>,
}

fn run(args: &[&str]) -> Result<(), Error> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Setup(format!("running {}: {e}", args[0])))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Net {
    /// Makes the switch and one namespace per node id.
    pub fn create(nodes: &[u64]) -> Result<Net, Error> {
        sweep_stale();
        let prefix = format!("mch{}", std::process::id());
        let subnet = free_subnet()?;
        let net = Net {
            prefix,
            subnet,
            nodes: nodes.to_vec(),
        };
        net.build().inspect_err(|_| net.destroy())?;
        Ok(net)
    }

    fn build(&self) -> Result<(), Error> {
        let sw = self.switch();
        run(&["ip", "netns", "add", &sw])?;
        MADE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sw.clone());
        run(&["ip", "-n", &sw, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        // The root namespace's port on the switch.
        let (h, hs) = (format!("{}h", self.prefix), format!("{}hs", self.prefix));
        run(&["ip", "link", "add", &h, "type", "veth", "peer", "name", &hs])?;
        run(&["ip", "link", "set", &hs, "netns", &sw])?;
        run(&["ip", "-n", &sw, "link", "set", &hs, "master", "br0", "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.gateway()),
            "dev",
            &h,
        ])?;
        run(&["ip", "link", "set", &h, "up"])?;
        for &id in &self.nodes {
            let ns = self.ns(id);
            run(&["ip", "netns", "add", &ns])?;
            MADE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ns.clone());
            let (v, p) = (self.port(id), format!("{}p{id}", self.prefix));
            run(&["ip", "link", "add", &v, "type", "veth", "peer", "name", &p])?;
            run(&["ip", "link", "set", &v, "netns", &sw])?;
            run(&["ip", "link", "set", &p, "netns", &ns])?;
            run(&["ip", "-n", &sw, "link", "set", &v, "master", "br0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", &p, "name", "eth0"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(id)),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn switch(&self) -> String {
        format!("{}s", self.prefix)
    }

    /// The namespace of node `id`.
    pub fn ns(&self, id: u64) -> String {
        format!("{}n{id}", self.prefix)
    }

    /// Node `id`'s port on the switch (in the switch namespace).
    fn port(&self, id: u64) -> String {
        format!("{}v{id}", self.prefix)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    pub fn ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 10 + id as u8)
    }

    /// Drops every packet between `a` and `b`, both ways, inside both
    /// namespaces.
    pub fn cut(&self, a: u64, b: u64) -> Result<(), Error> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// In `a`'s namespace, drops what goes to and comes from `b`.
    fn drop_from(&self, a: u64, b: u64) -> Result<(), Error> {
        self.drop_dir(a, b, Dir::In)?;
        self.drop_dir(a, b, Dir::Out)
    }

    /// One way only: in `a`'s namespace, drops the packets `a` sends to `b`
    /// (`Dir::Out`) or those it gets from `b` (`Dir::In`); the other
    /// direction still flows, so `b` may still hear `a` (or `a` hear `b`),
    /// as with an asymmetric firewall rule or a half-broken link.
    pub fn cut_one_way(&self, a: u64, b: u64, dir: Dir) -> Result<(), Error> {
        self.drop_dir(a, b, dir)
    }

    fn drop_dir(&self, a: u64, b: u64, dir: Dir) -> Result<(), Error> {
        let ns = self.ns(a);
        let ip = self.ip(b).to_string();
        let nft = |rule: &[&str]| {
            let mut args = vec!["ip", "netns", "exec", &ns, "nft"];
            args.extend_from_slice(rule);
            run(&args)
        };
        // Creating the table and chains again is a no-op in nft.
        nft(&["add", "table", "inet", "mch"])?;
        nft(&["add chain inet mch in { type filter hook input priority 0; }"])?;
        nft(&["add chain inet mch out { type filter hook output priority 0; }"])?;
        match dir {
            Dir::In => nft(&[
                "add", "rule", "inet", "mch", "in", "ip", "saddr", &ip, "drop",
            ]),
            Dir::Out => nft(&[
                "add", "rule", "inet", "mch", "out", "ip", "daddr", &ip, "drop",
            ]),
        }
    }

    /// Takes node `id`'s switch port down or up: no one reaches it.
    pub fn link(&self, id: u64, up: bool) -> Result<(), Error> {
        let state = if up { "up" } else { "down" };
        run(&[
            "ip",
            "-n",
            &self.switch(),
            "link",
            "set",
            &self.port(id),
            state,
        ])
    }

    /// Removes every cut and brings every link up.
    pub fn heal(&self) -> Result<(), Error> {
        for &id in &self.nodes {
            quiet(&[
                "ip",
                "netns",
                "exec",
                &self.ns(id),
                "nft",
                "delete",
                "table",
                "inet",
                "mch",
            ]);
            self.link(id, true)?;
        }
        Ok(())
    }

    fn destroy(&self) {
        for &id in &self.nodes {
            quiet(&["ip", "netns", "del", &self.ns(id)]);
        }
        quiet(&["ip", "netns", "del", &self.switch()]);
        // Its peer went with the switch; this is for a half-built one.
        quiet(&["ip", "link", "del", &format!("{}h", self.prefix)]);
        MADE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Deletes every namespace this process made: for the signal handler, when
/// no destructor will run.
pub fn destroy_all_made() {
    let made = std::mem::take(&mut *MADE.lock().unwrap_or_else(|e| e.into_inner()));
    for ns in made {
        quiet(&["ip", "netns", "del", &ns]);
    }
    quiet(&["ip", "link", "del", &format!("mch{}h", std::process::id())]);
}

/// A /24 in 10.77.0.0/16 that no interface here uses.
fn free_subnet() -> Result<u8, Error> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .map_err(|e| Error::Setup(format!("running ip: {e}")))?;
    let used = String::from_utf8_lossy(&out.stdout).to_string();
    let start = (std::process::id() % 200) as u8;
    (0..200u8)
        .map(|i| (start + i) % 200 + 1)
        .find(|s| !used.contains(&format!("10.77.{s}.")))
        .ok_or_else(|| Error::Setup("no free subnet in 10.77.0.0/16".into()))
}

/// Deletes the namespaces of runs whose process is gone (killed with -9,
/// or its machine's cleanup never ran).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("mch") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        // Alive under any name (a copied binary): not ours to delete.
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            quiet(&["ip", "netns", "del", name]);
        }
    }
}
