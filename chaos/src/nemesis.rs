//! The nemesis: faults on real processes and real links, chosen and timed
//! from a seed. The plan (which fault, when, for how long) is a function of
//! the seed alone and is printed before the run; the targets that depend on
//! the cluster (who leads at that moment) are resolved when the fault
//! starts and printed then.
//!
//! This file is long because it is every fault: its plan, how it is done
//! and how it is undone, each a match over the same enum, read side by side.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::dataplane::DataPlane;
use crate::net::Dir;
use crate::nodes::Nodes;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL one random node, restart it when the fault ends.
    KillOne,
    KillLeader,
    /// SIGKILL a minority (one of three, two of five).
    KillMinority,
    /// SIGKILL every node at once, restart them all.
    KillAll,
    /// SIGSTOP the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// Drop all traffic between the leader and the other nodes; clients
    /// still reach it.
    PartitionLeader,
    /// Cut a random minority off from the majority; clients reach both.
    PartitionMinority,
    /// The leader's switch port down: nobody reaches it, clients neither.
    IsolateLeaderLink,
    /// Two halves that cannot see each other, and one node that sees both.
    Bridge,
    /// A random node's outbound peer traffic dropped (it hears its peers,
    /// they never hear it): a leader there keeps its followers' votes away.
    OneWayOut,
    /// A random node's inbound peer traffic dropped (its peers hear it, it
    /// hears none of them): it campaigns, and its vote requests reach them.
    OneWayIn,
    /// SIGKILL a random node, delete its data dir, start it again with the
    /// same node id; when the fault ends, the operator's way back: remove
    /// the member and start the node with a new id and an empty data dir.
    WipeOne,
    /// Membership changes under faults: a node joins in a spare slot while
    /// another member is killed; when the fault ends the killed one
    /// restarts and a random older member is removed (`meridian cluster
    /// remove-node`, the leader too), freeing its slot.
    Membership,
    /// A random node's data-dir filesystem filled to the last byte: it
    /// must stop acknowledging (a failed flush is final) and exit saying
    /// why, never panic; when the fault ends the room comes back and the
    /// node is restarted on its data dir, once.
    DiskFull,
    /// A running node's wall clock stepped 30 s to 10 min forward or back
    /// (the leader half the time: its time goes into commands, such as
    /// lease expiry and rollout times); the monotonic clock is untouched,
    /// as with an NTP step. Back to the true time when the fault ends.
    ClockSkew,
    /// Every follower's wall clock stepped by the same 60 s to 10 min
    /// (forward or back), then the leader SIGKILLed: the next leader's
    /// clock disagrees with the times the old one wrote into the log (the
    /// agents' lease renewals). Undone: the old leader restarted, every
    /// clock true.
    SkewedSuccessor,
    /// The agent SIGKILLed (its lease, 30 s, outlives the fault), started
    /// again when the fault ends: its new session must claim the cluster
    /// and resync without a request through Envoy failing. Nothing
    /// without a data plane.
    KillAgent,
    /// Every log flush (fsync) of a node (the leader half the time)
    /// delayed by 100-800 ms, through the storage trait's fault layer:
    /// writes slow down, nothing may be lost or anomalous, the node must
    /// keep running.
    SlowFsync,
    /// A node's (the leader half the time) log flushes fail, as an fsync
    /// returning EIO: it must stop acknowledging and exit saying why
    /// ("raft stopped"), never panic; restarted on its data dir when the
    /// fault ends.
    FsyncError,
}

/// How long after `wipe-one` ends its node may wait to be refused: an
/// election and a heartbeat, with room for a loaded machine.
const REFUSAL_WITHIN: Duration = Duration::from_secs(10);

