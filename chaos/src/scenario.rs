//! One scenario: clients run while the nemesis follows its plan; then every
//! fault is undone and the checks run. Each scenario has its own keys, so
//! scenarios that share a cluster never share a history.
//!
//! Properties checked, for every scenario:
//! - safety: each key's history is linearizable (registers with CAS);
//! - durability: every acknowledged write is in the store's retained
//!   history of its key after recovery (none lost);
//! - liveness: once the faults stop, a write through every node succeeds
//!   within `recovery_bound`;
//! - with a data plane: no request through Envoy failed, Envoy rejected no
//!   update, and after the faults a config change reaches Envoy and
//!   proxy-status shows it SYNCED within `recovery_bound`.

use std::time::{Duration, Instant};

use crate::checker::{self, CheckOptions, Verdict};
use crate::clients::{self, Clients, Targets, Workload};
use crate::dataplane::DataPlane;
use crate::history::{Op, Outcome};
use crate::nemesis::{self, Fault};
use crate::nodes::Nodes;
use crate::Error;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub faults: Vec<Fault>,
    pub seed: u64,
    pub duration: Duration,
    /// Check with `failed_cas_observes` whatever the run's settings say.
    pub strict_cas: bool,
}

/// A row of the summary table.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub seed: u64,
    pub faults: Vec<String>,
    pub ops: usize,
    pub ok: usize,
    pub unknown: usize,
    pub anomalies: usize,
    pub undecided: usize,
    pub lost: usize,
    /// From the end of the faults until a write through every node succeeded.
    pub recovery: Option<Duration>,
    /// Requests sent through Envoy, and those that failed (`None`: no
    /// data plane in this run).
    pub requests: Option<(u64, u64)>,
    /// From the config change after the faults until Envoy ran it.
    pub converged: Option<Duration>,
    pub problems: Vec<String>,
}

impl Row {
    pub fn failed(&self) -> bool {
        !self.problems.is_empty()
    }
}

pub struct Settings {
    pub workload: Workload,
    pub check: CheckOptions,
    pub recovery_bound: Duration,
}

