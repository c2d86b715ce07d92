//! Incarnations: which life of a data dir a node speaks from.
//!
//! A data dir gets a random incarnation id when it is created; every peer
//! message carries the sender's, and the one the sender last knew for the
//! receiver, and every reply the responder's. A node that lost its data dir
//! and came back under the same node id has a new incarnation, and its
//! peers refuse to talk Raft with it: its empty log and forgotten vote are
//! not the ones the cluster counted on. Talking anyway would make the
//! leader see a follower's log go backwards (openraft asserts it never
//! does) and would let the wiped node grant votes for entries it no longer
//! holds, which can elect a leader without a committed entry.
//!
//! What each node knew of its peers is kept in its own data dir, so a
//! restart does not forget it; a member removed from the cluster is
//! forgotten (`retain`). The way back for a wiped node is the operator's:
//! remove the member, and start the node with a new id (ids are never
//! reused).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;

const OWN_FILE: &str = "incarnation";
const PEERS_FILE: &str = "peer-incarnations.json";

#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable incarnation file: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// A peer that came back with another data dir than the one this node knew.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {peer} came back with a new data dir (incarnation {found:016x}, this cluster knew \
     {known:016x}): its log and vote are gone, so it may not take part in Raft; remove the \
     member (`meridian cluster remove-node {peer}`) and start the node again with a new \
     --node-id and an empty data dir"
)]
pub struct Mismatch {
    pub peer: u64,
    pub known: u64,
    pub found: u64,
}

#[derive(Clone)]
pub struct Incarnations {
    inner: Arc<Inner>,
}

struct Inner {
    own: u64,
    path: Option<PathBuf>,
    peers: Mutex<Known>,
    refused: AtomicU64,
}

#[derive(Default)]
struct Known {
    peers: BTreeMap<u64, u64>,
    /// (peer, incarnation) pairs already logged at ERROR: a wiped node is
    /// refused on every heartbeat, and one line names the fix.
    reported: HashSet<(u64, u64)>,
}

impl Incarnations {
    /// Reads the data dir's incarnation, making one if the dir has none (a
    /// new data dir), and what this node knew of its peers.
    pub fn open(dir: &Path) -> Result<Incarnations, IncarnationError> {
        let own_path = dir.join(OWN_FILE);
        let own = match std::fs::read_to_string(&own_path) {
            Ok(s) => u64::from_str_radix(s.trim(), 16)
                .ok()
                .filter(|v| *v != 0)
                .ok_or_else(|| IncarnationError::Corrupt {
                    path: own_path.clone(),
                    why: format!("{:?} is not a non-zero hex number", s.trim()),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let v = rand::thread_rng().gen_range(1..=u64::MAX);
                write_durably(&own_path, format!("{v:016x}\n").as_bytes())?;
                v
            }
            Err(source) => {
                return Err(IncarnationError::Io {
                    what: "reading",
                    path: own_path,
                    source,
                })
            }
        };
        let peers_path = dir.join(PEERS_FILE);
        let peers = match std::fs::read(&peers_path) {
            Ok(b) => serde_json::from_slice::<BTreeMap<u64, String>>(&b)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    m.into_iter()
                        .map(|(k, v)| {
                            u64::from_str_radix(&v, 16)
                                .map(|v| (k, v))
                                .map_err(|e| format!("node {k}: {e}"))
                        })
                        .collect()
                })
                .map_err(|why| IncarnationError::Corrupt {
                    path: peers_path.clone(),
                    why,
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(IncarnationError::Io {
                    what: "reading",
                    path: peers_path,
                    source,
                })
            }
        };
        Ok(Incarnations {
            inner: Arc::new(Inner {
                own,
                path: Some(peers_path),
                peers: Mutex::new(Known {
                    peers,
                    reported: HashSet::new(),
                }),
                refused: AtomicU64::new(0),
            }),
        })
    }

    /// Not persisted: for tests and tools that run no data dir.
    pub fn in_memory(own: u64) -> Incarnations {
        Incarnations {
            inner: Arc::new(Inner {
                own,
                path: None,
                peers: Mutex::new(Known::default()),
                refused: AtomicU64::new(0),
            }),
        }
    }

    pub fn own(&self) -> u64 {
        self.inner.own
    }

    /// The incarnation this node knows for `peer`; 0 if none yet.
    pub fn known(&self, peer: u64) -> u64 {
        self.lock().peers.get(&peer).copied().unwrap_or(0)
    }

