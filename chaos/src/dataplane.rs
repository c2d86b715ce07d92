//! The data plane under the faults: a real Envoy and a real `meridian
//! agent` in the root namespace (beside the clients), both given every
//! slot's controller, with upstreams on loopback whose endpoints only the
//! agent reports (lease and policy at their defaults: 30 s, `drop`). The
//! broken mode `pinned-agent` gives the agent node 1's address only and a
//! 5 s lease, so that while node 1 is down the lease expires and requests
//! fail: the traffic check must say so. A paced
//! client sends requests through Envoy for the whole run; upstreams never
//! fail, so every failed request is the control plane's doing.
//!
//! After each scenario, [`DataPlane::converge`] changes the config and
//! waits until Envoy runs it (its admin `/clusters`) and `meridian
//! proxy-status` says so: Envoys converge to the final config.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_testkit::agent::AgentProc;
use meridian_testkit::bootstrap::BootstrapSpec;
use meridian_testkit::envoy::Envoy;
use meridian_testkit::http::http_get;
use meridian_testkit::upstream::Upstream;
use serde_json::json;

use crate::nodes::Nodes;
use crate::Error;

/// The agent's cluster, the service it reports, and the Envoy's node id.
const CLUSTER: &str = "chaos-agents";
const SERVICE: &str = "chaos-web";
pub const ENVOY_NODE: &str = "chaos-envoy";
/// One request every this long (20 per second).
const PACE: Duration = Duration::from_millis(50);
/// A request that takes longer failed, as it would for a user.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a restarted agent may take to claim its cluster again.
const AGENT_BACK_WITHIN: Duration = Duration::from_secs(15);
/// The first failures of a scenario kept, to say what they were.
const KEEP_FAILURES: usize = 5;

pub struct DataPlane {
    // Dropped in this order: traffic first, then the Envoy, the agent and
    // the upstreams it reports.
    traffic: tokio::task::JoinHandle<()>,
    counts: Arc<Counts>,
    envoy: Envoy,
    agent: AgentProc,
    /// The session the agent had when `kill-agent` killed it.
    killed_session: Option<String>,
    upstreams: Vec<Upstream>,
    /// The generation service of the last convergence check.
    last_gen: Option<String>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    /// (seconds since the scenario's start of counting, what went wrong)
    failures: Mutex<Vec<(f64, String)>>,
    since: Mutex<Option<Instant>>,
}

/// A scenario's share of the traffic.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    pub sent: u64,
    pub failed: u64,
    pub failures: Vec<(f64, String)>,
}

