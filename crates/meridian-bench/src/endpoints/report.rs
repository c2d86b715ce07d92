//! The report of `endpoints`: percentiles of each measured delay, Raft and
//! push counters, CPU seconds, and its table form.

use std::time::Duration;

use anyhow::Result;
use meridian_testkit::percentile;
use serde::Serialize;

use crate::output::Format;

pub(super) fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

pub(super) fn ms_of(us: u32) -> f64 {
    us as f64 / 1000.0
}

/// The test kit's nearest rank over sorted values, in ms; 0 when empty.
pub(super) fn pick(sorted: &[u32], q: f64) -> f64 {
    percentile(sorted, q).map(ms_of).unwrap_or(0.0)
}

#[derive(Serialize, Debug, Default)]
pub(super) struct Pcts {
    pub(super) n: usize,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

pub(super) fn pcts(mut v: Vec<u32>) -> Pcts {
    v.sort_unstable();
    Pcts {
        n: v.len(),
        p50_ms: pick(&v, 0.5),
        p99_ms: pick(&v, 0.99),
        max_ms: v.last().map(|&x| ms_of(x)).unwrap_or(0.0),
    }
}

#[derive(Serialize, Debug, Default)]
pub(super) struct Report {
    pub(super) services: u32,
    pub(super) endpoints: u32,
    pub(super) clusters: u32,
    pub(super) envoys: usize,
    pub(super) target_rate: u32,
    pub(super) duration_secs: f64,
    /// Changes generated during the run (the generator's own pace).
    pub(super) generated: u64,
    pub(super) generated_per_sec: f64,
    /// Changes whose update was ACKed before the end of the run.
    pub(super) committed_in_run: u64,
    pub(super) committed_per_sec: f64,
    /// All changes ACKed, including the backlog drained after the run.
    pub(super) committed_total: u64,
    /// Generated but not ACKed at the end of the run.
    pub(super) backlog_at_end: u64,
    pub(super) drain_secs: f64,
    pub(super) updates: u64,
    pub(super) changes_per_update: f64,
    /// Agent side: update sent -> Ack.
    pub(super) update_ack: Pcts,
    /// Agent side: change generated -> Ack (includes waiting for the
    /// update in flight).
    pub(super) change_commit: Pcts,
    /// Leader: endpoint-lane batches (Raft entries) and transactions.
    pub(super) raft_entries: Option<u64>,
    pub(super) raft_entries_per_sec: Option<f64>,
    pub(super) endpoint_txns: Option<u64>,
    pub(super) txns_per_entry: Option<f64>,
    pub(super) changes_per_entry: Option<f64>,
    pub(super) samples: usize,
    pub(super) samples_skipped: u64,
    /// (sample, Envoy) pairs that never saw the probe.
    pub(super) unseen: usize,
    /// Per (sample, Envoy): agent sent the update -> CLA arrived.
    pub(super) eds_from_send: Pcts,
    /// Per (sample, Envoy): change generated -> CLA arrived.
    pub(super) eds_from_change: Pcts,
    /// Per (sample, Envoy): agent got the Ack -> CLA arrived (negative
    /// values clamp to 0: the push can beat the Ack).
    pub(super) eds_from_ack: Pcts,
    pub(super) eds_responses: u64,
    pub(super) eds_resources: u64,
    pub(super) bytes: u64,
    pub(super) bytes_per_change: f64,
    pub(super) bytes_per_change_per_envoy: f64,
    /// CPU seconds during the run + drain, per node and for this process.
    pub(super) cpu_secs_nodes: Vec<f64>,
    pub(super) cpu_secs_loadgen: f64,
    pub(super) leader: String,
    pub(super) errors: Vec<String>,
}

pub(super) fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start at ')'.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}


pub(super) fn print(r: &Report, format: Format) -> Result<()> {
    if matches!(format, Format::Json | Format::Yaml) {
        return Ok(crate::output::print_value(&serde_json::to_value(r)?, format)?);
    }
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    let p = |x: &Pcts| {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            x.p50_ms, x.p99_ms, x.max_ms, x.n
        )
    };
    println!(
        "endpoints: {} services x {} endpoints over {} clusters/agents, {} delta-ADS Envoys (us-east), leader {}",
        r.services, r.endpoints, r.clusters, r.envoys, r.leader
    );
    println!(
        "target {} changes/s for {:.1} s: generated {} ({:.0}/s), committed in run {} ({:.0}/s), backlog at end {}, drained in {:.2} s, {} committed in all",
        r.target_rate, r.duration_secs, r.generated, r.generated_per_sec, r.committed_in_run, r.committed_per_sec, r.backlog_at_end, r.drain_secs, r.committed_total
    );
    println!(
        "agent updates: {} ({:.1} changes each)",
        r.updates, r.changes_per_update
    );
    println!("  update sent -> Ack:        {}", p(&r.update_ack));
    println!("  change made -> Ack:        {}", p(&r.change_commit));
    println!(
        "raft: {} endpoint entries ({}/s), {} txns/entry, {} changes/entry",
        r.raft_entries
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into()),
        opt(r.raft_entries_per_sec),
        opt(r.txns_per_entry),
        opt(r.changes_per_entry)
    );
    println!(
        "EDS: {} probes ({} skipped, {} probe x Envoy never seen)",
        r.samples, r.samples_skipped, r.unseen
    );
    println!("  agent sent -> Envoy has it: {}", p(&r.eds_from_send));
    println!("  change made -> Envoy has it: {}", p(&r.eds_from_change));
    println!("  agent Ack -> Envoy has it:  {}", p(&r.eds_from_ack));
    println!(
        "pushed: {} responses, {} CLAs, {:.1} MiB; {:.0} B per change ({:.0} B per change per Envoy)",
        r.eds_responses,
        r.eds_resources,
        r.bytes as f64 / (1024.0 * 1024.0),
        r.bytes_per_change,
        r.bytes_per_change_per_envoy
    );
    println!(
        "CPU s (run + drain): nodes {:?}, load generator {:.1}",
        r.cpu_secs_nodes
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>(),
        r.cpu_secs_loadgen
    );
    for e in &r.errors {
        println!("error: {e}");
    }
    Ok(())
}