    /// How many peer messages and replies were refused for a changed
    /// incarnation, since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Checks what `peer` says its incarnation is; the first one heard is
    /// recorded. 0 (a peer that does not send one) passes unrecorded.
    pub fn check(&self, peer: u64, found: u64) -> Result<(), Mismatch> {
        if found == 0 {
            return Ok(());
        }
        let mut k = self.lock();
        match k.peers.get(&peer).copied() {
            Some(known) if known == found => Ok(()),
            Some(known) => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                let m = Mismatch { peer, known, found };
                if k.reported.insert((peer, found)) {
                    tracing::error!(
                        peer,
                        known = %format!("{known:016x}"),
                        found = %format!("{found:016x}"),
                        "{m}"
                    );
                }
                Err(m)
            }
            None => {
                k.peers.insert(peer, found);
                let snapshot = k.peers.clone();
                drop(k);
                self.save(&snapshot);
                tracing::info!(peer, incarnation = %format!("{found:016x}"), "peer incarnation recorded");
                Ok(())
            }
        }
    }

    /// Counts (and logs once) a message refused because its sender knew an
    /// older life of this node's data dir.
    pub fn refused_as_new(&self, from: u64, known: u64) {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        // Peer 0 in `reported`: this node itself (ids start at 1).
        if self.lock().reported.insert((0, known)) {
            tracing::error!(
                from,
                own = %format!("{:016x}", self.inner.own),
                known = %format!("{known:016x}"),
                "this node's data dir is new, but the cluster knew this node id with another one: \
                 it takes no part in Raft; remove this node from the cluster \
                 (`meridian cluster remove-node ID`) and start it again with a new --node-id"
            );
        }
    }

    /// Forgets every peer not in `members`: a removed member that is added
    /// again starts over, with whatever data dir it has then.
    pub fn retain(&self, members: &BTreeSet<u64>) {
        let mut k = self.lock();
        let before = k.peers.len();
        k.peers.retain(|id, _| members.contains(id));
        k.reported
            .retain(|(id, _)| *id == 0 || members.contains(id));
        if k.peers.len() != before {
            let snapshot = k.peers.clone();
            drop(k);
            self.save(&snapshot);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, peers: &BTreeMap<u64, u64>) {
        let Some(path) = &self.inner.path else {
            return;
        };
        let m: BTreeMap<u64, String> = peers
            .iter()
            .map(|(k, v)| (*k, format!("{v:016x}")))
            .collect();
        let body = serde_json::to_vec_pretty(&m).expect("a map of strings");
        // Losing this file loses only the memory of peers (they are learnt
        // again), never data: a failure is logged, not fatal.
        if let Err(e) = write_durably(path, &body) {
            tracing::warn!(error = %e, "could not save peer incarnations");
        }
    }
}

fn write_durably(path: &Path, body: &[u8]) -> Result<(), IncarnationError> {
    let tmp = path.with_extension("tmp");
    let io = |what, source| IncarnationError::Io {
        what,
        path: tmp.clone(),
        source,
    };
    std::fs::write(&tmp, body).map_err(|e| io("writing", e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_data_dir_gets_a_new_incarnation_and_an_old_one_keeps_it() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = Incarnations::open(a.path()).unwrap().own();
        assert_eq!(Incarnations::open(a.path()).unwrap().own(), first);
        assert_ne!(Incarnations::open(b.path()).unwrap().own(), first);
    }

    #[test]
    fn a_changed_peer_is_refused_until_removed_and_the_memory_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let inc = Incarnations::open(dir.path()).unwrap();
        inc.check(2, 0xaa).unwrap();
        inc.check(2, 0xaa).unwrap();
        inc.check(2, 0).unwrap();
        let err = inc.check(2, 0xbb).unwrap_err();
        assert_eq!(err.known, 0xaa);
        assert!(err.to_string().contains("remove the member"), "{err}");
        assert_eq!(inc.refused(), 1);

        let again = Incarnations::open(dir.path()).unwrap();
        assert!(again.check(2, 0xbb).is_err(), "forgotten across a restart");

        again.retain(&BTreeSet::from([1, 3]));
        again.check(2, 0xbb).unwrap();
        assert_eq!(Incarnations::open(dir.path()).unwrap().known(2), 0xbb);
    }
}