impl DataPlane {
    /// Registers the agents' cluster, starts the upstreams, the agent and
    /// the Envoy, writes the route to them, and waits until requests go
    /// through. `pinned`: the broken mode (module docs).
    pub async fn start(nodes: &Nodes, pinned: bool) -> Result<DataPlane, Error> {
        let lease_ttl = if pinned { "5s" } else { "30s" };
        meridian_testkit::envoy::try_envoy_bin().map_err(|e| Error::Setup(format!("{e:#}")))?;
        let token = nodes
            .cli(&[
                "clusters",
                "add",
                CLUSTER,
                "--region",
                "us-east",
                "--lease-ttl",
                lease_ttl,
            ])
            .map_err(|e| Error::Setup(format!("registering the agents' cluster: {e}")))?;
        let upstreams = Upstream::start_many("chaos-up", 2).await;
        let apis: Vec<String> = if pinned {
            vec![nodes.api_addr(1)]
        } else {
            nodes.slots().iter().map(|&s| nodes.api_addr(s)).collect()
        };
        let agent = AgentProc::start(nodes.dir(), CLUSTER, "us-east", token.trim(), &apis);
        agent.declare(&[(SERVICE, upstreams[0].port), (SERVICE, upstreams[1].port)]);

        let port = meridian_testkit::ports::free_port();
        let route = json!({"hosts": ["*"], "rules": [{"backends": [{"service": SERVICE}]}]});
        let listener = json!({"address": "127.0.0.1", "port": port, "routes": ["chaos-main"]});
        for (kind, name, spec) in [
            ("service", SERVICE, json!({"port": upstreams[0].port})),
            ("route", "chaos-main", route),
            ("listener", "chaos-edge", listener),
        ] {
            nodes
                .cli(&["put", kind, name, "--value", &spec.to_string()])
                .map_err(|e| Error::Setup(format!("writing {kind}/{name}: {e}")))?;
        }

        let controllers: Vec<(String, String)> = nodes
            .slots()
            .iter()
            .map(|&s| ("us-east".to_string(), nodes.xds_addr(s)))
            .collect();
        let mut spec = BootstrapSpec::new(
            ENVOY_NODE,
            "us-east",
            meridian_testkit::ports::free_port(),
            controllers,
        );
        spec.controller_admin = nodes
            .slots()
            .iter()
            .map(|&s| (nodes.xds_addr(s), nodes.admin_addr(s)))
            .collect();
        let envoy = Envoy::from_spec(&spec, nodes.dir(), "info")
            .map_err(|e| Error::Setup(format!("starting Envoy: {e:#}")))?;

        let url = format!("http://127.0.0.1:{port}/");
        let start = Instant::now();
        loop {
            if matches!(http_get(&url).await, Ok((200, ref b)) if b == "chaos-up") {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(Error::Setup(format!(
                    "no request through Envoy succeeded within 60 s; its log is {}, the agent's {}",
                    envoy.log.display(),
                    nodes.dir().join(format!("agent-{CLUSTER}.log")).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let counts = Arc::new(Counts::default());
        let traffic = tokio::spawn(send(url, counts.clone()));
        Ok(DataPlane {
            traffic,
            counts,
            envoy,
            agent,
            killed_session: None,
            upstreams,
            last_gen: None,
        })
    }

    /// Starts counting a scenario's requests.
    pub fn begin(&self) {
        self.counts.sent.store(0, Ordering::Relaxed);
        self.counts.failed.store(0, Ordering::Relaxed);
        lock(&self.counts.failures).clear();
        *lock(&self.counts.since) = Some(Instant::now());
    }

    /// The requests since [`DataPlane::begin`].
    pub fn take(&self) -> Traffic {
        Traffic {
            sent: self.counts.sent.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            failures: lock(&self.counts.failures).clone(),
        }
    }

    /// SIGKILLs the agent (`kill-agent`), noting the session it had.
    pub fn kill_agent(&mut self, nodes: &Nodes) {
        // Unknown if the CLI fails (a fault just before): then any
        // session with an active lease counts as back.
        self.killed_session = agent_session(nodes).ok().flatten();
        self.agent.kill();
    }

    /// Starts the agent again and waits until a new session of it holds
    /// the cluster with an active lease.
    pub async fn revive_agent(&mut self, nodes: &Nodes) -> Result<Duration, String> {
        let old = self.killed_session.take();
        self.agent.spawn();
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < AGENT_BACK_WITHIN {
            match agent_session(nodes) {
                Ok(Some(s)) if old.as_ref() != Some(&s) => return Ok(start.elapsed()),
                Ok(_) => last = format!("the cluster still has session {old:?} or none"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "the restarted agent did not claim {CLUSTER} with an active lease within \
             {AGENT_BACK_WITHIN:?}: {last}"
        ))
    }

    /// Updates Envoy rejected (a NACK); none is expected.
    pub async fn rejected(&self) -> u64 {
        self.envoy.sum_stats("update_rejected").await
    }

    /// Writes a new generation service (and deletes the last one), then
    /// waits up to `bound` until Envoy runs it and proxy-status shows the
    /// Envoy SYNCED. Returns how long that took, or what was missing.
    pub async fn converge(
        &mut self,
        nodes: &Nodes,
        index: usize,
        bound: Duration,
    ) -> Result<Duration, String> {
        let gen = format!("chaos-gen-{}-{index}", std::process::id());
        let spec = json!({"port": self.upstreams[0].port, "endpoints": [{"address": "127.0.0.1", "region": "us-east"}]});
        nodes.cli(&["put", "service", &gen, "--value", &spec.to_string()])?;
        if let Some(old) = self.last_gen.replace(gen.clone()) {
            nodes.cli(&["delete", "service", &old])?;
        }
        let start = Instant::now();
        let admin = format!("http://{}/clusters", self.envoy.admin_addr());
        let mut last = String::new();
        while start.elapsed() < bound {
            let clusters = http_get(&admin).await.map(|(_, b)| b).unwrap_or_default();
            let has = |name: &str| {
                clusters
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}::")))
            };
            let old_gone =
                index == 0 || !has(&format!("chaos-gen-{}-{}", std::process::id(), index - 1));
            if !has(&gen) || !old_gone {
                last = format!(
                    "Envoy's /clusters does not have {gen} yet (or still has the last one)"
                );
            } else {
                match nodes.cli(&["proxy-status", "-o", "json"]) {
                    Ok(out) if synced(&out) => return Ok(start.elapsed()),
                    Ok(out) => {
                        last = format!("proxy-status does not show it SYNCED: {}", out.trim())
                    }
                    Err(e) => last = format!("proxy-status failed: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("not converged within {bound:?}: {last}"))
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.traffic.abort();
    }
}

/// Whether `proxy-status -o json` shows the chaos Envoy with every type
/// SYNCED (or with nothing to send), CDS among them ACKed.
fn synced(out: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(out) else {
        return false;
    };
    v["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == ENVOY_NODE)
        .is_some_and(meridian_testkit::cluster::proxy_is_synced)
}

/// The session holding the agents' cluster with an active lease, as
/// `meridian clusters list` shows it.
fn agent_session(nodes: &Nodes) -> Result<Option<String>, String> {
    let out = nodes.cli(&["clusters", "list", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| format!("`clusters list -o json` printed no JSON ({e}): {out}"))?;
    Ok(v["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cluster"] == CLUSTER && c["lease"] == "active")
        .and_then(|c| c["session"].as_str().map(str::to_string)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One GET every [`PACE`], each on its own task so a slow one never delays
/// the next; a non-200 answer, an error or no answer within
/// [`REQUEST_TIMEOUT`] is a failure.
async fn send(url: String, counts: Arc<Counts>) {
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (url, counts) = (url.clone(), counts.clone());
        tokio::spawn(async move {
            let at = Instant::now();
            counts.sent.fetch_add(1, Ordering::Relaxed);
            let what = match tokio::time::timeout(REQUEST_TIMEOUT, http_get(&url)).await {
                Ok(Ok((200, _))) => return,
                Ok(Ok((code, body))) => format!("HTTP {code}: {}", body.trim()),
                Ok(Err(e)) => format!("error: {e}"),
                Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
            };
            counts.failed.fetch_add(1, Ordering::Relaxed);
            let since = lock(&counts.since).unwrap_or(at);
            let mut f = lock(&counts.failures);
            if f.len() < KEEP_FAILURES {
                f.push((at.saturating_duration_since(since).as_secs_f64(), what));
            }
        });
    }
}