pub const ALL: &[Fault] = &[
    Fault::KillOne,
    Fault::KillLeader,
    Fault::KillMinority,
    Fault::KillAll,
    Fault::PauseLeader,
    Fault::PartitionLeader,
    Fault::PartitionMinority,
    Fault::IsolateLeaderLink,
    Fault::Bridge,
    Fault::OneWayOut,
    Fault::OneWayIn,
    Fault::WipeOne,
    Fault::Membership,
    Fault::DiskFull,
    Fault::ClockSkew,
    Fault::SkewedSuccessor,
    Fault::KillAgent,
    Fault::SlowFsync,
    Fault::FsyncError,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillOne => "kill-one",
            Fault::KillLeader => "kill-leader",
            Fault::KillMinority => "kill-minority",
            Fault::KillAll => "kill-all",
            Fault::PauseLeader => "pause-leader",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionMinority => "partition-minority",
            Fault::IsolateLeaderLink => "isolate-leader-link",
            Fault::Bridge => "bridge",
            Fault::OneWayOut => "one-way-out",
            Fault::OneWayIn => "one-way-in",
            Fault::WipeOne => "wipe-one",
            Fault::Membership => "membership",
            Fault::DiskFull => "disk-full",
            Fault::ClockSkew => "clock-skew",
            Fault::SkewedSuccessor => "skewed-successor",
            Fault::KillAgent => "kill-agent",
            Fault::SlowFsync => "slow-fsync",
            Fault::FsyncError => "fsync-error",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        ALL.iter().copied().find(|f| f.name() == s)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault: starts `at` after the workload began, lasts `hold`.
#[derive(Clone, Debug)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
    pub hold: Duration,
    /// Picks the random targets (a node, a minority) when it starts.
    pub pick: u64,
}

/// The seed's plan: `faults` to choose from, cycles of fault, hold (3-6 s)
/// and quiet (2-4 s), after 2 s of warm-up, within `duration`.
pub fn plan(seed: u64, faults: &[Fault], duration: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::from_secs(2);
    let mut steps = Vec::new();
    loop {
        let fault = faults[rng.gen_range(0..faults.len())];
        // A pause must outlast the election timeout (0.75-1.5 s) by far.
        let hold = Duration::from_millis(rng.gen_range(3_000..6_000));
        if at + hold > duration {
            break;
        }
        steps.push(Step {
            at,
            fault,
            hold,
            pick: rng.gen(),
        });
        at += hold + Duration::from_millis(rng.gen_range(2_000..4_000));
    }
    steps
}

/// What undoes a started fault.
pub enum Undo {
    Restart(Vec<u64>),
    Cont(u64),
    Heal,
    /// Check that the wiped node was refused, then replace it.
    Replace(u64),
    /// Restart the killed member, then remove one of `older`.
    Shrink {
        killed: Option<u64>,
        older: Vec<u64>,
        pick: u64,
    },
    /// Give the disk its room back, restart the node.
    Unfill(u64),
    /// Set the node's clock true again.
    Unskew(u64),
    /// Restart the killed leader, then set the skewed clocks true.
    RestartUnskew {
        killed: u64,
        skewed: Vec<u64>,
    },
    /// Start the agent again; its new session must claim the cluster.
    ReviveAgent,
    /// Clear the node's disk faults; it must still run.
    Unslow(u64),
    /// The node must have exited saying why (its log past `log_from`);
    /// restart it on its data dir.
    AfterFsyncError {
        id: u64,
        log_from: usize,
    },
    Nothing,
}