pub async fn run(
    nodes: &mut Nodes,
    s: &Scenario,
    settings: &Settings,
    index: usize,
    mut dp: Option<&mut DataPlane>,
) -> Result<Row, Error> {
    let plan = nemesis::plan(s.seed, &s.faults, s.duration);
    println!(
        "== scenario {} seed {} ({:?}) ==",
        s.name, s.seed, s.duration
    );
    for st in &plan {
        println!(
            "   plan: at {:>5.1}s {} for {:.1}s",
            st.at.as_secs_f64(),
            st.fault,
            st.hold.as_secs_f64()
        );
    }
    let mut w = settings.workload.clone();
    w.key_prefix = format!("chaos-{}-{index}", std::process::id());
    let targets = Targets {
        nodes: nodes
            .slots()
            .into_iter()
            .map(|id| (id, nodes.api_addr(id)))
            .collect(),
    };
    let t0 = Instant::now();
    let clients = Clients::start(&w, targets, s.seed, t0);
    let rejected_before = match &dp {
        Some(d) => {
            d.begin();
            d.rejected().await
        }
        None => 0,
    };
    let mut row = Row {
        scenario: s.name.clone(),
        seed: s.seed,
        ..Row::default()
    };
    for step in &plan {
        sleep_until(t0, step.at).await;
        let (what, undo) = nemesis::start(nodes, dp.as_deref_mut(), step).await?;
        println!(
            "   t={:>5.1}s {}: {what}",
            t0.elapsed().as_secs_f64(),
            step.fault
        );
        row.faults.push(step.fault.name().to_string());
        sleep_until(t0, step.at + step.hold).await;
        nemesis::undo(nodes, dp.as_deref_mut(), undo).await?;
        println!(
            "   t={:>5.1}s {} ends",
            t0.elapsed().as_secs_f64(),
            step.fault
        );
    }
    // Liveness, measured from the moment the faults end, with the clients
    // still running; whatever a fault left behind (none should be) is
    // undone first.
    nodes.net.heal()?;
    nodes.revive_all()?;
    row.recovery = recover(nodes, &w.key_prefix, settings.recovery_bound).await;
    if row.recovery.is_none() {
        row.problems.push(format!(
            "liveness: no write through every node succeeded within {:?} of the faults' end",
            settings.recovery_bound
        ));
    }
    sleep_until(t0, s.duration).await;
    let mut history = clients.stop().await;

    let mut keys: Vec<String> = history.iter().map(|o| o.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let leader = nodes.leader().await.unwrap_or(1);
    let addr = nodes.api_addr(leader);
    history.extend(clients::final_reads(&addr, &keys, w.clients, t0).await);
    row.ops = history.len();
    row.ok = history.iter().filter(|o| o.outcome == Outcome::Ok).count();
    row.unknown = history
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();

    lost_writes(&addr, &keys, &history, &mut row).await;

    let mut check = settings.check.clone();
    check.failed_cas_observes |= s.strict_cas;
    for r in checker::check(&history, &check) {
        match r.verdict {
            Verdict::Linearizable => {}
            Verdict::Anomaly(a) => {
                row.anomalies += 1;
                let mut msg = format!("{}: {:?} ({} ops): {}", r.key, a.kind, r.ops, a.explanation);
                for op in &a.ops {
                    msg.push_str(&format!("\n      {op}"));
                }
                row.problems.push(msg);
            }
            Verdict::Undecided(why) => {
                row.undecided += 1;
                println!("   {}: undecided: {why}", r.key);
            }
        }
    }
    if let Some(d) = dp.as_deref_mut() {
        data_plane(
            d,
            nodes,
            index,
            settings.recovery_bound,
            rejected_before,
            &mut row,
        )
        .await;
    }
    row.problems.append(&mut nodes.notes);
    let panicked = nodes.panics();
    if !panicked.is_empty() {
        row.problems
            .push(format!("nodes {panicked:?} panicked (see their logs)"));
    }
    for p in &row.problems {
        println!("   PROBLEM {p}");
    }
    if row.failed() {
        // The whole history, for whoever reads the failure next.
        let path = nodes.dir().join(format!("history-{index}-{}.txt", s.name));
        let mut sorted = history.clone();
        sorted.sort_by_key(|o| (o.key.clone(), o.call));
        let text: String = sorted.iter().map(|o| format!("{op}\n", op = o)).collect();
        std::fs::write(&path, text).map_err(|e| Error::Io {
            what: format!("writing {}", path.display()),
            source: e,
        })?;
        println!("   history in {}", path.display());
    }
    Ok(row)
}

async fn sleep_until(t0: Instant, at: Duration) {
    let left = at.saturating_sub(t0.elapsed());
    tokio::time::sleep(left).await;
}

/// Waits until a write through every node succeeds; returns how long it took.
async fn recover(nodes: &Nodes, prefix: &str, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut pending = nodes.ids();
    let mut n = 0u64;
    while start.elapsed() < bound {
        let mut still = Vec::new();
        for id in pending {
            n += 1;
            if !clients::probe_write(
                &nodes.api_addr(id),
                &format!("{prefix}-probe"),
                &format!("/{prefix}-probe-{n}"),
            )
            .await
            {
                still.push(id);
            }
        }
        if still.is_empty() {
            return Some(start.elapsed());
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The data plane's checks: no failed request through Envoy during the
/// scenario, no rejected update, and convergence to a change made after it.
async fn data_plane(
    d: &mut DataPlane,
    nodes: &Nodes,
    index: usize,
    bound: Duration,
    rejected_before: u64,
    row: &mut Row,
) {
    let t = d.take();
    row.requests = Some((t.sent, t.failed));
    if t.failed > 0 {
        let mut msg = format!(
            "data plane: {} of {} requests through Envoy failed; the first:",
            t.failed, t.sent
        );
        for (at, what) in &t.failures {
            msg.push_str(&format!("\n      t={at:.1}s {what}"));
        }
        row.problems.push(msg);
    }
    match d.converge(nodes, index, bound).await {
        Ok(took) => row.converged = Some(took),
        Err(e) => row.problems.push(format!("convergence: {e}")),
    }
    let rejected = d.rejected().await.saturating_sub(rejected_before);
    if rejected > 0 {
        row.problems.push(format!(
            "data plane: Envoy rejected {rejected} updates (see its log)"
        ));
    }
}

/// Every acknowledged write must be in the store's history of its key.
async fn lost_writes(addr: &str, keys: &[String], history: &[Op], row: &mut Row) {
    for name in keys {
        let acked: Vec<&Op> = history
            .iter()
            .filter(|o| {
                o.key == *name && o.outcome == Outcome::Ok && o.is_write() && o.revision > 0
            })
            .collect();
        if acked.is_empty() {
            continue;
        }
        let (values, oldest) = match clients::stored_values(addr, name).await {
            Ok(v) => v,
            Err(st) => {
                row.problems.push(format!(
                    "{name}: could not read its history: {}",
                    st.message()
                ));
                continue;
            }
        };
        for op in acked {
            if op.revision <= oldest {
                continue; // compacted: neither proof nor disproof
            }
            let v = op.written().unwrap_or_default();
            if !values.iter().any(|s| s == v) {
                row.lost += 1;
                row.problems.push(format!(
                    "{name}: acknowledged write lost (revision {}): {op}",
                    op.revision
                ));
            }
        }
    }
}

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<22} {:>20} {:>6} {:>7} {:>7} {:>7} {:>9} {:>9} {:>5} {:>9} {:>13} {:>9}  faults",
        "scenario",
        "seed",
        "faults",
        "ops",
        "ok",
        "unknown",
        "anomalies",
        "undecided",
        "lost",
        "recovery",
        "dp failed",
        "converged"
    );
    for r in rows {
        let rec = r
            .recovery
            .map_or("none".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        let dp = r
            .requests
            .map_or("-".to_string(), |(sent, failed)| format!("{failed}/{sent}"));
        let conv = r
            .converged
            .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
        let mut kinds = r.faults.clone();
        kinds.sort();
        kinds.dedup();
        println!(
            "{:<22} {:>20} {:>6} {:>7} {:>7} {:>7} {:>9} {:>9} {:>5} {:>9} {:>13} {:>9}  {}",
            r.scenario,
            r.seed,
            r.faults.len(),
            r.ops,
            r.ok,
            r.unknown,
            r.anomalies,
            r.undecided,
            r.lost,
            rec,
            dp,
            conv,
            kinds.join(",")
        );
    }
}
