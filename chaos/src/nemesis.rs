//! The nemesis: faults on real processes and real links, chosen and timed
//! from a seed. The plan (which fault, when, for how long) is a function of
//! the seed alone and is printed before the run; the targets that depend on
//! the cluster (who leads at that moment) are resolved when the fault
//! starts and printed then.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
}

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
    Nothing,
}

/// Starts `step`'s fault; returns what it did, in words, and its undo.
pub async fn start(nodes: &mut Nodes, step: &Step) -> Result<(String, Undo), Error> {
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
    })
}

pub fn undo(nodes: &mut Nodes, undo: Undo) -> Result<(), Error> {
    match undo {
        Undo::Restart(ids) => {
            for id in ids {
                nodes.spawn(id)?;
            }
        }
        Undo::Cont(id) => nodes.pause(id, false),
        Undo::Heal => nodes.net.heal()?,
        Undo::Nothing => {}
    }
    Ok(())
}