/// Starts `step`'s fault; returns what it did, in words, and its undo.
pub async fn start(
    nodes: &mut Nodes,
    dp: Option<&mut DataPlane>,
    step: &Step,
) -> Result<(String, Undo), Error> {
    let mut rng = StdRng::seed_from_u64(step.pick);
    let ids = nodes.ids();
    let leader = nodes.leader().await;
    let leader_or_any = leader.unwrap_or_else(|| ids[rng.gen_range(0..ids.len())]);
    let minority = |rng: &mut StdRng| {
        let mut v = ids.clone();
        for i in (1..v.len()).rev() {
            v.swap(i, rng.gen_range(0..=i));
        }
        v.truncate((ids.len() - 1) / 2);
        v
    };
    let lead = |id: u64| if Some(id) == leader { " (leader)" } else { "" };
    Ok(match step.fault {
        Fault::KillOne => {
            let id = ids[rng.gen_range(0..ids.len())];
            nodes.kill(id);
            (
                format!("SIGKILL node {id}{}", lead(id)),
                Undo::Restart(vec![id]),
            )
        }
        Fault::KillLeader => {
            nodes.kill(leader_or_any);
            (
                format!("SIGKILL node {leader_or_any}{}", lead(leader_or_any)),
                Undo::Restart(vec![leader_or_any]),
            )
        }
        Fault::KillMinority => {
            let m = minority(&mut rng);
            for id in &m {
                nodes.kill(*id);
            }
            (format!("SIGKILL nodes {m:?}"), Undo::Restart(m))
        }
        Fault::KillAll => {
            for id in &ids {
                nodes.kill(*id);
            }
            ("SIGKILL every node".to_string(), Undo::Restart(ids.clone()))
        }
        Fault::PauseLeader => {
            nodes.pause(leader_or_any, true);
            (
                format!("SIGSTOP node {leader_or_any}{}", lead(leader_or_any)),
                Undo::Cont(leader_or_any),
            )
        }
        Fault::PartitionLeader => {
            for id in ids.iter().filter(|i| **i != leader_or_any) {
                nodes.net.cut(leader_or_any, *id)?;
            }
            (
                format!(
                    "cut node {leader_or_any}{} from its peers",
                    lead(leader_or_any)
                ),
                Undo::Heal,
            )
        }
        Fault::PartitionMinority => {
            let m = minority(&mut rng);
            for a in &m {
                for b in ids.iter().filter(|i| !m.contains(i)) {
                    nodes.net.cut(*a, *b)?;
                }
            }
            (format!("cut nodes {m:?} from the rest"), Undo::Heal)
        }
        Fault::IsolateLeaderLink => {
            nodes.net.link(leader_or_any, false)?;
            (
                format!("link of node {leader_or_any}{} down", lead(leader_or_any)),
                Undo::Heal,
            )
        }
        Fault::Bridge => {
            // The leader is the bridge when there is one: the hard case.
            let mut rest: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| *i != leader_or_any)
                .collect();
            for i in (1..rest.len()).rev() {
                rest.swap(i, rng.gen_range(0..=i));
            }
            let (a, b) = rest.split_at(rest.len() / 2);
            for x in a {
                for y in b {
                    nodes.net.cut(*x, *y)?;
                }
            }
            (
                format!(
                    "cut {a:?} from {b:?}; node {leader_or_any}{} sees both",
                    lead(leader_or_any)
                ),
                Undo::Heal,
            )
        }
        Fault::WipeOne => {
            let id = ids[rng.gen_range(0..ids.len())];
            let raft_id = nodes.raft_id(id);
            nodes.wipe(id)?;
            (
                format!(
                    "node {id}{} (id {raft_id}) killed, its data dir deleted, started again",
                    lead(id)
                ),
                Undo::Replace(id),
            )
        }
        Fault::Membership => {
            let Some(&slot) = nodes.spare().first() else {
                return Ok(("no spare slot: nothing added".into(), Undo::Nothing));
            };
            let older = ids.clone();
            // Kill one of the older members while the new one catches up
            // and is promoted (3 of 4 voters still make a quorum).
            let killed = older[rng.gen_range(0..older.len())];
            nodes.kill(killed);
            let raft_id = nodes.add(slot)?;
            (
                format!(
                    "node {slot} joins as id {raft_id}; SIGKILL node {killed}{}",
                    lead(killed)
                ),
                Undo::Shrink {
                    killed: Some(killed),
                    older,
                    pick: rng.gen(),
                },
            )
        }
        Fault::DiskFull => {
            let id = ids[rng.gen_range(0..ids.len())];
            let n = nodes.fill_disk(id)?;
            (
                format!(
                    "filled the data dir's filesystem of node {id}{} ({} MiB)",
                    lead(id),
                    n >> 20
                ),
                Undo::Unfill(id),
            )
        }
        Fault::ClockSkew => {
            let id = if rng.gen_bool(0.5) {
                leader_or_any
            } else {
                ids[rng.gen_range(0..ids.len())]
            };
            let secs = rng.gen_range(30..=600i64) * if rng.gen_bool(0.5) { 1 } else { -1 };
            nodes.skew(id, secs)?;
            (
                format!("node {id}{}'s wall clock stepped {secs:+} s", lead(id)),
                Undo::Unskew(id),
            )
        }
        Fault::SkewedSuccessor => {
            let secs = rng.gen_range(60..=600i64) * if rng.gen_bool(0.5) { 1 } else { -1 };
            let skewed: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|i| *i != leader_or_any)
                .collect();
            for id in &skewed {
                nodes.skew(*id, secs)?;
            }
            // The clocks are re-read every second: let the step land first.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            nodes.kill(leader_or_any);
            (
                format!(
                    "wall clocks of nodes {skewed:?} stepped {secs:+} s; SIGKILL node {leader_or_any}{}",
                    lead(leader_or_any)
                ),
                Undo::RestartUnskew {
                    killed: leader_or_any,
                    skewed,
                },
            )
        }
        Fault::SlowFsync | Fault::FsyncError => {
            let id = if rng.gen_bool(0.5) {
                leader_or_any
            } else {
                ids[rng.gen_range(0..ids.len())]
            };
            let ms = rng.gen_range(100..=800u64);
            let log_from = nodes.log_text(id).len();
            let (body, what, undo) = if step.fault == Fault::SlowFsync {
                (
                    format!(r#"{{"flush_delay_ms": {ms}}}"#),
                    format!("node {id}{}'s log flushes delayed {ms} ms", lead(id)),
                    Undo::Unslow(id),
                )
            } else {
                (
                    r#"{"fail_flush": true}"#.to_string(),
                    format!("node {id}{}'s log flushes fail", lead(id)),
                    Undo::AfterFsyncError { id, log_from },
                )
            };
            match nodes.set_disk_faults(id, &body).await {
                Ok(()) => (what, undo),
                // Not the system's fault: said, and nothing to undo.
                Err(e) => (format!("not injected: {e}"), Undo::Nothing),
            }
        }
        Fault::KillAgent => match dp {
            Some(d) => {
                d.kill_agent(nodes);
                ("SIGKILL the agent".to_string(), Undo::ReviveAgent)
            }
            None => ("no agent in this run".to_string(), Undo::Nothing),
        },
        Fault::OneWayOut | Fault::OneWayIn => {
            // Half the time the leader: the case where a one-way cut hurts.
            let id = if rng.gen_bool(0.5) {
                leader_or_any
            } else {
                ids[rng.gen_range(0..ids.len())]
            };
            let (dir, words) = if step.fault == Fault::OneWayOut {
                (Dir::Out, "drops what it sends to")
            } else {
                (Dir::In, "drops what it gets from")
            };
            for peer in ids.iter().filter(|i| **i != id) {
                nodes.net.cut_one_way(id, *peer, dir)?;
            }
            (
                format!("node {id}{} {words} its peers", lead(id)),
                Undo::Heal,
            )
        }
    })
}

pub async fn undo(nodes: &mut Nodes, dp: Option<&mut DataPlane>, undo: Undo) -> Result<(), Error> {
    match undo {
        Undo::Unslow(id) => {
            if !nodes.alive(id) {
                nodes.notes.push(format!(
                    "slow-fsync: node {id} exited while its flushes were slow"
                ));
                nodes.spawn(id)?;
            } else if let Err(e) = nodes.set_disk_faults(id, "{}").await {
                nodes.notes.push(format!("slow-fsync: {e}"));
            }
        }
        Undo::AfterFsyncError { id, log_from } => {
            let alive = nodes.alive(id);
            println!(
                "   node {id} {} with its flushes failing",
                if alive { "still runs" } else { "exited" }
            );
            let log = nodes.log_text(id);
            let since = log.get(log_from..).unwrap_or("");
            // The clients write all through the fault, so every node
            // flushes within milliseconds: one still running went on
            // over a failed fsync.
            if alive {
                nodes.notes.push(format!(
                    "fsync-error: node {id} still ran after its flushes failed for the whole fault"
                ));
            } else if !since.contains("raft stopped") {
                nodes.notes.push(format!(
                    "fsync-error: node {id} exited without saying a failed flush was the cause"
                ));
            }
            // As an operator would once the disk is replaced: restart it
            // on its data dir (the fault lives in the process, so it goes).
            nodes.kill(id);
            nodes.spawn(id)?;
        }
        Undo::ReviveAgent => {
            if let Some(d) = dp {
                match d.revive_agent(nodes).await {
                    Ok(t) => println!(
                        "   the agent's new session holds its cluster after {:.1}s",
                        t.as_secs_f64()
                    ),
                    Err(e) => nodes.notes.push(format!("kill-agent: {e}")),
                }
            }
        }
        Undo::Restart(ids) => {
            for id in ids {
                nodes.spawn(id)?;
            }
        }
        Undo::Cont(id) => nodes.pause(id, false),
        Undo::Heal => nodes.net.heal()?,
        Undo::Replace(id) => {
            let raft_id = nodes.raft_id(id);
            // The wiped node must have been kept out (it says so in its log)
            // and must not have crashed anyone (`panics`, after the scenario).
            // A peer says so at its first message to it, which can come
            // after the fault if the wiped node led and an election had to
            // come first (seed 2006 of the first data-plane soak).
            let refused =
                |nodes: &Nodes| nodes.log_text(id).contains("this node's data dir is new");
            let until = tokio::time::Instant::now() + REFUSAL_WITHIN;
            while !refused(nodes) && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !refused(nodes) {
                nodes.notes.push(format!(
                    "wipe-one: node {id} (id {raft_id}) came back with an empty data dir and no \
                     peer refused it"
                ));
            }
            remove_retrying(nodes, id).await;
            nodes.add(id)?;
        }
        Undo::Shrink {
            killed,
            older,
            pick,
        } => {
            if let Some(k) = killed {
                nodes.spawn(k)?;
            }
            let mut rng = StdRng::seed_from_u64(pick);
            let slot = older[rng.gen_range(0..older.len())];
            remove_retrying(nodes, slot).await;
        }
        Undo::Unfill(id) => {
            let alive = nodes.alive(id);
            println!(
                "   node {id} {} with its disk full",
                if alive { "still runs" } else { "exited" }
            );
            // A node that exited must have said why (the disk), not died
            // of a panic or silently.
            let log = nodes.log_text(id);
            if !alive && !log.contains("raft stopped") {
                nodes.notes.push(format!(
                    "disk-full: node {id} exited without saying the disk was the cause"
                ));
            }
            nodes.free_disk(id)?;
            // As an operator would: restart it once, on the same data dir
            // (a node that exited must start clean from what is on disk).
            nodes.kill(id);
            nodes.spawn(id)?;
        }
        Undo::Unskew(id) => {
            // A step of the wall clock is no reason to stop: a node that
            // exited under it (a panic on time going back) is a finding.
            if !nodes.alive(id) {
                nodes.notes.push(format!(
                    "clock-skew: node {id} exited while its wall clock was skewed"
                ));
            }
            nodes.skew(id, 0)?;
        }
        Undo::RestartUnskew { killed, skewed } => {
            nodes.spawn(killed)?;
            for id in skewed {
                if !nodes.alive(id) {
                    nodes.notes.push(format!(
                        "skewed-successor: node {id} exited while its wall clock was skewed"
                    ));
                }
                nodes.skew(id, 0)?;
            }
        }
        Undo::Nothing => {}
    }
    Ok(())
}

/// `meridian cluster remove-node`, retried for up to 20 s as an operator
/// would while the cluster elects a leader; a failure to remove is a
/// problem of the scenario (an operator could not do it).
async fn remove_retrying(nodes: &mut Nodes, slot: u64) {
    let raft_id = nodes.raft_id(slot);
    let start = std::time::Instant::now();
    loop {
        match tokio::task::block_in_place(|| nodes.remove(slot)) {
            Ok(said) => {
                println!("   remove-node {raft_id} (node {slot}): {said}");
                return;
            }
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                println!("   remove-node {raft_id} (node {slot}): {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                nodes
                    .notes
                    .push(format!("removing node {slot} (id {raft_id}): {e}"));
                return;
            }
        }
    }
}
